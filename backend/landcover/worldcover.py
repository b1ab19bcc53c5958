"""ESA WorldCover 10 m v200 (2021) labels for any region, read over HTTP range requests.

WorldCover is published as 3° × 3° Cloud-Optimized GeoTIFFs in EPSG:4326 (1/12000° pixels, uint8
classes 10 … 100, 0 = no data), one per tile named by its **south-west corner**::

    https://esa-worldcover.s3.eu-central-1.amazonaws.com/v200/2021/map/
        ESA_WorldCover_10m_2021_v200_{N|S}{lat:02d}{E|W}{lon:03d}_Map.tif

e.g. ``N36W078`` covers 36–39° N, 78–75° W (Virginia's Eastern Shore) and ``N51E012`` 51–54° N,
12–15° E (Havelland). Only the window over the region is read (GDAL ``/vsicurl/`` range
requests), mosaicked across tiles when the region straddles a 3° line, and written to a small
local GeoTIFF under the data folder, which ``fit_head`` then reads like any user raster with the
``esa-worldcover`` mapping.

Licence: **CC BY 4.0**. Attribution: "© ESA WorldCover project 2021 / Contains modified
Copernicus Sentinel data (2021) processed by ESA WorldCover consortium" (Zanaga et al. 2022,
doi:10.5281/zenodo.7254221). The base URL can be changed with ``SOFTMAP_WORLDCOVER_URL`` (a
mirror, or the loopback server of the tests).
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError
from rasterio.transform import from_origin
from rasterio.windows import from_bounds

from backend.errors import SoftMapError
from backend.imagery.regions import Region
from backend.landcover.labels import LabelRaster

#: The public bucket (v200 = the 2021 map).
DEFAULT_URL = "https://esa-worldcover.s3.eu-central-1.amazonaws.com/v200/2021/map"
#: Pixel size of the WorldCover grid, degrees.
PIXEL_DEG = 1.0 / 12000.0
ATTRIBUTION = (
    "© ESA WorldCover project 2021 / Contains modified Copernicus Sentinel data (2021) "
    "processed by ESA WorldCover consortium (CC BY 4.0)"
)


class WorldCoverUnavailableError(SoftMapError):
    title = "ESA WorldCover unreachable"


def base_url() -> str:
    return os.environ.get("SOFTMAP_WORLDCOVER_URL", DEFAULT_URL).rstrip("/")


def tile_name(lat: float, lon: float) -> str:
    """The name of the 3° tile holding a point: its south-west corner, e.g. ``N36W078``."""
    south = int(math.floor(lat / 3.0) * 3)
    west = int(math.floor(lon / 3.0) * 3)
    ns = "N" if south >= 0 else "S"
    ew = "E" if west >= 0 else "W"
    return f"{ns}{abs(south):02d}{ew}{abs(west):03d}"


def tile_url(name: str, url: str | None = None) -> str:
    return f"{url or base_url()}/ESA_WorldCover_10m_2021_v200_{name}_Map.tif"


def tiles_for(bounds: tuple[float, float, float, float]) -> list[str]:
    """Names of the tiles a lon/lat box (west, south, east, north) touches."""
    w, s, e, n = bounds
    names = []
    lat = math.floor(s / 3.0) * 3
    while lat < n:
        lon = math.floor(w / 3.0) * 3
        while lon < e:
            names.append(tile_name(lat + 1e-9, lon + 1e-9))
            lon += 3
        lat += 3
    return names


def fetch_worldcover(
    region: Region, folder: Path, *, url: str | None = None, offline: bool = False
) -> LabelRaster:
    """WorldCover over a region (plus a 0.02° margin) as a local GeoTIFF, ready for ``fit_head``.

    Args:
        region: Where labels are needed (lon/lat).
        folder: Where the GeoTIFF is written.
        url: Base URL (default :func:`base_url`).
        offline: SoftMap's offline setting: only a loopback server is then tried.

    Raises:
        WorldCoverUnavailableError: offline, or the server does not answer or lacks a tile.
    """
    w, s, e, n = region.bounds
    pad = 0.02  # about 1.4-2 km: the tiles around the region reach past it
    bounds = (w - pad, s - pad, e + pad, n + pad)
    width = max(1, round((bounds[2] - bounds[0]) / PIXEL_DEG))
    height = max(1, round((bounds[3] - bounds[1]) / PIXEL_DEG))
    transform = from_origin(bounds[0], bounds[3], PIXEL_DEG, PIXEL_DEG)
    out = np.zeros((height, width), dtype=np.uint8)
    root = url or base_url()
    host = root.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    if offline and host not in ("127.0.0.1", "localhost", "::1"):
        raise WorldCoverUnavailableError(
            f"SoftMap is offline (SOFTMAP_OFFLINE=1), so ESA WorldCover ({root}) cannot be read: "
            "unset SOFTMAP_OFFLINE with internet access, or point SOFTMAP_WORLDCOVER_URL at a "
            "local mirror."
        )
    env = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
        "GDAL_HTTP_MAX_RETRY": "1",
        "GDAL_HTTP_TIMEOUT": "20",
    }
    names = tiles_for(bounds)
    try:
        with rasterio.Env(**env):
            for name in names:
                with rasterio.open(f"/vsicurl/{tile_url(name, root)}") as src:
                    win = from_bounds(*bounds, transform=src.transform)
                    data = src.read(
                        1,
                        window=win,
                        out_shape=(height, width),
                        boundless=True,
                        fill_value=0,
                    )
                    out = np.where(out == 0, data, out)
    except (RasterioError, OSError) as err:
        raise WorldCoverUnavailableError(
            f"Cannot read ESA WorldCover tile(s) {', '.join(names)} from {root} ({err}). "
            "It needs internet access (or SOFTMAP_WORLDCOVER_URL pointing at a mirror); "
            "offline, fit a head on the scene's own labels or --labels PATH."
        ) from err
    key = hashlib.sha1(f"{root}|{bounds}".encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"worldcover_{key}.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs="EPSG:4326",
        transform=transform,
        nodata=0,
        compress="deflate",
    ) as dst:
        dst.write(out, 1)
        dst.update_tags(SOURCE=root, TILES=",".join(names), ATTRIBUTION=ATTRIBUTION)
    return LabelRaster("ESA WorldCover 2021 v200", path, 0, "esa-worldcover")
