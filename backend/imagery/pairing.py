"""Sentinel-1 / Sentinel-2 pairs: sources of the other sensor over the same ground, close in time.

For a Sentinel-2 source, its *partners* are the Sentinel-1 GRD sources whose footprint covers at
least :data:`MIN_OVERLAP` of the smaller of the two footprints and whose acquisition date lies
within ``window_days`` of it (and the reverse for a Sentinel-1 source). Sentinel-1 revisits a
place every 6 days with two satellites and every 12 days with one, so the default window of
:data:`DEFAULT_WINDOW_DAYS` days finds a radar pass for nearly any optical scene; land changes
little in that time outside harvest, floods and snowfall.

Pairing uses only geometry and dates, never names: a BigEarthNet-S1 patch names its S2 partner,
but a user's own GeoTIFFs do not, so names would prove nothing. Areas are measured in the
Sentinel-2 source's projected CRS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from backend.errors import SoftMapError
from backend.imagery.sources import SceneSource, from_lonlat

#: Days between the two acquisitions at most (the S1 revisit with one satellite).
DEFAULT_WINDOW_DAYS = 12
#: Share of the smaller footprint the other must cover to count as a pair.
MIN_OVERLAP = 0.25


@dataclass(frozen=True)
class SourcePair:
    """A Sentinel-2 source and a Sentinel-1 source over the same ground.

    Attributes:
        s2: The optical source.
        s1: The radar source.
        overlap_km2: Area both footprints cover.
        s2_covered: Share of the S2 footprint the S1 source covers (0…1).
        s1_covered: Share of the S1 footprint the S2 source covers (0…1).
        days_apart: Days between the two acquisition dates (0 = same day).
    """

    s2: SceneSource
    s1: SceneSource
    overlap_km2: float
    s2_covered: float
    s1_covered: float
    days_apart: int

    def partner_of(self, source_id: str) -> SceneSource:
        """The other source of the pair."""
        return self.s1 if source_id == self.s2.id else self.s2

    def apart(self) -> str:
        """``"same day"``, ``"1 day apart"``, ``"5 days apart"``."""
        if self.days_apart == 0:
            return "same day"
        return f"{self.days_apart} day{'s' if self.days_apart > 1 else ''} apart"

    def to_json(self) -> dict[str, Any]:
        return {
            "s2": self.s2.id,
            "s1": self.s1.id,
            "s2_date": self.s2.date,
            "s1_date": self.s1.date,
            "days_apart": self.days_apart,
            "overlap_km2": round(self.overlap_km2, 3),
            "s2_covered": round(self.s2_covered, 3),
            "s1_covered": round(self.s1_covered, 3),
        }


def is_s1(source: SceneSource) -> bool:
    """Whether a source is Sentinel-1 GRD (VV, VH)."""
    return source.product_level == "GRD"


def acquisition_date(source: SceneSource) -> date | None:
    """The source's date, or None when it is unknown or not ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(source.date[:10])
    except ValueError:
        return None


def pair_of(
    a: SceneSource,
    b: SceneSource,
    *,
    window_days: int = DEFAULT_WINDOW_DAYS,
    min_overlap: float = MIN_OVERLAP,
) -> SourcePair | None:
    """The pair formed by one S2 and one S1 source, or None when they do not pair.

    They pair when one is Sentinel-1 and the other Sentinel-2, both dates are known and at most
    ``window_days`` apart, and the overlap covers ``min_overlap`` of the smaller footprint.
    """
    if is_s1(a) == is_s1(b):
        return None
    s2, s1 = (b, a) if is_s1(a) else (a, b)
    d2, d1 = acquisition_date(s2), acquisition_date(s1)
    if d2 is None or d1 is None:
        return None
    days = abs((d2 - d1).days)
    if days > window_days:
        return None
    if not s2.footprint_lonlat.intersects(s1.footprint_lonlat):
        return None
    f2 = s2.footprint_native
    f1 = from_lonlat(s1.footprint_lonlat, s2.crs)
    inter = f2.intersection(f1).area
    if inter <= 0:
        return None
    s2_covered, s1_covered = inter / f2.area, inter / f1.area
    if max(s2_covered, s1_covered) < min_overlap:
        return None
    return SourcePair(s2, s1, inter / 1e6, min(s2_covered, 1.0), min(s1_covered, 1.0), days)


def find_partners(
    source: SceneSource,
    candidates: Iterable[SceneSource],
    *,
    window_days: int = DEFAULT_WINDOW_DAYS,
    min_overlap: float = MIN_OVERLAP,
) -> list[SourcePair]:
    """The pairs ``source`` forms with ``candidates``: closest in time first, then most overlap.

    Raises:
        SoftMapError: ``window_days`` is negative or ``min_overlap`` is outside (0, 1].
    """
    _check(window_days, min_overlap)
    pairs = [
        p
        for c in candidates
        if c.id != source.id
        and (p := pair_of(source, c, window_days=window_days, min_overlap=min_overlap))
    ]
    return sorted(pairs, key=lambda p: (p.days_apart, -p.overlap_km2, p.partner_of(source.id).id))


def all_pairs(
    sources: Iterable[SceneSource],
    *,
    window_days: int = DEFAULT_WINDOW_DAYS,
    min_overlap: float = MIN_OVERLAP,
) -> list[SourcePair]:
    """Every S2–S1 pair among ``sources``, by S2 id then closeness in time."""
    _check(window_days, min_overlap)
    items = list(sources)
    s2s = [s for s in items if not is_s1(s)]
    s1s = [s for s in items if is_s1(s)]
    out: list[SourcePair] = []
    for s2 in sorted(s2s, key=lambda s: s.id):
        out += find_partners(s2, s1s, window_days=window_days, min_overlap=min_overlap)
    return out


def _check(window_days: int, min_overlap: float) -> None:
    if window_days < 0:
        raise SoftMapError(
            f"The date window must be 0 days or more, not {window_days}.", title="Invalid option"
        )
    if not 0 < min_overlap <= 1:
        raise SoftMapError(
            f"The minimum overlap is a share of the footprint in (0, 1], not {min_overlap}.",
            title="Invalid option",
        )
