"""What an import needs to know about a raster file, and Sentinel-1 backscatter units.

:func:`inspect_raster` reads a file's header once (CRS, grid, dtype, nodata, descriptions, tags);
:func:`s1_units` tells linear power from dB for calibrated Sentinel-1 backscatter, from the band
metadata (``units``) or else the value range, and :func:`s1_units_checked` refuses a unit the user
stated when the values contradict it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from backend.errors import SceneImportError
from backend.imagery.sources import Units


@dataclass(frozen=True)
class RasterInfo:
    """What an import needs to know about one raster file."""

    path: Path
    crs: str | None
    geographic: bool
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    colorinterp: tuple[str, ...]
    tags: dict[str, str]
    band_tags: tuple[dict[str, str], ...]

    @property
    def resolution(self) -> float:
        return abs(self.transform[0])

    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        x0, x1 = c, c + a * self.width
        y0, y1 = f, f + e * self.height
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def inspect_raster(path: Path) -> RasterInfo:
    try:
        with rasterio.open(path) as ds:
            crs = ds.crs
            return RasterInfo(
                path=path,
                crs=crs_text(crs) if crs else None,
                geographic=bool(crs and crs.is_geographic),
                transform=tuple(ds.transform)[:6],
                width=ds.width,
                height=ds.height,
                count=ds.count,
                dtype=str(ds.dtypes[0]),
                nodata=ds.nodata,
                descriptions=tuple(ds.descriptions),
                colorinterp=tuple(c.name for c in ds.colorinterp),
                tags=dict(ds.tags()),
                band_tags=tuple(dict(ds.tags(i)) for i in range(1, ds.count + 1)),
            )
    except (RasterioError, OSError) as e:
        raise SceneImportError(
            f"Cannot read {path} as a raster ({e}). It may be corrupt, truncated or not an "
            "image; SoftMap reads GeoTIFF/COG and JPEG 2000."
        ) from e


def crs_text(crs: rasterio.crs.CRS) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())


def s1_units_checked(slot: tuple[RasterInfo, int], stated: Units | None) -> tuple[Units, str]:
    """The backscatter unit and why (a caveat); a stated unit the values contradict is refused."""
    if stated is None:
        found = s1_units(slot)
        return found, f"Backscatter in {'dB' if found == 'db' else 'linear power'} (detected)."
    if stated not in ("db", "linear"):
        raise SceneImportError(f"Units '{stated}' are not Sentinel-1 units: use db or linear.")
    raster, index = slot
    values = sample_values(raster, index)
    if values.size and stated == "linear" and float(np.median(values)) < 0:
        raise SceneImportError(
            f"{raster.path.name} is stated to be linear power but its median is "
            f"{float(np.median(values)):.3g} (negative): the values look like dB. "
            "Use --units db, or leave --units out to detect it."
        )
    if (
        values.size
        and stated == "db"
        and float(values.min()) >= 0
        and np.percentile(values, 99) < 1
    ):
        raise SceneImportError(
            f"{raster.path.name} is stated to be in dB but every value lies in 0…1: it looks "
            "like linear power. Use --units linear, or leave --units out to detect it."
        )
    return stated, f"Backscatter in {'dB' if stated == 'db' else 'linear power'} (stated)."


def s1_units(slot: tuple[RasterInfo, int]) -> Units:
    """Linear power or dB, from the band's ``units`` metadata or else its value range."""
    raster, index = slot
    meta = {**raster.tags, **raster.band_tags[index - 1]}
    declared = " ".join(v for k, v in meta.items() if k.lower() in ("units", "unit")).lower()
    desc = (raster.descriptions[index - 1] or "").lower()
    if "db" in declared or "db" in desc or "decibel" in declared:
        return "db"
    if "linear" in declared or "power" in declared or "linear" in desc:
        return "linear"
    if raster.dtype not in ("float32", "float64"):
        raise SceneImportError(
            f"{raster.path.name} holds {raster.dtype} values: uncalibrated Sentinel-1 "
            "amplitude? SoftMap needs calibrated backscatter (sigma0 or gamma0) as float, in "
            "linear power or dB (e.g. from SNAP, sarsen or a GRD-RTC product)."
        )
    values = sample_values(raster, index)
    if values.size == 0:
        raise SceneImportError(f"{raster.path.name} has no valid pixel.")
    median = float(np.median(values))
    high = float(np.percentile(values, 99))
    if median < 0:
        return "db"
    if high <= 10.0 and float(values.min()) >= 0:
        return "linear"
    raise SceneImportError(
        f"Cannot tell whether {raster.path.name} is linear power or dB (median {median:.3g}, "
        f"99th percentile {high:.3g}): set the band metadata 'units' to 'dB' or 'linear'."
    )


def sample_values(raster: RasterInfo, index: int, size: int = 256) -> np.ndarray:
    shape = (min(size, raster.height), min(size, raster.width))
    try:
        with rasterio.open(raster.path) as ds:
            data = ds.read(index, out_shape=shape).astype(np.float64)
    except (RasterioError, OSError) as e:
        raise SceneImportError(f"Cannot read {raster.path}: {e}") from e
    ok = np.isfinite(data)
    if raster.nodata is not None and not math.isnan(raster.nodata):
        ok &= data != raster.nodata
    out: np.ndarray = data[ok]
    return out
