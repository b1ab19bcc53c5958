"""True-colour and false-colour quicklooks of a scene, reprojected to lon/lat for web maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT

from backend.errors import RasterReadError
from backend.sources import SceneSource

Composite = Literal["true", "false"]
#: Bands of each composite: natural colour, and NIR-red-green (vegetation shows red).
COMPOSITES: dict[str, tuple[str, str, str]] = {
    "true": ("B04", "B03", "B02"),
    "false": ("B08", "B04", "B03"),
}


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
    bands = COMPOSITES[composite]
    slots = {b.name: b for b in source.bands}
    files = {slots[b].file for b in bands}
    if len(files) != 1:
        raise RasterReadError(f"{source.id}: previews need the composite's bands in one file.")
    (file,) = files
    try:
        with (
            rasterio.open(source.root / file) as src,
            WarpedVRT(
                src, crs="EPSG:4326", resampling=Resampling.bilinear, nodata=source.nodata or 0
            ) as vrt,
        ):
            scale = max(vrt.width, vrt.height) / max_size
            shape = (max(1, round(vrt.height / scale)), max(1, round(vrt.width / scale)))
            data = vrt.read([slots[b].index for b in bands], out_shape=(3, *shape))
            w, s, e, n = vrt.bounds
    except (RasterioError, OSError) as err:
        raise RasterReadError(f"Cannot read a preview of {source.id}: {err}") from err
    valid = (data != (source.nodata or 0)).all(axis=0)
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
