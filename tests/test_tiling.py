"""Tiling: grid alignment, deterministic ids, footprints and nodata fractions on real scenes."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from backend.errors import InvalidRegionError, NotFoundError
from backend.imagery.reader import SceneReader
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import make_tile_id, parse_tile_id, plan_tiles


def _whole_scene(source: SceneSource) -> Region:
    w, s, e, n = source.bbox_lonlat
    return parse_bbox(f"{w - 0.01},{s - 0.01},{e + 0.01},{n + 0.01}")


def test_tile_id_round_trip() -> None:
    tid = make_tile_id("demo/virginia", 224, 112, 3, 17)
    assert tid == "demo/virginia/224/112/3_17"
    assert parse_tile_id(tid) == ("demo/virginia", 224, 112, 3, 17)
    with pytest.raises(NotFoundError, match="not a tile id"):
        parse_tile_id("demo/virginia/3_17")


def test_whole_scene_counts_and_edge_nodata(virginia: SceneSource) -> None:
    # 1933 × 1947 px at chip 224: 9 columns and 9 rows of tiles, the last ones padded.
    with SceneReader(virginia) as reader:
        plan = plan_tiles(
            _whole_scene(virginia), virginia, reader, chip=224, max_nodata_fraction=0.5
        )
    assert plan.total == 81
    by_cell = {(t.row, t.col): t for t in plan.tiles + plan.skipped}
    assert set(by_cell) == {(r, c) for r in range(9) for c in range(9)}
    # Interior tiles are complete; the last column holds 141 of 224 px, the last row 155.
    assert by_cell[(3, 3)].nodata_fraction == 0.0
    step = 8 / 224  # nodata is checked on 8 px blocks
    assert by_cell[(3, 8)].nodata_fraction == pytest.approx(1 - 141 / 224, abs=step)
    assert by_cell[(8, 3)].nodata_fraction == pytest.approx(1 - 155 / 224, abs=step)
    corner = by_cell[(8, 8)]
    assert corner.nodata_fraction == pytest.approx(1 - (141 * 155) / 224**2, abs=2 * step)
    assert corner in plan.skipped  # 0.56 > 0.5
    assert len(plan.skipped) == 1


def test_nodata_limit_is_configurable(virginia: SceneSource) -> None:
    with SceneReader(virginia) as reader:
        strict = plan_tiles(
            _whole_scene(virginia), virginia, reader, chip=224, max_nodata_fraction=0.0
        )
    assert len(strict.skipped) == 17  # the whole last row and column
    assert len(strict.tiles) == 64


def test_footprints_round_trip_to_pixel_windows(
    virginia: SceneSource, small_region: Region
) -> None:
    with SceneReader(virginia) as reader:
        plan = plan_tiles(small_region, virginia, reader, chip=112)
    assert 9 <= len(plan.tiles) <= 25
    to_utm = Transformer.from_crs("EPSG:4326", virginia.crs, always_xy=True)
    inv = ~virginia.grid.affine
    for tile in plan.tiles:
        lon, lat = tile.footprint.exterior.xy
        xs, ys = to_utm.transform(np.array(lon), np.array(lat))
        cols, rows = zip(*(inv @ (x, y) for x, y in zip(xs, ys, strict=True)), strict=True)
        w = tile.window
        assert min(cols) == pytest.approx(w.col_off, abs=1e-6)
        assert max(cols) == pytest.approx(w.col_off + w.width, abs=1e-6)
        assert min(rows) == pytest.approx(w.row_off, abs=1e-6)
        assert max(rows) == pytest.approx(w.row_off + w.height, abs=1e-6)
        assert tile.footprint.intersects(small_region.geometry)
        lon_c, lat_c = tile.centroid
        assert tile.footprint.contains(tile.footprint.centroid)
        assert -75.7 < lon_c < -75.6 and 37.6 < lat_c < 37.7


def test_ids_are_the_same_from_overlapping_regions(virginia: SceneSource) -> None:
    a = parse_bbox("-75.66,37.64,-75.63,37.67")
    b = parse_bbox("-75.65,37.65,-75.62,37.68")
    with SceneReader(virginia) as reader:
        ta = {t.tile_id: t for t in plan_tiles(a, virginia, reader, chip=112).tiles}
        tb = {t.tile_id: t for t in plan_tiles(b, virginia, reader, chip=112).tiles}
    shared = set(ta) & set(tb)
    assert shared
    for tid in shared:
        assert ta[tid].window == tb[tid].window
        assert ta[tid].footprint.equals(tb[tid].footprint)


def test_stride_overlap_and_tiny_region(virginia: SceneSource) -> None:
    with SceneReader(virginia) as reader:
        one = plan_tiles(
            parse_bbox("-75.6501,37.6501,-75.6500,37.6502"), virginia, reader, chip=224
        )
        assert one.total == 1
        half = plan_tiles(
            parse_bbox("-75.6501,37.6501,-75.6500,37.6502"), virginia, reader, chip=224, stride=112
        )
        assert half.total == 4  # every point lies in 2×2 half-overlapping tiles
        assert {t.tile_id.split("/")[3] for t in half.tiles} == {"112"}


def test_region_outside_the_grid_is_refused(virginia: SceneSource) -> None:
    with (
        SceneReader(virginia) as reader,
        pytest.raises(InvalidRegionError, match="outside the scene"),
    ):
        plan_tiles(parse_bbox("-75.0,37.0,-74.9,37.1"), virginia, reader, chip=224)
