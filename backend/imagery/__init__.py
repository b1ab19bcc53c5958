"""Imagery: where the pixels come from and how a region becomes tiles.

Sources (bundled, the user's own, STAC), band names, the windowed reader, regions, the tile grid,
per-pixel quality, normalisation, previews and raster writing. Imports nothing above it.
"""

from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import (
    Region,
    load_aoi,
    parse_bbox,
    parse_geojson,
    point_region,
    validate_region,
)
from backend.imagery.sources import (
    BandAsset,
    Grid,
    LabelLayer,
    SceneSource,
    SourceCatalog,
    demo_catalog,
    load_manifest,
)
from backend.imagery.tiling import (
    Tile,
    TilePlan,
    make_tile_id,
    parse_tile_id,
    plan_tiles,
    tile_from_id,
)

__all__ = [
    "BandAsset",
    "Grid",
    "LabelLayer",
    "PixelWindow",
    "Region",
    "SceneReader",
    "SceneSource",
    "SourceCatalog",
    "Tile",
    "TilePlan",
    "demo_catalog",
    "load_aoi",
    "load_manifest",
    "make_tile_id",
    "parse_bbox",
    "parse_geojson",
    "parse_tile_id",
    "plan_tiles",
    "point_region",
    "tile_from_id",
    "validate_region",
]
