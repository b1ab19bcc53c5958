"""Dynamic World's label space and soft labels from any categorical land-cover raster.

SoftCon's multi-labels come from Dynamic World (DW): nine classes, ``0`` water … ``8`` snow & ice.
A land-cover raster plus a :class:`ClassMapping` (raster value → DW index, or ``None`` for
unlabelled) gives, for every window (a tile, or a patch token inside it):

* ``fractions``: the share of each DW class among the *labelled* pixels (a 9-vector summing to 1);
* ``labelled_fraction``: the share of pixels that carry a mapped label at all;
* ``multi_hot``: the classes covering at least :data:`MULTI_HOT_THRESHOLD` of the labelled pixels;
* ``has_label``: whether at least :data:`MIN_LABELLED_FRACTION` of the pixels are labelled. Rows
  without a label have all-zero fractions and multi-hot vectors.

The pure core (:func:`class_fractions`, :func:`soft_labels`) works on arrays; the readers
(:func:`read_label_window`, :func:`tile_soft_labels`) put a scene's label layer, or any user raster
in any CRS (:func:`user_label_raster`), on the scene's 10 m grid first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject

from backend.errors import NotFoundError, RasterReadError, UnknownMappingError
from backend.imagery.reader import PixelWindow
from backend.imagery.sources import LabelLayer, SceneSource
from backend.imagery.tiling import tile_from_id

#: Dynamic World class names, in DW index order.
DW_CLASSES: tuple[str, ...] = (
    "water",
    "trees",
    "grass",
    "flooded_vegetation",
    "crops",
    "shrub_and_scrub",
    "built",
    "bare",
    "snow_and_ice",
)
#: Human-readable class names, in DW index order.
DW_TITLES: tuple[str, ...] = (
    "Water",
    "Trees",
    "Grass",
    "Flooded vegetation",
    "Crops",
    "Shrub & scrub",
    "Built area",
    "Bare ground",
    "Snow & ice",
)
#: The official Dynamic World palette (hex, no ``#``), in DW index order.
DW_PALETTE: tuple[str, ...] = (
    "419bdf",
    "397d49",
    "88b053",
    "7a87c6",
    "e49635",
    "dfc35a",
    "c4281b",
    "a59b8f",
    "b39fe1",
)
N_CLASSES = len(DW_CLASSES)

#: A class is "present" (multi-hot) when it covers at least 10 % of a window's labelled pixels.
#: Lower values turn rasterisation slivers along polygon edges (a few pixels of the neighbouring
#: class) into labels; 10 % of a 112 px tile is about 12 ha, a real patch of land cover.
MULTI_HOT_THRESHOLD = 0.10
#: A window has a label when at least 25 % of its pixels are labelled. The bundled OSM raster is
#: partial (69 % unlabelled), so a stricter limit leaves too few tiles; below a quarter the
#: fractions describe a sliver of the tile rather than the tile.
MIN_LABELLED_FRACTION = 0.25

#: Value used for "no label" in arrays returned by the readers when a raster has no nodata value.
NO_LABEL = -1


@dataclass(frozen=True)
class ClassMapping:
    """How a land-cover raster's values map onto Dynamic World's nine classes.

    Attributes:
        name: The id used on the command line (``--mapping``).
        title: A human-readable name.
        values: Raster value → DW index, or ``None`` for values that mean "unlabelled".
        description: Where the legend comes from and the judgement calls made.
        legend: Raster value → the source product's own class name (for docs and checks).
    """

    name: str
    title: str
    values: Mapping[int, int | None]
    description: str
    legend: Mapping[int, str] = field(default_factory=dict)

    def lookup_table(self, max_value: int) -> NDArray[np.int16]:
        """A table ``t`` with ``t[v]`` = DW index of raster value ``v``, or -1 (unlabelled)."""
        table = np.full(max_value + 1, -1, dtype=np.int16)
        for value, dw in self.values.items():
            if dw is not None and 0 <= value <= max_value:
                table[value] = dw
        return table


def _mapping(
    name: str, title: str, description: str, rows: Sequence[tuple[int, str, str | None]]
) -> ClassMapping:
    values = {v: (DW_CLASSES.index(dw) if dw is not None else None) for v, _, dw in rows}
    return ClassMapping(name, title, values, description, {v: n for v, n, _ in rows})


MAPPINGS: Mapping[str, ClassMapping] = {
    m.name: m
    for m in (
        _mapping(
            "esa-worldcover",
            "ESA WorldCover 10 m (v100/v200)",
            "The 11 WorldCover classes. Mangroves go to flooded vegetation (as in Dynamic World's "
            "own definition); moss & lichen to shrub & scrub (sparse low vegetation over exposed "
            "soil or rock). 0 is no data.",
            [
                (0, "no data", None),
                (10, "tree cover", "trees"),
                (20, "shrubland", "shrub_and_scrub"),
                (30, "grassland", "grass"),
                (40, "cropland", "crops"),
                (50, "built-up", "built"),
                (60, "bare / sparse vegetation", "bare"),
                (70, "snow and ice", "snow_and_ice"),
                (80, "permanent water bodies", "water"),
                (90, "herbaceous wetland", "flooded_vegetation"),
                (95, "mangroves", "flooded_vegetation"),
                (100, "moss and lichen", "shrub_and_scrub"),
            ],
        ),
        _mapping(
            "dynamic-world",
            "Dynamic World (label band)",
            "Identity: Dynamic World's own label values 0-8. Any other value is unlabelled.",
            [(i, DW_TITLES[i].lower(), DW_CLASSES[i]) for i in range(N_CLASSES)],
        ),
        _mapping(
            "osm-brandenburg",
            "OSM land use, Brandenburg demo scene",
            "The rasterised OSM landuse/water polygons bundled with demo/brandenburg "
            "(osm_landuse_label_10m.tif). Farmland → crops; meadow and grass → grass; wetland → "
            "flooded vegetation; residential → built. 0 is unlabelled (69 % of the scene).",
            [
                (0, "unlabelled", None),
                (1, "farm (farmland)", "crops"),
                (2, "meadow", "grass"),
                (3, "grass", "grass"),
                (4, "scrub", "shrub_and_scrub"),
                (5, "forest", "trees"),
                (6, "wetland", "flooded_vegetation"),
                (7, "residential", "built"),
                (8, "water", "water"),
            ],
        ),
        _mapping(
            "eolearn-slovenia",
            "eo-learn LULC (Slovenia, RABA-derived)",
            "eo-learn's LULC enum used by its Slovenia examples and TestEOPatch. Cultivated land "
            "→ crops; tundra → shrub & scrub (low shrubs and mosses); artificial surface → built. "
            "0 is no data.",
            [
                (0, "no data", None),
                (1, "cultivated land", "crops"),
                (2, "forest", "trees"),
                (3, "grassland", "grass"),
                (4, "shrubland", "shrub_and_scrub"),
                (5, "water", "water"),
                (6, "wetland", "flooded_vegetation"),
                (7, "tundra", "shrub_and_scrub"),
                (8, "artificial surface", "built"),
                (9, "bareland", "bare"),
                (10, "snow and ice", "snow_and_ice"),
            ],
        ),
    )
}

#: Label layers of the bundled scenes whose manifest does not name a mapping.
_LAYER_MAPPINGS = {"osm_landuse": "osm-brandenburg"}


def get_mapping(name: str | ClassMapping) -> ClassMapping:
    """The class mapping called ``name`` (a :class:`ClassMapping` is returned as is).

    Raises:
        UnknownMappingError: listing the mapping names that exist.
    """
    if isinstance(name, ClassMapping):
        return name
    try:
        return MAPPINGS[name]
    except KeyError:
        raise UnknownMappingError(
            f"There is no class mapping '{name}'. Available mappings: {', '.join(MAPPINGS)}."
        ) from None


# --- pure core -----------------------------------------------------------------------------
def class_fractions(
    values: NDArray[np.integer],
    mapping: ClassMapping | str,
    *,
    axis: int | tuple[int, ...] = (-2, -1),
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-class fractions of the labelled pixels, and the labelled fraction, over ``axis``.

    Args:
        values: Raw raster values of a window ``(h, w)``, a stack ``(n, h, w)``, or any shape
            whose ``axis`` dimensions are the pixels to pool (e.g. per-token sub-windows).
        mapping: How raster values map to DW classes (or its name).
        axis: The pixel axes pooled into one label.

    Returns:
        ``(fractions, labelled_fraction)``: fractions have the remaining dimensions plus a last
        one of 9 (zero where nothing is labelled); the labelled fraction has the remaining ones.
    """
    mapping = get_mapping(mapping)
    arr = np.asarray(values)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"label values must be integers, got {arr.dtype}")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(sorted(a % arr.ndim for a in axes))
    keep = [a for a in range(arr.ndim) if a not in axes]
    arr = np.transpose(arr, keep + list(axes))
    out_shape = arr.shape[: len(keep)]
    n_pix = int(np.prod(arr.shape[len(keep) :], dtype=np.int64))
    flat = arr.reshape(-1, n_pix).astype(np.int64, copy=False)
    top = max(max(mapping.values, default=0), 0)
    table = mapping.lookup_table(top)
    inside = (flat >= 0) & (flat <= top)
    dw = np.where(inside, table[np.clip(flat, 0, top)], -1)
    counts = np.zeros((flat.shape[0], N_CLASSES), dtype=np.int64)
    rows = np.broadcast_to(np.arange(flat.shape[0])[:, None], dw.shape)
    labelled = dw >= 0
    np.add.at(counts, (rows[labelled], dw[labelled]), 1)
    n_lab = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(n_lab[:, None] > 0, counts / np.maximum(n_lab, 1)[:, None], 0.0)
    lab_frac = n_lab / n_pix if n_pix else np.zeros(len(n_lab))
    return (
        fractions.reshape(*out_shape, N_CLASSES).astype(np.float32),
        np.asarray(lab_frac, dtype=np.float32).reshape(out_shape),
    )


