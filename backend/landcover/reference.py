"""Reference labels of a scene: spectral rules, reference polygons and a land-use raster, combined.

Sources (each per 10 m pixel of the scene grid):

* the spectral rules of :mod:`backend.landcover.spectral` (water, snow and ice; cloud and nodata);
* reference polygons made by photo-interpretation (``assets/reference/<scene>.geojson``, built by
  ``scripts/build_reference_polygons.py``; each has a class, a method, a date and a split);
* the scene's own land-use raster, where it has one (the OSM raster of ``demo/brandenburg``).

**Precedence** (the first that applies wins):

1. nodata or cloud (the quality tests, per pixel) → unlabelled: nothing is known there;
2. the water rule → water: physics is unambiguous about open water (and beats, e.g., a
   "salt marsh" polygon over its tidal creeks, or a "field" polygon over a flooded furrow);
3. a reference polygon → its class: a person looked at the place;
4. the snow rule → snow and ice: after the polygons, because white surf, sand and roofs pass it;
5. the land-use raster → its class mapped to Dynamic World, and the photo-interpreted cluster
   raster (``assets/reference/<scene>_clusters.tif``: every clear-land pixel of a scene given
   the class of its spectral cluster, trees or crops, where a person could name the cluster)
   → its class (``train`` only: neither is independent enough to evaluate on; they give the
   head the forest edges, hedgerows and mixed cells that interior polygons leave out);
6. otherwise → unlabelled.

**Split**: the scene grid is cut into :data:`BLOCK_PX` (2.56 km) blocks; :func:`block_split`
assigns a third of them to ``eval``. ``train`` labels exist only in ``train`` blocks, at least
:data:`BUFFER_M` from every evaluation polygon; ``eval`` labels exist only inside evaluation
polygons. A head trained on ``train`` never sees an evaluation pixel or its neighbourhood.

Per-window class fractions (:func:`reference_soft_labels`) pool the labelled pixels of each tile
or sub-tile cell as :func:`backend.landcover.labels.soft_labels` does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio.features
from numpy.typing import NDArray
from shapely.geometry import box, shape
from shapely.geometry.base import BaseGeometry

from backend.errors import NotFoundError
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SceneSource, from_lonlat
from backend.imagery.tiling import tile_from_id
from backend.landcover.labels import (
    DW_CLASSES,
    MIN_LABELLED_FRACTION,
    MULTI_HOT_THRESHOLD,
    NO_LABEL,
    LabelRaster,
    SoftLabels,
    _LabelReader,
    get_mapping,
    scene_label_raster,
    soft_labels,
)
from backend.landcover.spectral import pixel_rules, stack_reflectance
from backend.settings import ASSETS_DIR

Split = Literal["train", "eval", "all"]
#: Side of the split blocks in 10 m pixels (4 × 4 tiles of 64 px).
BLOCK_PX = 256
#: Training labels keep this distance from every evaluation polygon.
BUFFER_M = 100.0
#: Bands read to apply the rules.
READ_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B10", "B11")
WATER = DW_CLASSES.index("water")
SNOW = DW_CLASSES.index("snow_and_ice")


def block_split(block_row: int, block_col: int) -> Literal["train", "eval"]:
    """The split of a block: a third of the blocks, on a diagonal lattice, are ``eval``."""
    return "eval" if (block_row + 2 * block_col) % 3 == 0 else "train"


@dataclass(frozen=True)
class ReferencePolygon:
    """One photo-interpreted polygon (geometry in the scene CRS)."""

    class_index: int
    name: str
    method: str
    date: str
    split: Literal["train", "eval"]
    geometry: BaseGeometry

    @property
    def class_name(self) -> str:
        return DW_CLASSES[self.class_index]


def reference_path(source: SceneSource, folder: Path | None = None) -> Path:
    """Where a scene's reference polygons live (``assets/reference/<scene name>.geojson``)."""
    return (folder or ASSETS_DIR / "reference") / f"{source.id.split('/')[-1]}.geojson"


@lru_cache(maxsize=8)
def _load(path: str, crs: str) -> tuple[ReferencePolygon, ...]:
    raw = json.loads(Path(path).read_text())
    out = []
    for f in raw.get("features", []):
        p = f["properties"]
        out.append(
            ReferencePolygon(
                class_index=DW_CLASSES.index(p["class"]),
                name=str(p.get("name", "")),
                method=str(p.get("method", "")),
                date=str(p.get("date", "")),
                split="eval" if p.get("split") == "eval" else "train",
                geometry=from_lonlat(shape(f["geometry"]), crs),
            )
        )
    return tuple(out)


def reference_polygons(
    source: SceneSource, split: Split = "all", *, folder: Path | None = None
) -> tuple[ReferencePolygon, ...]:
    """The reference polygons of a scene (none when it has no file), optionally of one split."""
    path = reference_path(source, folder)
    if not path.is_file():
        return ()
    polys = _load(str(path), str(source.crs))
    return polys if split == "all" else tuple(p for p in polys if p.split == split)


def has_reference(source: SceneSource, folder: Path | None = None) -> bool:
    return reference_path(source, folder).is_file()


def _window_transform(source: SceneSource, window: PixelWindow) -> rasterio.Affine:
    return source.grid.affine * rasterio.Affine.translation(window.col_off, window.row_off)


def _burn(
    polys: Sequence[ReferencePolygon], source: SceneSource, window: PixelWindow, fill: int
) -> NDArray[np.int16]:
    out = np.full((window.height, window.width), fill, dtype=np.int16)
    if not polys:
        return out
    t = _window_transform(source, window)
    x0, y0 = t * (0, 0)
    x1, y1 = t * (window.width, window.height)
    frame = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    shapes = [(p.geometry, p.class_index) for p in polys if p.geometry.intersects(frame)]
    if shapes:
        rasterio.features.rasterize(shapes, out=out, transform=t, all_touched=False, dtype=np.int16)
    return out


