"""Expected area per class over a region, with an uncertainty range.

Each tile contributes its area inside the region (km², on the ellipsoid) times its class
probability: ``E[A_c] = Σ_i a_i p_ic``. Treating tiles as independent Bernoulli draws with those
probabilities gives ``Var[A_c] = Σ_i a_i² p_ic (1 − p_ic)``; the range is the 95 % interval
``E ± 1.96 σ`` clipped to ``[0, total]``. It measures how unsure the model is, not how
well-calibrated it is: that is what the held-out evaluation reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry

from backend.imagery.regions import geodesic_area_km2

Z_95 = 1.959964


@dataclass(frozen=True)
class ClassArea:
    """Area of one class over a region."""

    class_id: int
    name: str
    expected_km2: float
    low_km2: float
    high_km2: float
    share: float  # expected area / total mapped area (map area / total for map areas)
    tiles_dominant: int  # tiles (or cells) where this class has the highest probability
    map_km2: float | None = None  # area where the map shows this class (map areas only)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def tile_areas_km2(
    footprints: Sequence[BaseGeometry], region: BaseGeometry | None = None
) -> NDArray[np.float64]:
    """Area (km²) of each lon/lat tile footprint, clipped to the region when given."""
    out = np.empty(len(footprints), dtype=np.float64)
    for i, fp in enumerate(footprints):
        geom = fp.intersection(region) if region is not None else fp
        out[i] = geodesic_area_km2(geom) if not geom.is_empty else 0.0
    return out


def class_areas(
    probabilities: NDArray[np.floating],
    areas_km2: NDArray[np.floating],
    class_names: Sequence[str],
) -> list[ClassArea]:
    """Expected km² and a 95 % range per class.

    Args:
        probabilities: ``(n_tiles, n_classes)``, rows summing to 1 (for one-vs-rest user classes
            pass ``[1 − p, p]``).
        areas_km2: ``(n_tiles,)`` area of each tile inside the region.
        class_names: one name per column.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    a = np.asarray(areas_km2, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != a.shape[0] or p.shape[1] != len(class_names):
        raise ValueError(f"probabilities {p.shape} do not match {a.shape} areas / classes")
    total = float(a.sum())
    expected = a @ p
    sigma = np.sqrt((a**2) @ (p * (1.0 - p)))
    dominant = (
        np.bincount(p.argmax(axis=1), minlength=p.shape[1]) if len(p) else np.zeros(p.shape[1])
    )
    return [
        ClassArea(
            class_id=c,
            name=str(class_names[c]),
            expected_km2=float(expected[c]),
            low_km2=float(max(0.0, expected[c] - Z_95 * sigma[c])),
            high_km2=float(min(total, expected[c] + Z_95 * sigma[c])),
            share=float(expected[c] / total) if total > 0 else 0.0,
            tiles_dominant=int(dominant[c]),
        )
        for c in range(p.shape[1])
    ]


@dataclass(frozen=True)
class MapAreas:
    """Areas of what a map shows: per class, plus the area shown as unlike the training data.

    Attributes:
        classes: One :class:`ClassArea` per class. ``map_km2`` is the area of the cells whose
            dominant class it is (exactly what the map paints), ``share`` that area over the
            whole mapped area; ``expected_km2`` and its 95 % range are the probability-weighted
            area over the cells that are not unlike the training data.
        unlike_km2: Area of the cells beyond the out-of-distribution limit.
        total_km2: Whole mapped area (classes + unlike).
    """

    classes: list[ClassArea]
    unlike_km2: float
    total_km2: float

    @property
    def unlike_share(self) -> float:
        return self.unlike_km2 / self.total_km2 if self.total_km2 > 0 else 0.0


def map_areas(
    probabilities: NDArray[np.floating],
    areas_km2: NDArray[np.floating],
    class_names: Sequence[str],
    unlike: NDArray[np.bool_] | None = None,
) -> MapAreas:
    """Areas of a map's cells (tiles or sub-tile cells), as the map shows them.

    Args:
        probabilities: ``(n_cells, n_classes)``; NaN rows (no data) are left out.
        areas_km2: ``(n_cells,)`` area of each cell inside the region.
        class_names: one name per column.
        unlike: ``(n_cells,)`` cells shown as unlike the training data (no class).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    a = np.asarray(areas_km2, dtype=np.float64)
    ok = np.isfinite(p).all(axis=1)
    p, a = p[ok], a[ok]
    off = np.zeros(len(p), dtype=bool) if unlike is None else np.asarray(unlike, dtype=bool)[ok]
    total = float(a.sum())
    inside = ~off
    expected = class_areas(p[inside], a[inside], class_names)
    top = p.argmax(axis=1) if len(p) else np.zeros(0, dtype=np.int64)
    out: list[ClassArea] = []
    for c, e in enumerate(expected):
        shown = inside & (top == c)
        km2 = float(a[shown].sum())
        out.append(
            ClassArea(
                class_id=c,
                name=e.name,
                expected_km2=e.expected_km2,
                low_km2=e.low_km2,
                high_km2=e.high_km2,
                share=km2 / total if total > 0 else 0.0,
                tiles_dominant=int(shown.sum()),
                map_km2=km2,
            )
        )
    return MapAreas(out, float(a[off].sum()), total)