@dataclass(frozen=True)
class SoftLabels:
    """Soft labels of ``n`` windows (or ``n × cells`` sub-windows: one more axis everywhere).

    Attributes:
        fractions: ``(n, 9)`` share of each DW class among labelled pixels; zero rows where
            ``has_label`` is False.
        labelled_fraction: ``(n,)`` share of pixels with a mapped label.
        multi_hot: ``(n, 9)`` classes with fraction ≥ the threshold.
        has_label: ``(n,)`` labelled fraction ≥ the minimum.
    """

    fractions: NDArray[np.float32]
    labelled_fraction: NDArray[np.float32]
    multi_hot: NDArray[np.bool_]
    has_label: NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.fractions.shape[0])

    @property
    def dominant(self) -> NDArray[np.int64]:
        """Index of the largest class per row (meaningless where ``has_label`` is False)."""
        out: NDArray[np.int64] = self.fractions.argmax(axis=-1)
        return out

    def subset(self, index: NDArray[np.bool_] | NDArray[np.integer]) -> SoftLabels:
        """The rows selected by a boolean mask or an index array."""
        return SoftLabels(
            self.fractions[index],
            self.labelled_fraction[index],
            self.multi_hot[index],
            self.has_label[index],
        )


def soft_labels(
    values_stack: NDArray[np.integer],
    mapping: ClassMapping | str,
    *,
    min_labelled: float = MIN_LABELLED_FRACTION,
    threshold: float = MULTI_HOT_THRESHOLD,
    axis: int | tuple[int, ...] = (-2, -1),
) -> SoftLabels:
    """Soft labels of a stack of label windows ``(n, h, w)`` (pixels on ``axis``)."""
    fractions, labelled = class_fractions(values_stack, mapping, axis=axis)
    return _finish(fractions, labelled, min_labelled=min_labelled, threshold=threshold)


