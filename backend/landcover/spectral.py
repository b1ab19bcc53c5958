"""Per-pixel spectral rules for what physics makes unambiguous, and per-cell spectral features.

Every rule works on top-of-atmosphere (L1C) or surface (L2A) reflectance, ``DN × dn_scale`` after
the product's offset (:class:`backend.imagery.reader.SceneReader` applies it), so one set of
thresholds serves both levels: water and snow are far from every threshold in either.

Rules (a pixel is one 10 m sample; 20 m bands are read on the 10 m grid):

``nodata``
    Any band of the test is 0 (the L1C/L2A no-data value) or not finite.
``cloud``
    L1C: thin cirrus ``B10 > 0.012`` (Sen2Cor's cirrus threshold), or haze/cloud by the
    haze-optimised transform ``HOT = B02 − 0.5·B04 − 0.08 > 0.02`` (Zhang, Guindon & Cihlar 2002,
    *Remote Sens. Environ.* 82, as used by Fmask, Zhu & Woodcock 2012) with ``B02 > 0.16``. L2A
    with SCL: classes 3, 8, 9, 10. These are the tests of :mod:`backend.imagery.quality`, per
    pixel instead of per 80 m block. Cloudy pixels get no label and no rule.
``water``
    ``NDWI = (B03 − B08)/(B03 + B08) > 0`` (McFeeters 1996, *Int. J. Remote Sens.* 17(7)) **and**
    ``MNDWI = (B03 − B11)/(B03 + B11) > 0`` (Xu 2006, *Int. J. Remote Sens.* 27(14)), both at the
    papers' own zero threshold, **and** ``B08 < 0.15`` **and** ``B11 < 0.02``: open water absorbs
    the NIR and all but absorbs the SWIR (water-leaving reflectance at 1.6 µm is close to 0 even
    for turbid water, the premise of SWIR atmospheric correction over water, Wang & Shi 2007,
    *Opt. Express* 15(24)). Checked on the bundled scenes: open sea and lagoons sit at
    B08 0.025–0.047, B11 0.005–0.009 (5–95 %), the Beetzsee at B11 ≈ 0.006–0.019. Requiring
    both indices and the SWIR test is what makes it unambiguous: on the bundled winter scenes
    MNDWI alone is positive over shaded pine forest in Brandenburg, and both indices are positive
    over 89 % of the wet, dormant salt marsh of Virginia, whose B11 (median 0.026) is what
    separates it; with the SWIR test 40 % of the marsh polygons' pixels pass, their tidal creeks
    and flooded pans. Lake ice with a thin or no snow cover passes too and is called water.
``snow``
    ``NDSI = (B03 − B11)/(B03 + B11) > 0.4`` with ``B08 > 0.11`` (Hall, Riggs & Salomonson 1995,
    *Remote Sens. Environ.* 54, the MODIS SNOWMAP test; the NIR test keeps water out) and
    ``B03 > 0.20`` (a brightness test as in Sen2Cor's snow detection). White surf and bright
    roofs pass it too (there is no thermal band): reference polygons override it
    (:mod:`backend.landcover.reference`).
``land``
    Valid, not cloud, ``NDWI < 0`` and ``MNDWI < 0``: clearly no open water. Everything else valid
    is *ambiguous* (wet marsh, shaded forest, mudflats), left to the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Bands the rules and features read (B10 only for the L1C cirrus test).
RULE_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")
#: Thresholds, with their sources in the module docstring.
NDWI_WATER = 0.0
MNDWI_WATER = 0.0
NIR_WATER_MAX = 0.15
SWIR_WATER_MAX = 0.02
NDSI_SNOW = 0.4
NIR_SNOW_MIN = 0.11
GREEN_SNOW_MIN = 0.20
CIRRUS_B10 = 0.012
HOT_CLOUD = 0.02
BLUE_CLOUD = 0.16
SCL_CLOUD = (3, 8, 9, 10)

#: The first spectral features (``spectral-v1``): band means, indices, two texture bands and
#: the rule shares.
SPECTRAL_V1: tuple[str, ...] = (
    "B02",
    "B03",
    "B04",
    "B08",
    "B11",
    "B12",
    "ndvi",
    "ndwi",
    "mndwi",
    "ndbi",
    "std_B08",
    "std_B04",
    "water_fraction",
    "snow_fraction",
    "land_fraction",
)
#: Within-cell texture at 10 m (towns are heterogeneous: roofs, gardens, streets and trees
#: side by side), appended after :data:`SPECTRAL_V1` in three copies: the cell itself, the mean
#: over its 3 × 3 neighbourhood of cells in the tile, and the mean over the whole tile.
TEXTURE_NAMES: tuple[str, ...] = (
    "std_B02",
    "std_B03",
    "std_B11",
    "std_B12",
    "std_ndvi",
    "std_ndbi",
    "grad_B08",
    "grad_B04",
)
#: Per-cell spectral features appended to the embedding by spectral heads, in this order.
FEATURE_NAMES: tuple[str, ...] = (
    *SPECTRAL_V1,
    *TEXTURE_NAMES,
    *(f"nb_{n}" for n in TEXTURE_NAMES),
    *(f"tile_{n}" for n in TEXTURE_NAMES),
)
#: Name of this feature set, recorded with a head that uses it.
FEATURE_SET = "spectral-v2"
#: Feature set → how many leading columns of :data:`FEATURE_NAMES` it reads (older heads read a
#: prefix of the current features).
FEATURE_COLUMNS: dict[str, int] = {
    "spectral-v1": len(SPECTRAL_V1),
    "spectral-v2": len(FEATURE_NAMES),
}


def _ratio(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (a + b)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


@dataclass(frozen=True)
class PixelRules:
    """Boolean masks ``(…, h, w)`` of the rules (see the module docstring); disjoint except valid.

    ``water``, ``snow``, ``land`` and ``ambiguous`` partition the valid, cloud-free pixels.
    """

    valid: NDArray[np.bool_]
    cloud: NDArray[np.bool_]
    water: NDArray[np.bool_]
    snow: NDArray[np.bool_]
    land: NDArray[np.bool_]

    @property
    def clear(self) -> NDArray[np.bool_]:
        """Valid and cloud-free."""
        out: NDArray[np.bool_] = self.valid & ~self.cloud
        return out

    @property
    def ambiguous(self) -> NDArray[np.bool_]:
        out: NDArray[np.bool_] = self.clear & ~self.water & ~self.snow & ~self.land
        return out


def pixel_rules(
    reflectance: Mapping[str, NDArray[np.floating]],
    *,
    scl: NDArray[np.integer] | None = None,
) -> PixelRules:
    """The per-pixel rules of reflectance bands (``B02 B03 B04 B08 B11``, optionally ``B10``).

    Args:
        reflectance: Band name → reflectance array, all the same shape (0 = no data).
        scl: The L2A scene classification layer on the same grid, when the product has one.
    """
    g = np.asarray(reflectance["B03"], dtype=np.float32)
    blue = np.asarray(reflectance["B02"], dtype=np.float32)
    red = np.asarray(reflectance["B04"], dtype=np.float32)
    nir = np.asarray(reflectance["B08"], dtype=np.float32)
    swir = np.asarray(reflectance["B11"], dtype=np.float32)
    valid = np.ones(g.shape, dtype=bool)
    for band in (blue, g, red, nir, swir):
        valid &= np.isfinite(band) & (band > 0)
    if scl is not None:
        cloud = np.isin(np.asarray(scl), SCL_CLOUD)
    else:
        cloud = ((blue - 0.5 * red - 0.08) > HOT_CLOUD) & (blue > BLUE_CLOUD)
        if "B10" in reflectance:
            cloud |= np.asarray(reflectance["B10"], dtype=np.float32) > CIRRUS_B10
    cloud &= valid
    clear = valid & ~cloud
    ndwi = _ratio(g, nir)
    mndwi = _ratio(g, swir)
    water = (
        clear
        & (ndwi > NDWI_WATER)
        & (mndwi > MNDWI_WATER)
        & (nir < NIR_WATER_MAX)
        & (swir < SWIR_WATER_MAX)
    )
    snow = clear & ~water & (mndwi > NDSI_SNOW) & (nir > NIR_SNOW_MIN) & (g > GREEN_SNOW_MIN)
    land = clear & ~water & ~snow & (ndwi < 0) & (mndwi < 0)
    return PixelRules(valid, cloud, water, snow, land)


def stack_reflectance(
    data: NDArray[np.floating], bands: Sequence[str], dn_scale: float
) -> dict[str, NDArray[np.float32]]:
    """Band name → reflectance of a ``(c, h, w)`` (or ``(n, c, h, w)``) DN stack."""
    arr = np.asarray(data, dtype=np.float32)
    axis = arr.ndim - 3
    return {
        b: np.take(arr, i, axis=axis) * np.float32(dn_scale)
        for i, b in enumerate(bands)
        if b in (*RULE_BANDS, "B10")
    }


def cell_features(
    reflectance: Mapping[str, NDArray[np.floating]],
    grid: int,
    *,
    scl: NDArray[np.integer] | None = None,
) -> NDArray[np.float32]:
    """Spectral features (:data:`FEATURE_NAMES`) of ``grid × grid`` cells of tiles.

    Args:
        reflectance: Band → ``(n, h, w)`` reflectance of ``n`` tiles (``h``, ``w`` divisible by
            ``grid``).
        grid: Cells per tile side (1: one cell per tile).
        scl: ``(n, h, w)`` SCL classes (L2A), if any.

    Returns:
        ``(n, grid, grid, 15)`` float32: mean reflectance of six bands over the clear pixels,
        mean NDVI, NDWI, MNDWI and NDBI, the standard deviation of B08 and B04 (texture), the
        water, snow and land fractions of the clear pixels (:data:`SPECTRAL_V1`), then
        :data:`TEXTURE_NAMES` (standard deviations and the mean absolute difference between
        neighbouring pixels) of the cell, of its 3 × 3 neighbourhood of cells and of the whole
        tile. A cell without a clear pixel gets zeros.
    """
    rules = pixel_rules(reflectance, scl=scl)
    b = {k: np.asarray(v, dtype=np.float32) for k, v in reflectance.items()}
    n, h, w = b["B03"].shape
    ch, cw = h // grid, w // grid

    def cells(a: NDArray[np.floating]) -> NDArray[np.float32]:
        out = a.reshape(n, grid, ch, grid, cw).transpose(0, 1, 3, 2, 4).reshape(n, grid, grid, -1)
        return np.asarray(out, dtype=np.float32)

    clear = cells(rules.clear.astype(np.float32))
    count = clear.sum(axis=-1)
    denom = np.maximum(count, 1.0)

    def mean(a: NDArray[np.floating]) -> NDArray[np.float32]:
        return np.asarray((cells(a) * clear).sum(axis=-1) / denom, dtype=np.float32)

    def std(a: NDArray[np.floating]) -> NDArray[np.float32]:
        m = mean(a)
        sq = (cells(np.square(a)) * clear).sum(axis=-1) / denom
        return np.asarray(np.sqrt(np.maximum(sq - m * m, 0.0)), dtype=np.float32)

    feats = [mean(b[name]) for name in RULE_BANDS]
    feats += [
        mean(_ratio(b["B08"], b["B04"])),
        mean(_ratio(b["B03"], b["B08"])),
        mean(_ratio(b["B03"], b["B11"])),
        mean(_ratio(b["B11"], b["B08"])),
        std(b["B08"]),
        std(b["B04"]),
        mean(rules.water.astype(np.float32)),
        mean(rules.snow.astype(np.float32)),
        mean(rules.land.astype(np.float32)),
    ]
    ndvi, ndbi = _ratio(b["B08"], b["B04"]), _ratio(b["B11"], b["B08"])
    tex = np.stack(
        [std(b["B02"]), std(b["B03"]), std(b["B11"]), std(b["B12"]), std(ndvi), std(ndbi),
         mean(_gradient(b["B08"])), mean(_gradient(b["B04"]))],
        axis=-1,
    )  # fmt: skip
    tex[count == 0] = 0.0
    padded = np.pad(tex, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    around = sum(padded[:, i : i + grid, j : j + grid] for i in range(3) for j in range(3)) / 9
    tile = np.broadcast_to(tex.mean(axis=(1, 2), keepdims=True), tex.shape)
    out = np.concatenate([np.stack(feats, axis=-1), tex, around, tile], axis=-1)
    out[count == 0] = 0.0
    return out.astype(np.float32)


def _gradient(a: NDArray[np.float32]) -> NDArray[np.float32]:
    """``|∂x| + |∂y|`` of ``(n, h, w)`` by forward differences (0 on the last column and row)."""
    gx = np.abs(np.diff(a, axis=-1, append=a[..., -1:]))
    gy = np.abs(np.diff(a, axis=-2, append=a[..., -1:, :]))
    return np.asarray(gx + gy, dtype=np.float32)


def rule_fractions(
    reflectance: Mapping[str, NDArray[np.floating]],
    grid: int,
    *,
    scl: NDArray[np.integer] | None = None,
) -> NDArray[np.float32]:
    """``(n, grid, grid, 3)`` shares of water, land and ambiguous among each cell's pixels.

    Cloudy and nodata pixels count as ambiguous, so the three shares sum to 1 (the model decides
    there). Used by :func:`apply_water_rule`.
    """
    rules = pixel_rules(reflectance, scl=scl)
    n, h, w = rules.valid.shape
    ch, cw = h // grid, w // grid

    def share(mask: NDArray[np.bool_]) -> NDArray[np.float32]:
        cells = mask.reshape(n, grid, ch, grid, cw).transpose(0, 1, 3, 2, 4)
        return np.asarray(cells.reshape(n, grid, grid, -1).mean(axis=-1), dtype=np.float32)

    water = share(rules.water)
    land = share(rules.land | rules.snow)
    return np.stack([water, land, np.clip(1.0 - water - land, 0.0, 1.0)], axis=-1)


def apply_water_rule(
    probabilities: NDArray[np.floating], fractions: NDArray[np.floating], water_index: int = 0
) -> NDArray[np.float32]:
    """Combine a head's probabilities with the water rule's shares of a cell.

    ``p = w·e_water + l·p_land + a·p`` where ``w``, ``l``, ``a`` are the cell's water, clear-land
    and ambiguous shares, ``p`` the head's distribution and ``p_land`` the same with water removed
    and renormalised: the rule decides water where it is unambiguous (either way) and the head
    decides the rest. Rows still sum to 1.

    Args:
        probabilities: ``(..., 9)`` head probabilities.
        fractions: ``(..., 3)`` from :func:`rule_fractions`, same leading shape.
        water_index: The water class's index.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    f = np.asarray(fractions, dtype=np.float64)
    w, land, amb = f[..., 0:1], f[..., 1:2], f[..., 2:3]
    no_water = p.copy()
    no_water[..., water_index] = 0.0
    s = no_water.sum(axis=-1, keepdims=True)
    # A head certain of water on clear land leaves nothing to renormalise: spread it evenly.
    fallback = np.full_like(no_water, 1.0 / (p.shape[-1] - 1))
    fallback[..., water_index] = 0.0
    p_land = np.where(s > 1e-9, no_water / np.maximum(s, 1e-12), fallback)
    onehot = np.zeros_like(p)
    onehot[..., water_index] = 1.0
    out = w * onehot + land * p_land + amb * p
    out /= out.sum(axis=-1, keepdims=True)
    return out.astype(np.float32)