class ReferenceLabeler:
    """Per-pixel combined labels (see the module docstring) of windows of one scene."""

    def __init__(
        self,
        source: SceneSource,
        *,
        use_polygons: bool = True,
        use_raster: bool = True,
        folder: Path | None = None,
    ) -> None:
        self.source = source
        self.polygons = reference_polygons(source, folder=folder) if use_polygons else ()
        self._raster: LabelRaster | None = None
        if use_raster and source.labels:
            try:
                lab = scene_label_raster(source)
                self._raster = lab if lab.mapping is not None else None
            except NotFoundError:
                self._raster = None
        clusters = reference_path(source, folder)
        clusters = clusters.with_name(f"{clusters.stem}_clusters.tif")
        self._clusters = (
            _LabelReader(source, LabelRaster("clusters", clusters, 255, "dynamic-world"))
            if use_raster and use_polygons and clusters.is_file()
            else None
        )
        evals = [p.geometry for p in self.polygons if p.split == "eval"]
        from shapely.ops import unary_union

        self._eval_zone = unary_union(evals).buffer(BUFFER_M) if evals else None
        self._reader = SceneReader(source)
        self._labels = _LabelReader(source, self._raster) if self._raster else None

    def __enter__(self) -> ReferenceLabeler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        if self._labels is not None:
            self._labels.__exit__()
        if self._clusters is not None:
            self._clusters.__exit__()

    @property
    def sources_used(self) -> list[str]:
        used = ["spectral rules (water, snow and ice; cloud and nodata excluded)"]
        if self.polygons:
            used.append(f"{len(self.polygons)} reference polygons")
        if self._raster is not None:
            used.append(f"{self._raster.name} ({self._raster.mapping})")
        if self._clusters is not None:
            used.append("photo-interpreted spectral clusters")
        return used

    def labels(self, window: PixelWindow, split: Split = "train") -> NDArray[np.int16]:
        """DW class per pixel of a window (``-1``: unlabelled), by the precedence above."""
        bands = [b for b in READ_BANDS if b in self.source.band_names]
        data = self._reader.read(window, bands)
        refl = stack_reflectance(data, bands, self.source.dn_scale)
        scl = None
        if self.source.scl is not None:
            scl = self._reader.read_blocks(window, 1, [self.source.scl], raw=True)[0]
        rules = pixel_rules(refl, scl=scl)
        polys = [p for p in self.polygons if split == "all" or p.split == split]
        out = _burn(polys, self.source, window, NO_LABEL)
        if split != "eval":
            out[(out == NO_LABEL) & rules.snow] = SNOW
            if self._labels is not None and self._raster is not None:
                raw = self._labels.read(window)
                table = get_mapping(str(self._raster.mapping)).lookup_table(
                    max(int(raw.max(initial=0)), 0)
                )
                osm = np.where(raw >= 0, table[np.clip(raw, 0, None)], NO_LABEL)
                take = (out == NO_LABEL) & (osm >= 0)
                out[take] = osm[take]
            if self._clusters is not None:
                raw = self._clusters.read(window)
                take = (out == NO_LABEL) & (raw >= 0) & (raw < len(DW_CLASSES))
                out[take] = raw[take]
            out[rules.water] = WATER
        else:
            out[(out != NO_LABEL) & rules.water] = WATER
        out[~rules.clear] = NO_LABEL
        if split == "train":
            out[~self._train_mask(window)] = NO_LABEL
        return out

    def _train_mask(self, window: PixelWindow) -> NDArray[np.bool_]:
        rows = np.arange(window.row_off, window.row_off + window.height) // BLOCK_PX
        cols = np.arange(window.col_off, window.col_off + window.width) // BLOCK_PX
        split = np.vectorize(block_split)(rows[:, None], cols[None, :])
        mask: NDArray[np.bool_] = split == "train"
        if self._eval_zone is not None:
            zone = _burn(
                [ReferencePolygon(1, "", "", "", "eval", self._eval_zone)],
                self.source,
                window,
                0,
            )
            mask &= zone == 0
        return mask


def reference_soft_labels(
    source: SceneSource,
    tiles: Sequence[str | PixelWindow],
    *,
    split: Split = "train",
    grid: int = 1,
    min_labelled: float = MIN_LABELLED_FRACTION,
    use_polygons: bool = True,
    use_raster: bool = True,
) -> SoftLabels:
    """Soft labels of tiles (or ``grid × grid`` cells) from the combined reference labels."""
    windows = [t if isinstance(t, PixelWindow) else tile_from_id(t, source)[4] for t in tiles]
    if not windows:
        shape_: tuple[int, ...] = (0, grid * grid) if grid > 1 else (0,)
        empty = np.zeros((*shape_, len(DW_CLASSES)), dtype=np.float32)
        return SoftLabels(empty, empty[..., 0], empty.astype(bool), empty[..., 0].astype(bool))
    with ReferenceLabeler(source, use_polygons=use_polygons, use_raster=use_raster) as lab:
        stack = np.stack([lab.labels(w, split) for w in windows]).astype(np.int32)
    n, h, w = stack.shape
    if grid > 1:
        cells = stack.reshape(n, grid, h // grid, grid, w // grid).transpose(0, 1, 3, 2, 4)
        stack = cells.reshape(n, grid * grid, h // grid, w // grid)
    return soft_labels(
        stack, "dynamic-world", min_labelled=min_labelled, threshold=MULTI_HOT_THRESHOLD
    )