def _finish(
    fractions: NDArray[np.float32],
    labelled: NDArray[np.float32],
    *,
    min_labelled: float,
    threshold: float,
) -> SoftLabels:
    has = labelled >= min_labelled
    if min_labelled <= 0:
        has &= labelled > 0
    fractions = np.where(has[..., None], fractions, np.float32(0)).astype(np.float32)
    multi = (fractions >= threshold) & has[..., None]
    return SoftLabels(fractions, labelled.astype(np.float32), multi, has)


# --- readers -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelRaster:
    """A categorical raster to read labels from: a scene's label layer or a user's file.

    Attributes:
        name: The layer name, or the file name for a user raster.
        path: The file.
        nodata: The raster's "no label" value (None when it has none).
        mapping: The default mapping name for this raster, if known.
    """

    name: str
    path: Path
    nodata: int | None
    mapping: str | None = None

    @property
    def fill(self) -> int:
        """The value written where the raster has no data (outside it, or its nodata)."""
        return self.nodata if self.nodata is not None else NO_LABEL


def scene_label_raster(source: SceneSource, layer: str | None = None) -> LabelRaster:
    """The label layer ``layer`` of a scene (its first one by default).

    Raises:
        NotFoundError: the scene has no label layer, or none called ``layer``.
    """
    if not source.labels:
        raise NotFoundError(
            f"{source.id} has no label layer; pass --labels PATH --mapping NAME to use your own "
            "land-cover raster."
        )
    chosen: LabelLayer | None = source.labels[0] if layer is None else None
    for lay in source.labels:
        if lay.name == layer:
            chosen = lay
    if chosen is None:
        names = ", ".join(lay.name for lay in source.labels)
        raise NotFoundError(f"{source.id} has no label layer '{layer}'. It has: {names}.")
    mapping = chosen.mapping or _LAYER_MAPPINGS.get(chosen.name)
    return LabelRaster(chosen.name, source.root / chosen.file, chosen.nodata, mapping)


