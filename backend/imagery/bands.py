"""Sentinel band definitions: canonical names, order and native resolutions."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from backend.errors import BandMismatchError

#: Sentinel-2 L1C bands in product order (the order SoftCon's 13-band models expect).
S2_L1C_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip

#: Sentinel-2 L2A drops the cirrus band B10 (it carries no surface signal after correction).
S2_L2A_BANDS: tuple[str, ...] = tuple(b for b in S2_L1C_BANDS if b != "B10")

#: Sentinel-1 GRD polarisations, in the order SoftCon's 2-band models expect (backscatter in dB).
S1_GRD_BANDS: tuple[str, ...] = ("VV", "VH")

#: Native ground sampling distance of each Sentinel-2 band, in metres.
S2_RESOLUTION_M: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}  # fmt: skip

_ALIAS = re.compile(r"^B0?(\d{1,2}|8A)$", re.IGNORECASE)


def canonical_band(name: str) -> str:
    """Canonical Sentinel-2 band name: ``"B1"``, ``"b01"`` and ``"B01"`` all give ``"B01"``.

    Raises:
        BandMismatchError: if the name is not a Sentinel-2 or Sentinel-1 band.
    """
    text = name.strip().upper()
    if text in S1_GRD_BANDS:
        return text
    match = _ALIAS.match(text)
    if match:
        number = match.group(1).upper()
        canonical = "B8A" if number == "8A" else f"B{int(number):02d}"
        if canonical in S2_RESOLUTION_M:
            return canonical
    raise BandMismatchError(
        f"'{name}' is not a Sentinel-2 band (B01…B12, B8A) or a Sentinel-1 polarisation (VV, VH)."
    )


def canonical_bands(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical names for a list of bands (see :func:`canonical_band`)."""
    return tuple(canonical_band(n) for n in names)


def require_bands(
    available: Sequence[str], wanted: Sequence[str], *, fillable: Iterable[str] = ()
) -> tuple[str, ...]:
    """Check that every wanted band is available or may be filled; return the missing ones.

    Raises:
        BandMismatchError: naming the bands that are neither present nor fillable.
    """
    have = set(available)
    fill = set(fillable)
    missing = [b for b in wanted if b not in have]
    unfillable = [b for b in missing if b not in fill]
    if unfillable:
        raise BandMismatchError(
            f"The imagery lacks band(s) {', '.join(unfillable)} needed by the model "
            f"(it has {', '.join(available) or 'none'}; the model needs {', '.join(wanted)})."
        )
    return tuple(missing)
