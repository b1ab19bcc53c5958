"""RGBA renderings of land-cover rasters for web maps (Leaflet ``ImageOverlay``).

The probabilities live on the scene's UTM grid; a Leaflet image overlay is stretched between
lon/lat bounds, so the rendering is reprojected to EPSG:4326 (as scene previews are, see
``backend.imagery.preview``) with nearest-neighbour resampling, which keeps class cells crisp.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from backend.imagery.preview import Preview
from backend.imagery.rasters import GridRaster
from backend.landcover.labels import DW_PALETTE, N_CLASSES

RenderMode = Literal["dominant", "probability", "entropy"]
_PALETTE = np.array([[int(c[i : i + 2], 16) for i in (0, 2, 4)] for c in DW_PALETTE], np.uint8)
#: How cells beyond the out-of-distribution limit are drawn: a neutral grey, nearly opaque,
#: instead of any class colour (never a confident wrong colour where the model cannot know).
UNLIKE_COLOR = "9e9e9e"
UNLIKE_ALPHA = 0.85
UNLIKE_LABEL = "Unlike anything the model was trained on"
_UNLIKE_RGB = np.array([int(UNLIKE_COLOR[i : i + 2], 16) for i in (0, 2, 4)], np.uint8)
#: Entropy ramp from certain (pale yellow) to uncertain (dark purple).
_ENTROPY_LOW = np.array([255, 255, 204], np.float32)
_ENTROPY_HIGH = np.array([84, 39, 143], np.float32)
#: Dominant-class alpha = ``DOMINANT_ALPHA_FLOOR + (1 - floor) × confidence``: soft labels keep
#: confidence in the transparency, but a cell the head is unsure of (top class 0.3–0.5) still
#: shows its colour over bright imagery instead of fading into it.
DOMINANT_ALPHA_FLOOR = 0.45


def colorize(
    probs: NDArray[np.float32],
    mode: RenderMode = "dominant",
    class_index: int | None = None,
    unlike: NDArray[np.bool_] | None = None,
) -> NDArray[np.uint8]:
    """An ``(h, w, 4)`` RGBA image of ``(9, h, w)`` probabilities (NaN = no data, transparent).

    Modes: ``dominant`` paints the top class in the Dynamic World palette with alpha rising with
    its probability (from :data:`DOMINANT_ALPHA_FLOOR`); ``probability`` paints ``class_index``
    in its colour with alpha = its probability; ``entropy`` ramps from pale (certain) to dark
    purple (uncertain).
    """
    if probs.ndim != 3 or probs.shape[0] != N_CLASSES:
        raise ValueError(f"expected (9, h, w) probabilities, got {probs.shape}")
    valid = np.isfinite(probs).all(axis=0)
    p = np.where(valid, probs, 0).astype(np.float32)
    rgba = np.zeros((*p.shape[1:], 4), dtype=np.uint8)
    if mode == "dominant":
        top = p.argmax(axis=0)
        rgba[..., :3] = _PALETTE[top]
        alpha = DOMINANT_ALPHA_FLOOR + (1 - DOMINANT_ALPHA_FLOOR) * p.max(axis=0)
    elif mode == "probability":
        if class_index is None or not 0 <= class_index < N_CLASSES:
            raise ValueError("probability mode needs class_index in 0..8")
        rgba[..., :3] = _PALETTE[class_index]
        alpha = p[class_index]
    elif mode == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0) / np.log(N_CLASSES)
        t = np.clip(ent, 0, 1)[..., None]
        rgba[..., :3] = (_ENTROPY_LOW * (1 - t) + _ENTROPY_HIGH * t).astype(np.uint8)
        alpha = np.full(p.shape[1:], 0.85, dtype=np.float32)
    else:
        raise ValueError(f"unknown render mode {mode!r}")
    rgba[..., 3] = np.where(valid, np.clip(alpha * 255, 0, 255), 0).astype(np.uint8)
    if unlike is not None:
        off = np.asarray(unlike, dtype=bool) & valid
        rgba[off, :3] = _UNLIKE_RGB
        rgba[off, 3] = int(UNLIKE_ALPHA * 255)
    return rgba


def render_landcover(
    raster: GridRaster,
    mode: RenderMode = "dominant",
    class_index: int | None = None,
    *,
    max_size: int = 1024,
    unlike: NDArray[np.bool_] | None = None,
) -> Preview:
    """Colourise a 9-band probability raster and reproject it to EPSG:4326 for a web map.

    ``unlike`` (same grid) marks the cells shown as unlike the training data.

    Returns:
        A :class:`~backend.imagery.preview.Preview`: RGBA ``(h, w, 4)`` uint8 and (west, south,
        east,
        north) bounds. Output pixels are at most ``max_size`` per side and at least ~4 per cell.
    """
    rgba = colorize(raster.data, mode, class_index, unlike)
    h, w = rgba.shape[:2]
    t = raster.transform
    left, top = t.c, t.f
    right, bottom = t @ (w, h)
    bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
    target = min(max_size, max(256, 4 * max(h, w)))
    dst_t, dw, dh = calculate_default_transform(
        raster.crs, "EPSG:4326", w, h, *bounds, dst_width=None, dst_height=None
    )
    scale = target / max(int(dw or 1), int(dh or 1))
    dw2, dh2 = max(1, round(int(dw or 1) * scale)), max(1, round(int(dh or 1) * scale))
    dst_t, dw2, dh2 = calculate_default_transform(
        raster.crs, "EPSG:4326", w, h, *bounds, dst_width=dw2, dst_height=dh2
    )
    out = np.zeros((4, int(dh2 or 1), int(dw2 or 1)), dtype=np.uint8)
    for band in range(4):
        reproject(
            source=np.ascontiguousarray(rgba[..., band]),
            destination=out[band],
            src_transform=t,
            src_crs=raster.crs,
            dst_transform=dst_t,
            dst_crs="EPSG:4326",
            resampling=Resampling.nearest,
            src_nodata=None,
            dst_nodata=0,
        )
    west, north = dst_t.c, dst_t.f
    east, south = dst_t @ (out.shape[2], out.shape[1])
    return Preview(
        np.ascontiguousarray(out.transpose(1, 2, 0)),
        (float(west), float(south), float(east), float(north)),
    )
