"""Per-tile image quality: the fraction of a tile's valid pixels that is cloud (or shadow).

The cloud fraction is measured when tiles are planned, from reduced-resolution reads (the same
``step``-pixel blocks as the nodata check, 80 m for the default models, served from overviews),
so it costs a few small reads per region. It is stored with the tile (``tiles.cloud_fraction``)
and can filter tiles: ``max_cloud_fraction`` in :func:`backend.embedding.pipeline.embed_region` and
:func:`backend.imagery.tiling.plan_tiles`, and :func:`backend.store.quality.filter_tile_ids` for
search and maps.

How a block is called cloudy depends on the product:

``scl`` (L2A with its scene classification layer)
    SCL classes 3 (cloud shadow), 8 (cloud, medium probability), 9 (cloud, high probability)
    and 10 (thin cirrus), sampled with nearest neighbour.
``cirrus+haze`` (L1C)
    Top-of-atmosphere reflectance (DN + offset) × 1e-4, averaged over the block:

    - cirrus: B10 > 0.012 (Sen2Cor's thin-cirrus threshold; B10 sees only high ice cloud), or
    - haze/cloud: the haze-optimised transform HOT = B02 − 0.5·B04 − 0.08 > 0.02 (Zhang et
      al. 2002, as in Fmask) and B02 > 0.16 (bright in blue).

    On the bundled Brandenburg scene this finds the thin cloud and contrail streaks (about 6 %
    of the scene) whose B10 stays at 20 DN (they are low cloud, invisible to the cirrus band);
    on the cloud-free Virginia scene it flags 0.8 %, all of it the bright surf line on the
    barrier-island beaches. Snow, bright sand and white roofs can pass the test too.
``haze`` (L2A without SCL)
    The haze/cloud test above on surface reflectance.

Sentinel-1 sees through clouds: its tiles have no cloud fraction (``None``), which every filter
lets through, as it does tiles measured before this column existed.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SceneSource

#: SCL classes counted as cloud: 3 cloud shadow, 8/9 cloud medium/high probability, 10 cirrus.
SCL_CLOUD_CLASSES: tuple[int, ...] = (3, 8, 9, 10)
#: B10 (1375 nm) TOA reflectance above which a block is thin cirrus.
CIRRUS_B10_REFLECTANCE = 0.012
#: Haze-optimised transform (B02 − 0.5·B04 − 0.08) above which a bright block is haze/cloud.
HOT_THRESHOLD = 0.02
#: Blue (B02) reflectance a block must exceed to be haze/cloud (dark water and forest do not).
BRIGHT_B02_REFLECTANCE = 0.16

CloudMethod = Literal["scl", "cirrus+haze", "haze"]


def cloud_method(source: SceneSource) -> CloudMethod | None:
    """Which cloud test applies to a source, or None (Sentinel-1, or bands missing)."""
    if source.units != "dn":
        return None
    have = set(source.band_names)
    if source.scl is not None:
        return "scl"
    if {"B02", "B04", "B10"} <= have:
        return "cirrus+haze"
    if {"B02", "B04"} <= have:
        return "haze"
    return None


def cloud_blocks(reader: SceneReader, window: PixelWindow, step: int) -> NDArray[np.bool_] | None:
    """Cloudy ``step``×``step`` blocks of a window (see the module docstring), or None.

    Returns None when no cloud test applies to the source (Sentinel-1).
    """
    source = reader.source
    method = cloud_method(source)
    if method is None:
        return None
    if method == "scl":
        assert source.scl is not None
        (scl,) = reader.read_blocks(window, step, [source.scl], resampling="nearest")
        return np.isin(scl.astype(np.int32), SCL_CLOUD_CLASSES)
    by_name = {b.name: b for b in source.bands}
    names = ["B02", "B04"] + (["B10"] if method == "cirrus+haze" else [])
    data = reader.read_blocks(window, step, [by_name[n] for n in names], resampling="average")
    refl = data * np.float32(source.dn_scale)
    blue, red = refl[0], refl[1]
    hot = blue - 0.5 * red - 0.08
    cloudy: NDArray[np.bool_] = (hot > HOT_THRESHOLD) & (blue > BRIGHT_B02_REFLECTANCE)
    if method == "cirrus+haze":
        cloudy |= refl[2] > CIRRUS_B10_REFLECTANCE
    return cloudy
