"""Pictures of the imagery: scene quicklooks in lon/lat, tile thumbnails and tile grids for maps."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import rasterio
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.vrt import WarpedVRT
from shapely.geometry import Polygon, mapping

from backend.errors import RasterReadError
from backend.imagery.reader import SceneReader
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource, to_lonlat
from backend.imagery.tiling import (
    grid_cells,
    make_tile_id,
    tile_from_id,
    tile_window,
    window_polygon,
)

Composite = Literal["true", "false"]
#: Bands of each composite: natural colour, and NIR-red-green (vegetation shows red).
COMPOSITES: dict[str, tuple[str, str, str]] = {
    "true": ("B04", "B03", "B02"),
    "false": ("B08", "B04", "B03"),
}
#: Sentinel-1 has no colour: VV red, VH green, VV blue (water dark, vegetation green through its
#: volume scattering in VH, built-up and bare ground magenta); "false" is VH alone, in grey.
S1_COMPOSITES: dict[str, tuple[str, str, str]] = {
    "true": ("VV", "VH", "VV"),
    "false": ("VH", "VH", "VH"),
}


def composite_bands(source: SceneSource, composite: Composite = "true") -> tuple[str, str, str]:
    """The (red, green, blue) bands of a composite for this source's sensor."""
    table = S1_COMPOSITES if source.product_level == "GRD" else COMPOSITES
    return table[composite]


