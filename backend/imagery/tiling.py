"""Tiles: a grid aligned to the scene's 10 m pixel grid, in the scene's native CRS.

Tile ``(row, col)`` covers pixels ``[row·stride, row·stride + chip)`` × ``[col·stride, col·stride +
chip)`` of the reference grid, so tile ids are the same whatever region asked for them:
``{source}/{chip}/{stride}/{row}_{col}``. Tiles at the scene edge extend past it and are padded
with nodata; tiles whose nodata fraction exceeds a limit are skipped (and counted), and so are
tiles whose cloud fraction (:mod:`backend.imagery.quality`) exceeds an optional limit.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import Polygon, box

from backend.errors import InvalidRegionError, NotFoundError, RegionOutsideSourceError
from backend.imagery.quality import cloud_blocks
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource, from_lonlat

_TILE_ID = re.compile(r"^(?P<source>.+)/(?P<chip>\d+)/(?P<stride>\d+)/(?P<row>\d+)_(?P<col>\d+)$")

#: Finest step (pixels) at which nodata is checked; 8 px = 80 m, served from the first overview.
NODATA_CHECK_STEP = 8


@dataclass(frozen=True)
class Tile:
    """One chip of a scene: id, pixel window, lon/lat footprint, nodata and cloud fractions.

    ``cloud_fraction`` is the cloudy share of the tile's valid pixels, None where no cloud test
    applies (Sentinel-1).
    """

    tile_id: str
    source_id: str
    chip: int
    stride: int
    row: int
    col: int
    window: PixelWindow
    footprint: Polygon
    nodata_fraction: float
    cloud_fraction: float | None = None

    @property
    def centroid(self) -> tuple[float, float]:
        """(lon, lat) of the footprint's centroid."""
        c = self.footprint.centroid
        return (float(c.x), float(c.y))


@dataclass(frozen=True)
class TilePlan:
    """The tiles a region needs: those to embed and those skipped (too much nodata or cloud)."""

    source_id: str
    chip: int
    stride: int
    tiles: tuple[Tile, ...]
    skipped: tuple[Tile, ...]
    max_nodata_fraction: float
    max_cloud_fraction: float | None = None

    @property
    def total(self) -> int:
        return len(self.tiles) + len(self.skipped)

    @property
    def skipped_cloudy(self) -> int:
        """Tiles skipped for cloud alone (their nodata was within the limit)."""
        return sum(t.nodata_fraction <= self.max_nodata_fraction for t in self.skipped)


def make_tile_id(source_id: str, chip: int, stride: int, row: int, col: int) -> str:
    """The deterministic id of a tile."""
    return f"{source_id}/{chip}/{stride}/{row}_{col}"


def parse_tile_id(tile_id: str) -> tuple[str, int, int, int, int]:
    """Split a tile id into (source, chip, stride, row, col).

    Raises:
        NotFoundError: if the text is not a tile id.
    """
    m = _TILE_ID.match(tile_id)
    if not m:
        raise NotFoundError(
            f"'{tile_id}' is not a tile id (expected source/chip/stride/row_col, "
            "e.g. demo/virginia/224/224/3_4)."
        )
    return (
        m["source"],
        int(m["chip"]),
        int(m["stride"]),
        int(m["row"]),
        int(m["col"]),
    )


def tile_window(row: int, col: int, chip: int, stride: int) -> PixelWindow:
    """The pixel window of tile ``(row, col)``."""
    return PixelWindow(col * stride, row * stride, chip, chip)