def user_label_raster(path: str | Path, *, nodata: int | None = None) -> LabelRaster:
    """A user's categorical raster (GeoTIFF or anything GDAL reads, any CRS).

    Args:
        path: The file.
        nodata: Overrides the file's own nodata value.

    Raises:
        RasterReadError: the file cannot be opened, is not georeferenced or not integer-valued.
    """
    p = Path(path)
    try:
        with rasterio.open(p) as src:
            if src.crs is None:
                raise RasterReadError(f"{p} has no CRS: SoftMap cannot place it on the imagery.")
            if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
                raise RasterReadError(
                    f"{p} holds {src.dtypes[0]} values; a land-cover raster needs integer classes."
                )
            file_nodata = src.nodata
    except (RasterioError, OSError) as e:
        raise RasterReadError(f"Cannot open the label raster {p}: {e}") from e
    if nodata is None and file_nodata is not None and float(file_nodata).is_integer():
        nodata = int(file_nodata)
    return LabelRaster(p.name, p, nodata, None)


def _as_label_raster(source: SceneSource, layer: str | LabelRaster | None) -> LabelRaster:
    return layer if isinstance(layer, LabelRaster) else scene_label_raster(source, layer)


class _LabelReader:
    """Reads windows of one label raster on a scene's 10 m grid (nearest, or mode when finer)."""

    def __init__(self, source: SceneSource, raster: LabelRaster) -> None:
        self.source = source
        self.raster = raster
        try:
            self._ds = rasterio.open(raster.path)
        except (RasterioError, OSError) as e:
            raise RasterReadError(f"Cannot open the label raster {raster.path}: {e}") from e
        grid = source.grid
        self._on_grid = (
            self._ds.crs is not None
            and self._ds.crs == rasterio.crs.CRS.from_user_input(source.crs)
            and self._ds.width == grid.width
            and self._ds.height == grid.height
            and self._ds.transform.almost_equals(grid.affine)
        )
        self._resampling = Resampling.nearest if self._on_grid else self._choose_resampling()

    def __enter__(self) -> _LabelReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._ds.close()

    def _choose_resampling(self) -> Resampling:
        # Mode when the raster is finer than the 10 m grid (each cell takes its majority class),
        # nearest otherwise (a coarse class raster is just repeated).
        ds = self._ds
        if ds.crs is None:
            raise RasterReadError(f"{self.raster.path} has no CRS.")
        tr = Transformer.from_crs(ds.crs, self.source.crs, always_xy=True)
        x0, y0 = ds.transform @ (ds.width / 2, ds.height / 2)
        x1, y1 = ds.transform @ (ds.width / 2 + 1, ds.height / 2 + 1)
        (ax, bx), (ay, by) = tr.transform([x0, x1], [y0, y1])
        size = math.sqrt(abs(bx - ax) * abs(by - ay))
        return Resampling.mode if size < self.source.grid.resolution * 0.75 else Resampling.nearest

    def read(self, window: PixelWindow) -> NDArray[np.int32]:
        fill = self.raster.fill
        out = np.full((window.height, window.width), fill, dtype=np.int32)
        grid = self.source.grid
        try:
            if self._on_grid:
                inner = window.clipped(grid.width, grid.height)
                if inner is None:
                    return out
                data = self._ds.read(1, window=inner.as_rasterio())
                r0, c0 = inner.row_off - window.row_off, inner.col_off - window.col_off
                out[r0 : r0 + inner.height, c0 : c0 + inner.width] = data
                if self._ds.nodata is not None and self._ds.nodata != fill:
                    out[out == int(self._ds.nodata)] = fill
                return out
            dst_transform = grid.affine @ grid.affine.translation(window.col_off, window.row_off)
            reproject(
                source=rasterio.band(self._ds, 1),
                destination=out,
                src_nodata=self._ds.nodata,
                dst_transform=dst_transform,
                dst_crs=self.source.crs,
                dst_nodata=fill,
                init_dest_nodata=True,
                resampling=self._resampling,
            )
        except (RasterioError, OSError) as e:
            raise RasterReadError(
                f"Reading labels from {self.raster.path} failed at {window}: {e}"
            ) from e
        return out


