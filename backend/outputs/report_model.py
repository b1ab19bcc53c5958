"""What a land-cover report holds: the typed results that :mod:`backend.outputs.report` builds
and :mod:`backend.outputs.report_html` renders (kept apart so neither imports the other's module).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource
from backend.landcover.areas import ClassArea
from backend.landcover.maps import LandCoverResult
from backend.models import ModelMeta


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserClassSummary:
    """A user class over the region: how well its classifier does and its expected area."""

    name: str
    positives: int
    negatives: int
    cv_balanced_accuracy: float | None
    cv_folds: int
    calibration: str
    area: ClassArea | None  # the class's expected area (None with ``error``)
    error: str | None = None  # why there is no classifier (e.g. too few labels)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "positives": self.positives,
            "negatives": self.negatives,
            "cv_balanced_accuracy": self.cv_balanced_accuracy,
            "cv_folds": self.cv_folds,
            "calibration": self.calibration,
            "area": self.area.to_json() if self.area is not None else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class MapImages:
    """The two map panels in the view's pixel space (the scene's CRS, north up).

    Attributes:
        imagery_png: true colour (None when the scene has no red, green and blue bands).
        landcover_png: dominant class over greyed imagery, opacity rising with confidence.
        width, height: image size in pixels.
        pixel_m: metres per pixel.
        outline: the region's rings in pixel coordinates.
    """

    imagery_png: bytes | None
    landcover_png: bytes
    width: int
    height: int
    pixel_m: float
    outline: tuple[tuple[tuple[float, float], ...], ...]


@dataclass(frozen=True)
class Report:
    """Everything on the page; :attr:`html` is the page itself."""

    title: str
    region: Region
    source: SceneSource
    model: ModelMeta
    landcover: LandCoverResult
    user_classes: tuple[UserClassSummary, ...]
    maps: MapImages
    generated_at: datetime
    seconds: float
    html: str = ""

    @property
    def ranked_areas(self) -> list[ClassArea]:
        """Class areas, largest expected area first."""
        return sorted(self.landcover.areas, key=lambda a: -a.expected_km2)

    def to_json(self) -> dict[str, Any]:
        lc = self.landcover
        return {
            "title": self.title,
            "source": self.source.id,
            "model": self.model.id,
            "head": lc.head["head_id"],
            "region": self.region.describe(),
            "region_km2": round(self.region.area_km2, 4),
            "mapped_km2": round(lc.region_km2, 4),
            "tiles": len(lc.tile_ids),
            "areas": [a.to_json() for a in self.ranked_areas],
            "user_classes": [u.to_json() for u in self.user_classes],
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "html_bytes": len(self.html.encode()),
        }
