"""Tile thumbnails, tile grids and point lookups of backend.imagery.preview on the bundled
scenes."""

from __future__ import annotations

import numpy as np
import pytest

from backend.errors import NotFoundError
from backend.imagery.preview import (
    composite_stretch,
    region_grid_geojson,
    tile_at,
    tile_grid_geojson,
    tile_rgba,
    tile_thumbnail,
)
from backend.imagery.regions import parse_bbox, point_region
from backend.imagery.sources import SceneSource
from tests.conftest import VIRGINIA_SMALL_BBOX


def test_tile_thumbnail_is_a_png_of_the_tile(virginia: SceneSource) -> None:
    tile_id = tile_at(virginia, -75.64, 37.655, 112)
    assert tile_id == "demo/virginia/112/112/10_6"
    png = tile_thumbnail(virginia, tile_id, size=64)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    rgba = tile_rgba(virginia, tile_id)
    assert rgba.shape == (112, 112, 4)
    assert (rgba[..., 3] == 255).all()  # inside the scene: no nodata
    assert rgba[..., :3].std() > 5  # real imagery, not a flat fill
    # True and false colour differ (NIR replaces blue).
    assert not np.array_equal(rgba, tile_rgba(virginia, tile_id, "false"))
    lo, hi = composite_stretch(virginia)
    assert (hi > lo).all()


def test_tile_of_another_scene_is_refused(virginia: SceneSource) -> None:
    with pytest.raises(NotFoundError, match="belongs to demo/brandenburg"):
        tile_thumbnail(virginia, "demo/brandenburg/112/112/3_7")


def test_region_grid_matches_the_tiles_the_pipeline_plans(virginia: SceneSource) -> None:
    grid = region_grid_geojson(parse_bbox(VIRGINIA_SMALL_BBOX), virginia, 112)
    ids = [f["properties"]["tile_id"] for f in grid["features"]]
    assert len(ids) == 16 and ids[0] == "demo/virginia/112/112/8_5"
    assert tile_at(virginia, -75.64, 37.655, 112) in ids
    assert tile_at(virginia, 0.0, 0.0, 112) is None
    records = [
        {"tile_id": i, "row": 0, "col": 0, "nodata_fraction": 0.0, "footprint": f["geometry"]}
        for i, f in zip(ids, grid["features"], strict=True)
    ]
    assert tile_grid_geojson(records)["features"][0]["properties"]["tile_id"] == ids[0]


def test_point_region_is_a_square_of_the_asked_size() -> None:
    region = point_region(-75.64, 37.655, 1680.0)
    assert region.area_km2 == pytest.approx(3.36**2, rel=0.01)
    w, s, e, n = region.bounds
    assert w < -75.64 < e and s < 37.655 < n