def read_label_window(
    source: SceneSource, window: PixelWindow, layer: str | LabelRaster | None = None
) -> NDArray[np.int32]:
    """Raw label values of a 10 m window of ``source`` (``(h, w)`` int32).

    Args:
        source: The scene whose grid the window is on.
        window: The window (may extend past the scene).
        layer: A label layer name of the scene (its first by default) or a :class:`LabelRaster`
            from :func:`user_label_raster`, reprojected onto the grid.

    Pixels outside the label raster hold its nodata value (or :data:`NO_LABEL`).

    Raises:
        NotFoundError: the scene has no such label layer.
        RasterReadError: the raster cannot be read.
    """
    with _LabelReader(source, _as_label_raster(source, layer)) as reader:
        return reader.read(window)


def tile_soft_labels(
    source: SceneSource,
    tiles: Sequence[str | PixelWindow],
    mapping: ClassMapping | str | None = None,
    *,
    grid: int = 1,
    layer: str | LabelRaster | None = None,
    min_labelled: float = MIN_LABELLED_FRACTION,
    threshold: float = MULTI_HOT_THRESHOLD,
) -> SoftLabels:
    """Soft labels of tiles (ids or pixel windows) from a scene's label layer or a user raster.

    Args:
        source: The scene.
        tiles: Tile ids of ``source`` or pixel windows, all the same size.
        mapping: The class mapping; defaults to the one the label layer names.
        grid: ``g > 1`` splits each tile into ``g × g`` cells (e.g. patch tokens) and returns
            fractions ``(n, g*g, 9)``, labelled fractions ``(n, g*g)``, … in row-major cell order.
        layer: The scene label layer name or a :class:`LabelRaster` (default: the first layer).
        min_labelled: Minimum labelled fraction for a label.
        threshold: Fraction for multi-hot presence.

    Raises:
        UnknownMappingError: no mapping given and the layer names none.
        NotFoundError: a tile id of another source, or no label layer.
    """
    raster = _as_label_raster(source, layer)
    if mapping is None:
        if raster.mapping is None:
            raise UnknownMappingError(
                f"The label raster {raster.name} names no class mapping; pass one of "
                f"{', '.join(MAPPINGS)}."
            )
        mapping = raster.mapping
    cmap = get_mapping(mapping)
    windows = [t if isinstance(t, PixelWindow) else tile_from_id(t, source)[4] for t in tiles]
    if not windows:
        shape: tuple[int, ...] = (0, grid * grid) if grid > 1 else (0,)
        empty = np.zeros((*shape, N_CLASSES), dtype=np.float32)
        return SoftLabels(empty, empty[..., 0], empty.astype(bool), empty[..., 0].astype(bool))
    sizes = {(w.height, w.width) for w in windows}
    if len(sizes) != 1:
        raise ValueError("all windows must have the same size")
    ((h, w),) = sizes
    if h % grid or w % grid:
        raise ValueError(f"a {h}×{w} window does not split into {grid}×{grid} cells")
    with _LabelReader(source, raster) as reader:
        stack = np.stack([reader.read(win) for win in windows])
    if grid > 1:
        n = len(windows)
        cells = stack.reshape(n, grid, h // grid, grid, w // grid).transpose(0, 1, 3, 2, 4)
        stack = cells.reshape(n, grid * grid, h // grid, w // grid)
    return soft_labels(stack, cmap, min_labelled=min_labelled, threshold=threshold)