def window_polygon(source: SceneSource, window: PixelWindow) -> Polygon:
    """A window's footprint in the source's native CRS."""
    a = source.grid.affine
    x0, y0 = a @ (window.col_off, window.row_off)
    x1, y1 = a @ (window.col_off + window.width, window.row_off + window.height)
    return box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def grid_cells(
    region: Region, source: SceneSource, chip: int, stride: int
) -> list[tuple[int, int]]:
    """(row, col) of every tile that intersects the region and the scene, row-major."""
    _check_chip(chip, stride)
    # Only the part near the scene is projected: a region far larger than a UTM zone (the whole
    # world, with the area limit raised) has no meaningful coordinates in the scene's CRS.
    near = region.geometry.intersection(source.footprint_lonlat.buffer(0.01))
    if near.is_empty:
        return []
    native = from_lonlat(near.segmentize(0.001), source.crs)
    inv = ~source.grid.affine
    minx, miny, maxx, maxy = native.bounds
    cols_px, rows_px = zip(*(inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    px0, px1 = max(min(cols_px), 0.0), min(max(cols_px), float(source.grid.width))
    py0, py1 = max(min(rows_px), 0.0), min(max(rows_px), float(source.grid.height))
    if px1 <= px0 or py1 <= py0:
        return []
    c0 = max(0, math.floor((px0 - chip) / stride) + 1)
    r0 = max(0, math.floor((py0 - chip) / stride) + 1)
    c1 = min(math.ceil(px1 / stride) - 1, (source.grid.width - 1) // stride)
    r1 = min(math.ceil(py1 / stride) - 1, (source.grid.height - 1) // stride)
    cells = [(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]
    if not cells:
        return []
    boxes = [window_polygon(source, tile_window(r, c, chip, stride)) for r, c in cells]
    hits = shapely.intersects(np.array(boxes, dtype=object), native)
    return [cell for cell, hit in zip(cells, hits, strict=True) if hit]


def plan_tiles(
    region: Region,
    source: SceneSource,
    reader: SceneReader,
    *,
    chip: int,
    stride: int | None = None,
    max_nodata_fraction: float = 0.5,
    max_cloud_fraction: float | None = None,
) -> TilePlan:
    """Tiles covering a region, each with its footprint, nodata and cloud fractions.

    Tiles over ``max_nodata_fraction`` nodata, or over ``max_cloud_fraction`` cloud (None: no
    cloud limit), are skipped.

    Raises:
        RegionOutsideSourceError: if the region covers no pixel of the scene.
    """
    stride = stride or chip
    cells = grid_cells(region, source, chip, stride)
    if not cells:
        w, s, e, n = source.bbox_lonlat
        raise RegionOutsideSourceError(
            f"The region {region.describe()} is outside the scene {source.id}: it touches none "
            f"of its pixels. Choose a region within lon {w:.3f}…{e:.3f}, lat {s:.3f}…{n:.3f}."
        )
    nodata, cloud = _quality_fractions(reader, cells, chip, stride)
    footprints = _footprints_lonlat(source, cells, chip, stride)
    kept: list[Tile] = []
    skipped: list[Tile] = []
    for (row, col), frac, cloud_frac, fp in zip(cells, nodata, cloud, footprints, strict=True):
        tile = Tile(
            tile_id=make_tile_id(source.id, chip, stride, row, col),
            source_id=source.id,
            chip=chip,
            stride=stride,
            row=row,
            col=col,
            window=tile_window(row, col, chip, stride),
            footprint=fp,
            nodata_fraction=round(float(frac), 4),
            cloud_fraction=None if cloud_frac is None else round(cloud_frac, 4),
        )
        too_cloudy = (
            max_cloud_fraction is not None
            and cloud_frac is not None
            and cloud_frac > max_cloud_fraction
        )
        (skipped if frac > max_nodata_fraction or too_cloudy else kept).append(tile)
    return TilePlan(
        source.id,
        chip,
        stride,
        tuple(kept),
        tuple(skipped),
        max_nodata_fraction,
        max_cloud_fraction,
    )


def tile_from_id(tile_id: str, source: SceneSource) -> tuple[int, int, int, int, PixelWindow]:
    """(chip, stride, row, col, window) of a tile id that belongs to ``source``."""
    source_id, chip, stride, row, col = parse_tile_id(tile_id)
    if source_id != source.id:
        raise NotFoundError(f"Tile {tile_id} belongs to {source_id}, not {source.id}.")
    return chip, stride, row, col, tile_window(row, col, chip, stride)


def _check_chip(chip: int, stride: int) -> None:
    if chip < 8 or stride < 1 or stride > chip:
        raise InvalidRegionError(
            f"Chip size {chip} and stride {stride} are not usable: "
            "need chip ≥ 8 and 1 ≤ stride ≤ chip."
        )


def _quality_fractions(
    reader: SceneReader, cells: list[tuple[int, int]], chip: int, stride: int
) -> tuple[list[float], list[float | None]]:
    """Per cell: nodata fraction, and the cloudy share of its valid pixels (None: no test)."""
    step = math.gcd(math.gcd(chip, stride), NODATA_CHECK_STEP)
    rows = [r for r, _ in cells]
    cols = [c for _, c in cells]
    r0, c0 = min(rows), min(cols)
    union = PixelWindow(
        c0 * stride,
        r0 * stride,
        (max(cols) - c0) * stride + chip,
        (max(rows) - r0) * stride + chip,
    )
    valid = reader.valid_mask(union, step)
    cloudy = cloud_blocks(reader, union, step)
    n = chip // step
    nodata: list[float] = []
    cloud: list[float | None] = []
    for r, c in cells:
        y, x = (r - r0) * stride // step, (c - c0) * stride // step
        v = valid[y : y + n, x : x + n]
        nodata.append(1.0 - float(v.mean()))
        if cloudy is None:
            cloud.append(None)
        else:
            n_valid = int(v.sum())
            cloudy_valid = int((cloudy[y : y + n, x : x + n] & v).sum())
            cloud.append(cloudy_valid / n_valid if n_valid else 0.0)
    return nodata, cloud


def _footprints_lonlat(
    source: SceneSource, cells: list[tuple[int, int]], chip: int, stride: int
) -> list[Polygon]:
    a = source.grid.affine
    tr = Transformer.from_crs(source.crs, "EPSG:4326", always_xy=True)
    corners = np.array(
        [
            [
                (c * stride + dx, r * stride + dy)
                for dx, dy in ((0, 0), (chip, 0), (chip, chip), (0, chip))
            ]
            for r, c in cells
        ],
        dtype=np.float64,
    )
    xs = a.c + a.a * corners[..., 0] + a.b * corners[..., 1]
    ys = a.f + a.d * corners[..., 0] + a.e * corners[..., 1]
    lon, lat = tr.transform(xs, ys)
    return [Polygon(list(zip(lo, la, strict=True))) for lo, la in zip(lon, lat, strict=True)]
