"""Embedding sets as partitioned GeoParquet: written from a cache, attached to another, searched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import shapely

from backend.errors import CacheError, NoEmbeddingsError, NotFoundError
from backend.search.query import search
from backend.store.cache import EmbeddingCache
from backend.store.parquet_sets import (
    attach_parquet_sets,
    cache_part_name,
    parquet_sets,
    partition_path,
    write_parquet_set,
)


def test_written_geoparquet_is_partitioned_and_self_describing(
    embedded_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sets"
    with EmbeddingCache(embedded_db, read_only=True) as cache:
        info = write_parquet_set(cache, "test-vit", out, rows_per_group=5)
        (eset,) = cache.embedding_sets()
        ids, vectors = cache.embeddings(eset)
        tiles = {t["tile_id"]: t for t in cache.tiles(ids)}
        part = cache_part_name(cache)
    path = partition_path(out, "demo/virginia", "test-vit", eset.preprocessing_hash, part)
    assert info.files == (str(path),) and info.rows == 16 and info.dim == 48
    assert (
        path.parent.parent.name == "source=demo%2Fvirginia" and path.parent.name == "model=test-vit"
    )
    table = pq.read_table(path)
    assert table.num_rows == 16 and pq.ParquetFile(path).metadata.num_row_groups == 4
    np.testing.assert_array_equal(np.stack(table.column("vector").to_numpy(False)), vectors)
    assert table.column("tile_id").to_pylist() == ids
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    shapes = shapely.from_wkb(table.column("geometry").to_numpy(False))
    first = tiles[ids[0]]
    assert shapes[0].bounds == pytest.approx(
        (first["min_lon"], first["min_lat"], first["max_lon"], first["max_lat"])
    )
    meta = json.loads(table.schema.metadata[b"softmap"])
    assert meta["model_id"] == "test-vit" and meta["source"]["source_id"] == "demo/virginia"
    # Hive partitions as other tools read them (Arrow decodes the quoted value).
    ds = pads.dataset(out, format="parquet", partitioning="hive")
    assert set(ds.to_table(columns=["source"]).column("source").to_pylist()) == {"demo/virginia"}


def test_an_attached_set_is_searched_like_a_cached_one(embedded_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "sets"
    with EmbeddingCache(embedded_db, read_only=True) as cache:
        write_parquet_set(cache, "test-vit", out)
        (eset,) = cache.embedding_sets()
        ids, vectors = cache.embeddings(eset)
        expected = search(cache, "test-vit", tiles=[ids[5]], k=5, engine="exact")
    fresh = tmp_path / "attached.duckdb"
    with EmbeddingCache(fresh) as cache:
        (info,) = attach_parquet_sets(cache, out)
        again = attach_parquet_sets(cache, out)  # idempotent
        assert info.rows == 16 and again[0].rows == 16 and len(cache.embedding_sets()) == 1
        got_ids, got = cache.embeddings(cache.embedding_sets()[0])
        found = search(cache, "test-vit", tiles=[ids[5]], k=5, engine="exact")
        listed = parquet_sets(cache)
        assert len(cache.tiles(ids)) == 16 and cache.stats().sources == 1
    assert got_ids == ids
    np.testing.assert_allclose(got, vectors, rtol=0, atol=0)
    assert [r.tile_id for r in found.results] == [r.tile_id for r in expected.results]
    assert [r.score for r in found.results] == pytest.approx([r.score for r in expected.results])
    assert [s.sources for s in listed] == [("demo/virginia",)]


def test_mistakes_are_one_line(embedded_db: Path, tmp_path: Path) -> None:
    with EmbeddingCache(embedded_db, read_only=True) as cache:
        with pytest.raises(NoEmbeddingsError, match="no embeddings of softmap-default"):
            write_parquet_set(cache, "softmap-default", tmp_path / "x")
        with pytest.raises(NoEmbeddingsError, match="it has: demo/virginia"):
            write_parquet_set(cache, "test-vit", tmp_path / "x", sources=["demo/brandenburg"])
        write_parquet_set(cache, "test-vit", tmp_path / "sets")
    (tmp_path / "empty").mkdir()
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(embedded_db.read_bytes())
    with EmbeddingCache(copy) as cache:
        with pytest.raises(NotFoundError, match="holds no SoftMap Parquet embeddings"):
            attach_parquet_sets(cache, tmp_path / "empty")
        with pytest.raises(CacheError, match="already holds its own test-vit embeddings"):
            attach_parquet_sets(cache, tmp_path / "sets")


def test_caches_write_side_by_side_and_shared_tiles_count_once(
    embedded_db: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sets"
    other = tmp_path / "other.duckdb"  # another run whose region shared every tile
    other.write_bytes(embedded_db.read_bytes())
    for db in (embedded_db, other):
        with EmbeddingCache(db, read_only=True) as cache:
            write_parquet_set(cache, "test-vit", out)
    assert len(list(out.rglob("*.parquet"))) == 2
    with EmbeddingCache(tmp_path / "attached.duckdb") as cache:
        (info,) = attach_parquet_sets(cache, out)
        ids, _ = cache.embeddings(cache.embedding_sets()[0])
    assert info.rows == 16 and len(ids) == len(set(ids)) == 16 and len(info.files) == 2
