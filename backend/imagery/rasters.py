"""Dense rasters from per-tile values, written as Cloud-Optimized GeoTIFFs.

Land-cover probabilities, user-class probabilities and change scores are predicted per tile (or per
patch token inside a tile). ``tiles_to_grid`` lays them out on the source's pixel grid (one cell per
tile, or ``g × g`` cells per tile for token maps) and ``write_cog`` writes the result so that
rasterio, GDAL and QGIS open it georeferenced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from numpy.typing import NDArray
from rasterio.io import MemoryFile

from backend.errors import SoftMapError
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import parse_tile_id


@dataclass(frozen=True)
class GridRaster:
    """A ``(bands, height, width)`` float32 array on a source's grid (NaN where no tile)."""

    data: NDArray[np.float32]
    transform: Affine
    crs: str

    @property
    def cell_size_m(self) -> float:
        return float(abs(self.transform.a))


def tiles_to_grid(
    source: SceneSource, tile_ids: Sequence[str], values: NDArray[np.floating]
) -> GridRaster:
    """Place per-tile values on the source grid.

    Args:
        source: the scene the tiles belong to.
        tile_ids: ids of non-overlapping tiles (stride = chip) of that source, one chip size.
        values: ``(n, bands)`` per-tile values, or ``(n, bands, g, g)`` sub-tile values (e.g. patch
            tokens: ``g = chip / patch``), row-major inside the tile.

    Raises:
        SoftMapError: when tiles overlap, mix chip sizes or belong to another source.
    """
    if len(tile_ids) == 0:
        raise SoftMapError("There are no tiles to map.", title="Nothing to map")
    vals = np.asarray(values, dtype=np.float32)
    if vals.ndim == 2:
        vals = vals[:, :, None, None]
    if vals.ndim != 4 or vals.shape[0] != len(tile_ids) or vals.shape[2] != vals.shape[3]:
        raise ValueError(f"values {values.shape} do not match {len(tile_ids)} tiles")
    parsed = [parse_tile_id(t) for t in tile_ids]
    chips = {(p[1], p[2]) for p in parsed}
    if len(chips) != 1 or any(p[0] != source.id for p in parsed):
        raise SoftMapError(
            "A map needs tiles of one source and one chip size.", title="Cannot build map"
        )
    ((chip, stride),) = chips
    if stride != chip:
        raise SoftMapError(
            f"Tiles with stride {stride} < chip {chip} overlap; maps need stride = chip.",
            title="Cannot build map",
        )
    g = vals.shape[2]
    if chip % g:
        raise ValueError(f"{g}×{g} cells do not divide a {chip} px tile")
    rows = np.array([p[3] for p in parsed])
    cols = np.array([p[4] for p in parsed])
    r0, c0 = int(rows.min()), int(cols.min())
    height, width = (int(rows.max()) - r0 + 1) * g, (int(cols.max()) - c0 + 1) * g
    out = np.full((vals.shape[1], height, width), np.nan, dtype=np.float32)
    for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
        y, x = (int(r) - r0) * g, (int(c) - c0) * g
        out[:, y : y + g, x : x + g] = vals[i]
    cell_px = chip // g
    transform = (
        source.grid.affine @ Affine.translation(c0 * chip, r0 * chip) @ Affine.scale(cell_px)
    )
    return GridRaster(out, transform, source.crs)


def write_cog(
    path: str | Path,
    data: NDArray[np.generic],
    *,
    transform: Affine,
    crs: str,
    band_names: Sequence[str] | None = None,
    nodata: float | None = None,
    tags: Mapping[str, str] | None = None,
    band_tags: Sequence[Mapping[str, str]] | None = None,
) -> Path:
    """Write a ``(bands, height, width)`` array as a Cloud-Optimized GeoTIFF (DEFLATE, tiled).

    Float data uses NaN as nodata unless ``nodata`` says otherwise. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if nodata is None and np.issubdtype(arr.dtype, np.floating):
        nodata = float("nan")
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    with MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(arr)
            for i, name in enumerate(band_names or [], start=1):
                ds.set_band_description(i, name)
            if tags:
                ds.update_tags(**tags)
            for i, bt in enumerate(band_tags or [], start=1):
                ds.update_tags(i, **bt)
        with mem.open() as src:
            rasterio.shutil.copy(
                src,
                str(path),
                driver="COG",
                compress="DEFLATE",
                blocksize=256,
                overview_resampling="nearest",
            )
    return path
