"""The DuckDB cache: schema, embedding sets, batch writes, lock and corruption handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.errors import CacheError, CacheLockedError
from backend.store.cache import EmbeddingCache

from .conftest import another_process_holding


def test_embedding_round_trip_is_exact(db_path: Path) -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 48)).astype(np.float32)
    ids = [f"demo/virginia/112/112/0_{i}" for i in range(5)]
    with EmbeddingCache(db_path) as cache:
        eset = cache.embedding_set("test-vit", "abc", 48, {"bands": ["B01"]})
        assert eset is not None and eset.dim == 48
        assert cache.embedding_set("test-vit", "abc") == eset
        assert cache.embedding_set("test-vit", "other") is None
        cache.write_embeddings(eset, ids[:3], vectors[:3])
        cache.write_embeddings(eset, ids, vectors)  # the first three are already there
        assert cache.cached_tile_ids(eset, [*ids, "nope"]) == set(ids)
        got_ids, got = cache.embeddings(eset)
        assert got_ids == sorted(ids)
        np.testing.assert_array_equal(got, vectors[np.argsort(ids)])
        sub_ids, sub = cache.embeddings(eset, ids[1:2])
        assert sub_ids == ids[1:2] and sub.shape == (1, 48)
        assert cache.stats().embeddings == 5
        with pytest.raises(CacheError, match="dimension 48"):
            cache.embedding_set("test-vit", "abc", 384)


def test_stale_running_runs_are_marked_interrupted(db_path: Path) -> None:
    with EmbeddingCache(db_path) as cache:
        run_id = cache.start_run(
            source_id="demo/virginia", model_id="test-vit", preprocessing_hash="abc",
            region={}, params={}, tiles_total=3, cached=0, skipped=0, device="cpu",
        )  # fmt: skip
        assert cache.runs()[0]["status"] == "running"
    with EmbeddingCache(db_path) as cache:
        run = cache.runs()[0]
    assert run["run_id"] == run_id and run["status"] == "interrupted"


def test_second_process_gets_a_clear_lock_error(db_path: Path) -> None:
    EmbeddingCache(db_path).close()
    with another_process_holding(db_path) as pid:
        for read_only in (False, True):
            with pytest.raises(CacheLockedError, match=f"in use by process {pid}"):
                EmbeddingCache(db_path, read_only=read_only)
    EmbeddingCache(db_path).close()  # usable again once the holder is gone


def test_not_a_database_is_a_cache_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.duckdb"
    bogus.write_bytes(b"this is not a duckdb file" * 1000)
    with pytest.raises(CacheError, match=r"not a usable SoftMap cache|Cannot open"):
        EmbeddingCache(bogus)
    with pytest.raises(CacheError, match="does not exist yet"):
        EmbeddingCache(tmp_path / "absent.duckdb", read_only=True)


def test_single_threaded_restores_the_thread_count(db_path: Path) -> None:
    with EmbeddingCache(db_path) as cache:
        before = cache._con.execute("SELECT current_setting('threads')").fetchone()
        with cache.single_threaded():
            assert cache._con.execute("SELECT current_setting('threads')").fetchone() == (1,)
        assert cache._con.execute("SELECT current_setting('threads')").fetchone() == before