def _to_db(data: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Linear backscatter power → dB where valid and positive (as the reader does)."""
    out = np.zeros_like(data, dtype=np.float32)
    ok = valid & (data > 0)
    out[ok] = 10.0 * np.log10(data[ok])
    return out


@dataclass(frozen=True)
class Preview:
    """An RGBA image and its lon/lat bounds (west, south, east, north)."""

    rgba: NDArray[np.uint8]
    bounds: tuple[float, float, float, float]


def scene_preview(
    source: SceneSource, composite: Composite = "true", max_size: int = 1024
) -> Preview:
    """A contrast-stretched RGBA quicklook in EPSG:4326, transparent where there is no data.

    Reads the overviews, so a whole scene costs milliseconds. The stretch maps each band's 2nd–98th
    percentile of valid pixels to 0–255.

    Raises:
        RasterReadError: the scene cannot be read.
    """
    bands = composite_bands(source, composite)
    slots = {b.name: b for b in source.bands}
    # The finest band's file sets the lon/lat grid; bands in other files are warped onto it.
    files = sorted({slots[b].file for b in bands}, key=lambda f: min(
        b.resolution_m for b in source.bands if b.file == f))  # fmt: skip
    nodata = source.nodata or 0
    try:
        with rasterio.open(source.root / files[0]) as src, WarpedVRT(
            src, crs="EPSG:4326", resampling=Resampling.bilinear, nodata=nodata
        ) as vrt:  # fmt: skip
            scale = max(vrt.width, vrt.height) / max_size
            shape = (max(1, round(vrt.height / scale)), max(1, round(vrt.width / scale)))
            grid = {"transform": vrt.transform, "width": vrt.width, "height": vrt.height}
            w, s, e, n = vrt.bounds
        data = np.zeros((3, *shape), dtype=np.float32)
        for file in files:
            with rasterio.open(source.root / file) as src, WarpedVRT(
                src, crs="EPSG:4326", resampling=Resampling.bilinear, nodata=nodata, **grid
            ) as vrt:  # fmt: skip
                for i, b in enumerate(bands):
                    if slots[b].file == file:
                        data[i] = vrt.read(slots[b].index, out_shape=shape)
    except (RasterioError, OSError) as err:
        raise RasterReadError(f"Cannot read a preview of {source.id}: {err}") from err
    valid = (data != nodata).all(axis=0) & np.isfinite(data).all(axis=0)
    if source.units == "linear":
        data = np.stack([_to_db(d, valid) for d in data])
    rgba = np.zeros((*shape, 4), dtype=np.uint8)
    for i in range(3):
        rgba[..., i] = _stretch(data[i].astype(np.float32), valid)
    rgba[..., 3] = np.where(valid, 255, 0)
    return Preview(rgba, (float(w), float(s), float(e), float(n)))


def _stretch(band: NDArray[np.float32], valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
    if not valid.any():
        return np.zeros(band.shape, dtype=np.uint8)
    lo, hi = np.percentile(band[valid], [2, 98])
    scaled = (band - lo) / max(float(hi - lo), 1e-6) * 255
    out: NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


# --- tile thumbnails and grids for galleries, popups and the map -----------------------------
#: Stretch limits per (source id, scene folder, composite): computed once from the overviews.
_STRETCH: dict[tuple[str, str, str], tuple[NDArray[np.float32], NDArray[np.float32]]] = {}


def composite_stretch(
    source: SceneSource, composite: Composite = "true"
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-band 2nd and 98th percentiles of a composite over the whole scene (DN after offset).

    Thumbnails of one scene share these limits, so tiles side by side in a gallery compare.

    Raises:
        RasterReadError: the scene cannot be read.
    """
    key = (source.id, str(source.root), composite)
    if key not in _STRETCH:
        bands = composite_bands(source, composite)
        slots = {b.name: b for b in source.bands}
        nodata = source.nodata or 0
        lows, highs = [], []
        try:
            for name in bands:
                with rasterio.open(source.root / slots[name].file) as src:
                    scale = max(src.width, src.height) / 1024
                    shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
                    data = src.read(slots[name].index, out_shape=shape).astype(np.float32)
                ok = (data != nodata) & np.isfinite(data)
                if source.units == "linear":
                    data = _to_db(data, ok)
                valid = data[ok] + np.float32(source.dn_offset)
                lo, hi = np.percentile(valid, [2, 98]) if valid.size else (0.0, 1.0)
                lows.append(lo)
                highs.append(hi)
        except (RasterioError, OSError) as err:
            raise RasterReadError(f"Cannot read a preview of {source.id}: {err}") from err
        _STRETCH[key] = (np.array(lows, np.float32), np.array(highs, np.float32))
    return _STRETCH[key]


def tile_rgba(
    source: SceneSource, tile_id: str, composite: Composite = "true"
) -> NDArray[np.uint8]:
    """A tile's composite as an ``[H, W, 4]`` RGBA array at 10 m, stretched like its scene.

    Raises:
        NotFoundError: ``tile_id`` is not a tile id of ``source``.
        RasterReadError: the scene cannot be read.
    """
    _chip, _stride, _row, _col, window = tile_from_id(tile_id, source)
    with SceneReader(source) as reader:
        data = reader.read(window, composite_bands(source, composite))
    valid = (data != 0).all(axis=0)
    lo, hi = composite_stretch(source, composite)
    scaled = (data - lo[:, None, None]) / np.maximum(hi - lo, 1e-6)[:, None, None] * 255
    rgba = np.zeros((*valid.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.clip(scaled, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    rgba[..., 3] = np.where(valid, 255, 0)
    return rgba


def tile_thumbnail(
    source: SceneSource, tile_id: str, composite: Composite = "true", size: int = 128
) -> bytes:
    """A tile's composite as PNG bytes, ``size`` pixels wide (nearest-neighbour resize).

    Raises:
        NotFoundError: ``tile_id`` is not a tile id of ``source``.
        RasterReadError: the scene cannot be read.
    """
    rgba = tile_rgba(source, tile_id, composite)
    h, w = rgba.shape[:2]
    rows = (np.arange(size) * h // size).clip(0, h - 1)
    cols = (np.arange(size) * w // size).clip(0, w - 1)
    return encode_png(rgba[rows][:, cols])


def encode_png(rgba: NDArray[np.uint8]) -> bytes:
    """Encode an ``[H, W, 3|4]`` uint8 image as PNG bytes."""
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4) or rgba.dtype != np.uint8:
        raise ValueError(f"expected an [H, W, 3|4] uint8 image, got {rgba.shape} {rgba.dtype}")
    h, w, c = rgba.shape
    with warnings.catch_warnings():
        # A PNG has no georeference, and needs none.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(driver="PNG", width=w, height=h, count=c, dtype="uint8") as dst:
                dst.write(rgba.transpose(2, 0, 1))
            return bytes(mem.read())


def png_data_url(rgba: NDArray[np.uint8]) -> str:
    """An RGBA image as a ``data:image/png;base64,…`` URL (for map overlays and HTML)."""
    return "data:image/png;base64," + base64.b64encode(encode_png(rgba)).decode("ascii")


def tile_grid_geojson(tiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stored tile records (``EmbeddingCache.tiles``) as a GeoJSON FeatureCollection.

    Each feature has the tile's footprint and ``tile_id``, ``row``, ``col`` and
    ``nodata_fraction`` properties.
    """
    features = []
    for t in tiles:
        footprint = t["footprint"]
        features.append(
            {
                "type": "Feature",
                "id": t["tile_id"],
                "geometry": json.loads(footprint) if isinstance(footprint, str) else footprint,
                "properties": {
                    "tile_id": t["tile_id"],
                    "row": t["row"],
                    "col": t["col"],
                    "nodata_fraction": round(float(t["nodata_fraction"] or 0.0), 4),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def region_grid_geojson(
    region: Region, source: SceneSource, chip: int, stride: int | None = None, limit: int = 5000
) -> dict[str, Any]:
    """The tile grid a region would use, before anything is embedded (no raster read).

    Args:
        region: the lon/lat region.
        source: the scene whose pixel grid the tiles follow.
        chip: tile edge in pixels.
        stride: step between tiles (default ``chip``).
        limit: at most this many tiles (the first ones, row-major), so a map stays light.

    Returns:
        A FeatureCollection with ``tile_id``, ``row`` and ``col`` properties.
    """
    stride = stride or chip
    cells = grid_cells(region, source, chip, stride)[:limit]
    features = []
    for row, col in cells:
        footprint = to_lonlat(
            window_polygon(source, tile_window(row, col, chip, stride)), source.crs
        )
        tile_id = make_tile_id(source.id, chip, stride, row, col)
        features.append(
            {
                "type": "Feature",
                "id": tile_id,
                "geometry": mapping(footprint),
                "properties": {"tile_id": tile_id, "row": row, "col": col},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def tile_at(
    source: SceneSource, lon: float, lat: float, chip: int, stride: int | None = None
) -> str | None:
    """The id of the tile (of this chip and stride) under a lon/lat point, or None outside.

    With overlapping tiles (``stride < chip``) it is the tile whose window starts nearest
    before the point.
    """
    stride = stride or chip
    x, y = Transformer.from_crs("EPSG:4326", source.crs, always_xy=True).transform(lon, lat)
    col_px, row_px = ~source.grid.affine * (x, y)
    if not (0 <= col_px < source.grid.width and 0 <= row_px < source.grid.height):
        return None
    return make_tile_id(source.id, chip, stride, int(row_px // stride), int(col_px // stride))


def tile_block_region(
    source: SceneSource,
    lon: float,
    lat: float,
    chip: int,
    stride: int | None = None,
    size: int = 3,
) -> Region | None:
    """The ``size`` × ``size`` tiles centred on the tile under a point, as a region.

    The region follows the tiles' pixel edges (a quadrilateral in lon/lat), inset by a tenth of
    a pixel so no neighbouring tile touches it: embedding it plans exactly those tiles (fewer at
    the scene's edge, where the block is shifted inwards). None when the point is outside.
    """
    stride = stride or chip
    x, y = Transformer.from_crs("EPSG:4326", source.crs, always_xy=True).transform(lon, lat)
    col_px, row_px = ~source.grid.affine * (x, y)
    width, height = source.grid.width, source.grid.height
    if not (0 <= col_px < width and 0 <= row_px < height):
        return None
    last_row, last_col = (height - 1) // stride, (width - 1) // stride
    row0 = min(max(int(row_px // stride) - size // 2, 0), max(last_row - size + 1, 0))
    col0 = min(max(int(col_px // stride) - size // 2, 0), max(last_col - size + 1, 0))
    row1, col1 = min(row0 + size - 1, last_row), min(col0 + size - 1, last_col)
    inset = 0.1
    px0, py0 = col0 * stride + inset, row0 * stride + inset
    px1 = min(col1 * stride + chip, width) - inset
    py1 = min(row1 * stride + chip, height) - inset
    a = source.grid.affine
    corners = [a * (px, py) for px, py in ((px0, py0), (px1, py0), (px1, py1), (px0, py1))]
    return Region(to_lonlat(Polygon(corners), source.crs))
