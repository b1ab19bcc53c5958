"""Held-out evaluation of land-cover maps on the reference polygons: accuracy a user can read.

For every scene with reference polygons, the map is predicted over the whole scene (exactly as
``softmap landcover`` draws it: sub-tile cells when the head has them, the water rule, cells
beyond the out-of-distribution limit shown as unlike the training data), and compared per 10 m
pixel with the combined labels of the ``eval`` split (:mod:`backend.landcover.reference`: the
evaluation polygons, with the water rule over their open-water pixels; cloud and nodata left
out). A pixel is right when the class the map paints over it is its reference class; a pixel
shown as unlike the training data is counted in its own column, and is never right.

Reported: overall accuracy (area-weighted: every pixel counts the same), per-class precision and
recall, the confusion matrix (rows = reference, columns = map), and the share of the reference
area shown as unlike the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import tile_from_id
from backend.landcover.heads import LandCoverHead
from backend.landcover.labels import DW_CLASSES, N_CLASSES, NO_LABEL
from backend.landcover.maps import UNLIKE_VALUE, LandCoverResult, predict_landcover
from backend.landcover.reference import ReferenceLabeler, has_reference, reference_polygons
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine, ProgressCallback
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

#: Pixel side of a hectare at 10 m (pixels are reported as hectares).
_PIXEL_HA = 0.01


@dataclass(frozen=True)
class LandCoverEvaluation:
    """Confusion of a map against held-out reference pixels (rows: reference, cols: map).

    ``confusion`` is ``(9, 10)``: the last column counts pixels shown as unlike the training
    data.
    """

    head_id: str
    model_id: str
    scenes: tuple[str, ...]
    confusion: NDArray[np.int64]
    polygons: int
    per_scene: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        n = self.pixels
        return float(np.trace(self.confusion[:, :N_CLASSES]) / n) if n else None

    @property
    def unlike_share(self) -> float | None:
        n = self.pixels
        return float(self.confusion[:, N_CLASSES].sum() / n) if n else None

    def precision(self) -> list[float | None]:
        shown = self.confusion[:, :N_CLASSES].sum(axis=0)
        return [
            float(self.confusion[c, c] / shown[c]) if shown[c] else None for c in range(N_CLASSES)
        ]

    def recall(self) -> list[float | None]:
        ref = self.confusion.sum(axis=1)
        return [float(self.confusion[c, c] / ref[c]) if ref[c] else None for c in range(N_CLASSES)]

    def classes_present(self) -> list[int]:
        """Classes that occur in the reference or on the map."""
        used = (self.confusion.sum(axis=1) > 0) | (self.confusion[:, :N_CLASSES].sum(axis=0) > 0)
        return [c for c in range(N_CLASSES) if used[c]]

    def to_json(self) -> dict[str, Any]:
        prec, rec = self.precision(), self.recall()
        present = self.classes_present()
        return {
            "head": self.head_id,
            "model": self.model_id,
            "scenes": list(self.scenes),
            "polygons": self.polygons,
            "pixels": self.pixels,
            "area_ha": round(self.pixels * _PIXEL_HA, 2),
            "overall_accuracy": _r(self.accuracy),
            "unlike_share": _r(self.unlike_share),
            "classes": [
                {
                    "class": DW_CLASSES[c],
                    "reference_ha": round(float(self.confusion[c].sum()) * _PIXEL_HA, 2),
                    "precision": _r(prec[c]),
                    "recall": _r(rec[c]),
                }
                for c in present
            ],
            "confusion": {
                "rows": [DW_CLASSES[c] for c in present],
                "columns": [DW_CLASSES[c] for c in present] + ["unlike"],
                "pixels": [
                    [int(self.confusion[r, c]) for c in present] + [int(self.confusion[r, -1])]
                    for r in present
                ],
            },
            "per_scene": self.per_scene,
        }


def _r(v: float | None) -> float | None:
    # Five digits, so a share rounded again to 0.1 % reads the same as the unrounded one.
    return None if v is None else round(v, 5)


def map_classes(result: LandCoverResult) -> tuple[NDArray[np.int16], int]:
    """The class the map paints per tile cell ``(n, g, g)`` (:data:`UNLIKE_VALUE` = unlike)."""
    if result.token_probabilities is not None:
        probs = result.token_probabilities  # (n, 9, g, g)
        top = probs.argmax(axis=1).astype(np.int16)
        if result.token_ood is not None:
            top[result.token_ood > 1.0] = UNLIKE_VALUE
        return top, int(probs.shape[-1])
    top = result.probabilities.argmax(axis=1).astype(np.int16)[:, None, None]
    if result.ood is not None:
        top[result.ood > 1.0] = UNLIKE_VALUE
    return top, 1


def confusion_of(result: LandCoverResult) -> tuple[NDArray[np.int64], int]:
    """Pixel confusion ``(9, 10)`` of a scene's map against its ``eval`` reference labels."""
    source = result.source
    polys = reference_polygons(source, "eval")
    conf = np.zeros((N_CLASSES, N_CLASSES + 1), dtype=np.int64)
    if not polys:
        return conf, 0
    shown, grid = map_classes(result)
    from shapely.geometry import box

    zone = [p.geometry for p in polys]
    with ReferenceLabeler(source, use_raster=False) as labeler:
        for i, tid in enumerate(result.tile_ids):
            win = tile_from_id(tid, source)[4]
            t = source.grid.affine
            x0, y0 = t * (win.col_off, win.row_off)
            x1, y1 = t * (win.col_off + win.width, win.row_off + win.height)
            frame = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if not any(g.intersects(frame) for g in zone):
                continue
            ref = labeler.labels(win, "eval")
            cell = win.height // grid
            painted = np.repeat(np.repeat(shown[i], cell, axis=0), cell, axis=1)
            ok = ref != NO_LABEL
            if ok.any():
                np.add.at(conf, (ref[ok].astype(np.int64), painted[ok].astype(np.int64)), 1)
    return conf, len(polys)


def evaluate_landcover(
    sources: Sequence[SceneSource],
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    head: LandCoverHead | str | None = None,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    tokens: bool = True,
    progress: ProgressCallback | None = None,
) -> LandCoverEvaluation:
    """Evaluate a model's land-cover map on the held-out reference polygons of ``sources``.

    Scenes without reference polygons are skipped; with none at all the result is empty.
    """
    total = np.zeros((N_CLASSES, N_CLASSES + 1), dtype=np.int64)
    n_polys = 0
    used: list[str] = []
    per_scene: dict[str, dict[str, Any]] = {}
    head_id = ""
    for source in sources:
        if not has_reference(source):
            continue
        result = predict_landcover(
            Region(source.footprint_lonlat),
            source,
            model,
            cache,
            engine=engine,
            settings=settings,
            head=head,
            progress=progress,
            tokens=tokens,
        )
        head_id = str(result.head["head_id"])
        conf, n = confusion_of(result)
        total += conf
        n_polys += n
        used.append(source.id)
        px = int(conf.sum())
        per_scene[source.id] = {
            "polygons": n,
            "pixels": px,
            "overall_accuracy": _r(float(np.trace(conf[:, :N_CLASSES]) / px) if px else None),
            "unlike_share": _r(float(conf[:, N_CLASSES].sum() / px) if px else None),
            "map_unlike_share": _r(result.unlike_share),
        }
    return LandCoverEvaluation(
        head_id, model.meta.id, tuple(used), total, n_polys, per_scene=per_scene
    )
