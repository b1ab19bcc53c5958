"""Per-tile cloud fraction: found on the bundled scenes, stored with tiles, usable as a filter."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from backend.embedding.pipeline import embed_region
from backend.imagery.quality import cloud_method
from backend.imagery.reader import SceneReader
from backend.imagery.regions import parse_bbox
from backend.imagery.scene_import import import_scene
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import plan_tiles
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from backend.store.quality import filter_tile_ids, tile_quality

from .conftest import VIRGINIA_SMALL_BBOX
from .test_scene_import import build_scenes

#: The whole bundled Brandenburg scene in lon/lat (the region check clips it to the scene).
BRANDENBURG_ALL = "12.50,52.45,12.75,52.54"


def cloud_by_tile(source: SceneSource, bbox: str, chip: int = 224) -> dict[str, float | None]:
    with SceneReader(source) as reader:
        plan = plan_tiles(parse_bbox(bbox), source, reader, chip=chip, max_nodata_fraction=1.0)
    return {t.tile_id.split("/")[-1]: t.cloud_fraction for t in plan.tiles}


def test_l1c_test_finds_the_brandenburg_cloud_streaks(brandenburg: SceneSource) -> None:
    assert cloud_method(brandenburg) == "cirrus+haze"
    cloud = cloud_by_tile(brandenburg, BRANDENBURG_ALL)
    assert len(cloud) == 28  # 7 × 4 tiles of 224 px
    # The thick part of the top streak (columns 1790-2240 m… of tile 0_4) and the bottom one.
    assert cloud["0_4"] is not None and cloud["0_4"] > 0.5
    assert cloud["3_2"] is not None and cloud["3_2"] > 0.3
    # The clear west of the scene (forest, fields, the lake; one bright roof) is not flagged.
    for row in range(4):
        for col in (0, 1):
            assert (cloud[f"{row}_{col}"] or 0) < 0.05, (row, col, cloud[f"{row}_{col}"])
    cloudy = sorted(t for t, f in cloud.items() if f and f > 0.1)
    assert cloudy == ["0_3", "0_4", "0_5", "1_3", "3_2"]


def test_cloud_free_virginia_stays_clear(virginia: SceneSource) -> None:
    cloud = cloud_by_tile(virginia, VIRGINIA_SMALL_BBOX, chip=112)
    assert len(cloud) > 9
    assert max(f or 0 for f in cloud.values()) < 0.05


def test_max_cloud_fraction_skips_tiles_and_the_fraction_is_stored(
    brandenburg: SceneSource, tmp_path: Path
) -> None:
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=32, readers=0)
    settings = Settings(db_path=tmp_path / "x.duckdb", max_nodata_fraction=1.0)
    region = parse_bbox("12.62,52.50,12.66,52.525")  # around the top streak
    with EmbeddingCache(tmp_path / "q.duckdb") as cache:
        everything = embed_region(region, brandenburg, model, cache, engine=engine,
                                  settings=settings)  # fmt: skip
        quality = tile_quality(cache, everything.tile_ids)
        cloudy = {t for t, q in quality.items() if (q.cloud_fraction or 0) > 0.3}
        assert 0 < len(cloudy) < everything.tiles
        clear = embed_region(region, brandenburg, model, cache, engine=engine,
                             settings=settings, max_cloud_fraction=0.3)  # fmt: skip
        assert (
            clear.skipped == len(cloudy)
            and set(clear.tile_ids) == set(everything.tile_ids) - cloudy
        )
        assert clear.computed == 0  # everything was cached by the first run
        kept = filter_tile_ids(cache, [*everything.tile_ids, "unknown/1/1/0_0"],
                               max_cloud_fraction=0.3)  # fmt: skip
        assert kept == [*clear.tile_ids, "unknown/1/1/0_0"]  # unknown tiles pass
        assert filter_tile_ids(cache, everything.tile_ids) == list(everything.tile_ids)
        (run, _) = cache.runs()
        assert '"max_cloud_fraction": 0.3' in run["params"]


def test_l2a_uses_its_scl_layer(brandenburg: SceneSource, tmp_path: Path) -> None:
    scenes = build_scenes(tmp_path, brandenburg)
    source = import_scene(scenes["safe_l2a"])
    assert cloud_method(source) == "scl"
    left, bottom, right, top = source.grid.bounds()
    from shapely.geometry import box

    from backend.imagery.sources import to_lonlat

    w, s, e, n = to_lonlat(box(left + 300, bottom + 300, right - 300, top - 300), source.crs).bounds
    cloud = cloud_by_tile(source, f"{w},{s},{e},{n}", chip=112)
    assert cloud["0_0"] == pytest.approx(1.0, abs=0.01)  # SCL 9 (cloud, high probability)
    assert cloud["0_1"] == pytest.approx(0.25, abs=0.02)  # SCL 3 (cloud shadow) on a quarter
    assert all(f == 0.0 for t, f in cloud.items() if t not in ("0_0", "0_1"))


_OLD_SCHEMA = """
CREATE TABLE sources (source_id TEXT PRIMARY KEY, title TEXT, sensor TEXT, product_level TEXT,
    date TEXT, crs TEXT, footprint JSON, summary JSON, registered_at TIMESTAMPTZ);
CREATE TABLE tiles (tile_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, chip INTEGER,
    stride INTEGER, "row" INTEGER, col INTEGER, col_off INTEGER, row_off INTEGER, width INTEGER,
    height INTEGER, footprint JSON, min_lon DOUBLE, min_lat DOUBLE, max_lon DOUBLE,
    max_lat DOUBLE, lon DOUBLE, lat DOUBLE, nodata_fraction DOUBLE);
INSERT INTO tiles VALUES ('demo/virginia/112/112/0_0', 'demo/virginia', 112, 112, 0, 0, 0, 0,
    112, 112, '{}', 0, 0, 0, 0, 0, 0, 0.9);
"""


def test_a_cache_from_before_the_quality_column_keeps_working(
    virginia: SceneSource, tmp_path: Path
) -> None:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(_OLD_SCHEMA)
    con.close()
    with EmbeddingCache(db, read_only=True) as cache:  # read-only: no migration, no failure
        assert cache.registered_source_manifests() == {}
        (q,) = tile_quality(cache, ["demo/virginia/112/112/0_0"]).values()
        assert q.cloud_fraction is None and q.nodata_fraction == 0.9
    with EmbeddingCache(db) as cache:  # opened for writing: the columns are added
        assert cache.has_column("tiles", "cloud_fraction")
        assert cache.has_column("sources", "manifest")
        result = embed_region(parse_bbox(VIRGINIA_SMALL_BBOX), virginia, create_model("test-vit"),
                              cache, settings=Settings(db_path=db))  # fmt: skip
        stored = tile_quality(cache, result.tile_ids)
        assert all(q.cloud_fraction is not None for q in stored.values())
        assert filter_tile_ids(cache, ["demo/virginia/112/112/0_0"], max_nodata_fraction=0.5) == []
