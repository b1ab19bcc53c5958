"""Exports open in standard tools: GeoJSON (json), GeoParquet (pyarrow + shapely), COG (rasterio),
CSV (csv); values and geometries round-trip."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from shapely.geometry import shape

from backend.classes import user_classes as uc
from backend.cli import main
from backend.errors import SoftMapError
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import parse_tile_id
from backend.outputs.exports import (
    export_areas_csv,
    export_embeddings,
    export_probability_map,
    export_tiles,
)
from backend.store.cache import EmbeddingCache
from backend.store.scopes import resolve_scope

from .conftest import VIRGINIA_SMALL_BBOX, embed_test_vit


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, virginia: SceneSource) -> Path:
    path = tmp_path_factory.mktemp("exports") / "cache.duckdb"
    embed_test_vit(path, virginia, VIRGINIA_SMALL_BBOX)
    return path


def test_tiles_as_geojson_and_geoparquet(db: Path, tmp_path: Path) -> None:
    with EmbeddingCache(db, read_only=True) as cache:
        ids = list(resolve_scope(cache, "test-vit").tile_ids)
        tiles = cache.tiles(ids)
        score = np.linspace(0, 1, len(ids))
        cols = {"score": score, "label": [f"c{i % 3}" for i in range(len(ids))]}
        gj = export_tiles(tmp_path / "t.geojson", cache, ids, cols)
        gp = export_tiles(tmp_path / "t.parquet", cache, ids, cols)
        with pytest.raises(SoftMapError, match="format"):
            export_tiles(tmp_path / "t.shp", cache, ids, cols)
        with pytest.raises(SoftMapError, match="not in the cache"):
            export_tiles(tmp_path / "x.geojson", cache, ["demo/virginia/112/112/99_99"])
    assert gj.rows == gp.rows == len(ids) == 16

    data = json.loads(Path(gj.path).read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 16
    f0 = data["features"][0]
    assert f0["properties"]["tile_id"] == ids[0] and f0["properties"]["label"] == "c0"
    assert shape(f0["geometry"]).equals(shape(json.loads(tiles[0]["footprint"])))
    assert [f["properties"]["score"] for f in data["features"]] == pytest.approx(score)

    table = pq.read_table(gp.path)
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Polygon"]
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    geoms = shapely.from_wkb(table.column("geometry").to_pylist())
    for g, t in zip(geoms, tiles, strict=True):
        assert g.equals(shape(json.loads(t["footprint"])))
    w, s, e, n = col["bbox"]
    assert (w, s) == pytest.approx(
        (min(t["min_lon"] for t in tiles), min(t["min_lat"] for t in tiles))
    )
    assert (e, n) == pytest.approx(
        (max(t["max_lon"] for t in tiles), max(t["max_lat"] for t in tiles))
    )
    bbox = table.column("bbox").to_pylist()[0]
    assert bbox["xmin"] == pytest.approx(tiles[0]["min_lon"])
    np.testing.assert_allclose(table.column("score").to_numpy(), score)
    assert table.column("tile_id").to_pylist() == ids


def test_embeddings_parquet_round_trip(db: Path, tmp_path: Path) -> None:
    with EmbeddingCache(db, read_only=True) as cache:
        scope = resolve_scope(cache, "test-vit")
        ids, vectors = cache.embeddings(scope.eset)
        result = export_embeddings(tmp_path / "emb.parquet", cache, scope.eset)
    table = pq.read_table(result.path)
    assert table.column("tile_id").to_pylist() == ids
    assert set(table.column("model_id").to_pylist()) == {"test-vit"}
    emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (16, 48) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb, vectors)
    assert b"geo" in table.schema.metadata


def test_probability_map_cog_and_area_csv(db: Path, tmp_path: Path, virginia: SceneSource) -> None:
    with EmbeddingCache(db) as cache:
        scope = resolve_scope(cache, "test-vit")
        ids = list(scope.tile_ids)
        probs = np.linspace(0.05, 0.95, len(ids))
        result = export_probability_map(tmp_path / "p.tif", virginia, ids, probs, ["water"])
        uc.add_labels(cache, "water", ids[:4], positive=True)
        uc.add_labels(cache, "water", ids[-4:], positive=False)
        from backend.classes.classifier import classify_scope

        areas = classify_scope(cache, "water", scope).areas(cache)
    with rasterio.open(result.path) as ds:
        assert ds.crs.to_epsg() == 32618 and ds.count == 1 and ds.descriptions == ("water",)
        assert ds.res == (1120.0, 1120.0)  # one cell per 112 px tile of 10 m pixels
        assert ds.tags()["source"] == "demo/virginia"
        grid = ds.read(1)
        rows = [parse_tile_id(t)[3] for t in ids]
        cols = [parse_tile_id(t)[4] for t in ids]
        for t, p, r, c in zip(ids, probs, rows, cols, strict=True):
            assert grid[r - min(rows), c - min(cols)] == pytest.approx(p, abs=1e-6), t
    csv_result = export_areas_csv(tmp_path / "a.csv", areas, {"model": "test-vit"})
    with open(csv_result.path, newline="") as f:
        rows_out = list(csv.DictReader(f))
    assert [r["name"] for r in rows_out] == ["not water", "water"]
    assert rows_out[0]["model"] == "test-vit"
    assert float(rows_out[1]["low_km2"]) <= float(rows_out[1]["expected_km2"])
    total = sum(float(r["expected_km2"]) for r in rows_out)
    assert total == pytest.approx(sum(a.expected_km2 for a in areas))


def test_cli_exports(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EmbeddingCache(db) as cache:
        ids = list(resolve_scope(cache, "test-vit").tile_ids)
        uc.add_labels(cache, "town", ids[:3], positive=True)
        uc.add_labels(cache, "town", ids[-3:], positive=False)
    base = ["--model", "test-vit", "--db", str(db), "--json"]
    outs = {
        "predictions": tmp_path / "town.parquet",
        "map": tmp_path / "town.tif",
        "areas": tmp_path / "town.csv",
        "embeddings": tmp_path / "emb.parquet",
    }
    for kind, path in outs.items():
        extra = [] if kind == "embeddings" else ["--class", "town"]
        assert main(["export", kind, *extra, "--out", str(path), *base]) == 0, kind
        out = json.loads(capsys.readouterr().out)
        assert out["path"] == str(path) and path.exists()
    assert "probability" in pq.read_table(outs["predictions"]).column_names
    with rasterio.open(outs["map"]) as ds:
        assert ds.count == 1 and ds.tags()["class"] == "town"
    assert len(pq.read_table(outs["embeddings"])) == 16
    assert main(["export", "map", "--out", str(tmp_path / "x.tif"), *base]) == 2
    assert "--class" in capsys.readouterr().err
    assert main(["export", "predictions", "--class", "town", "--out", str(tmp_path / "x.txt"),
                 *base]) == 2  # fmt: skip
    assert ".geojson (GeoJSON)" in capsys.readouterr().err
