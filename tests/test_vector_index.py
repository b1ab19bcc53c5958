"""The vector index: exact scan equals brute force, HNSW recall, filters, sync with the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.search.index import (
    HNSW_MIN_VECTORS,
    VectorIndex,
    get_index,
    normalise,
    sync_index,
)
from backend.store.cache import EmbeddingCache


def clustered(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Gaussian clusters in an 8-d subspace plus noise, like real embeddings."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(16, 8)) * 3
    low = centers[rng.integers(0, 16, n)] + rng.normal(size=(n, 8))
    x = low @ rng.normal(size=(8, dim)) + 0.3 * rng.normal(size=(n, dim))
    return x.astype(np.float32)


def test_exact_equals_brute_force_with_filters() -> None:
    x = clustered(3000)
    index = VectorIndex.from_arrays([f"t{i}" for i in range(len(x))], x)
    unit = normalise(x)
    q = x[7] + 0.1
    brute = np.argsort(-(unit @ normalise(q)), kind="stable")
    top = index.top(q, 10, engine="exact")
    assert top.rows.tolist() == brute[:10].tolist()
    np.testing.assert_allclose(top.scores, (unit @ normalise(q))[brute[:10]], rtol=1e-5)
    excluded = index.top(q, 10, exclude=brute[:3], engine="exact")
    assert excluded.rows.tolist() == brute[3:13].tolist()
    rows = np.arange(0, 3000, 2)
    scoped = index.top(q, 5, rows=rows, exclude=brute[:1], engine="exact")
    assert all(r % 2 == 0 for r in scoped.rows) and brute[0] not in scoped.rows


def test_hnsw_recall_and_incremental_add() -> None:
    x = clustered(6000)
    index = VectorIndex.from_arrays([f"t{i}" for i in range(5000)], x[:5000])
    index.build_hnsw()
    index.add([f"t{i}" for i in range(5000, 6000)], x[5000:])  # extends the graph too
    assert index.has_hnsw and len(index) == 6000
    queries = x[::97] + 0.05
    hits = 0
    for q in queries:
        exact = set(index.top(q, 10, engine="exact").rows.tolist())
        approx = index.top(q, 10, engine="hnsw")
        assert approx.engine == "hnsw"
        hits += len(exact & set(approx.rows.tolist()))
    assert hits / (10 * len(queries)) >= 0.95
    top = index.top(x[5500], 1, engine="hnsw")  # added after the build
    assert top.rows[0] == 5500
    scoped = index.top(x[5500], 5, rows=np.arange(100), engine="hnsw")
    assert set(scoped.rows.tolist()) <= set(range(100)) and len(scoped.rows) == 5


def test_auto_engine_switch_point() -> None:
    index = VectorIndex(8)
    assert index.choose_engine("auto", None) == "exact"
    index.add([f"t{i}" for i in range(HNSW_MIN_VECTORS)], clustered(HNSW_MIN_VECTORS, 8))
    assert index.choose_engine("auto", None) == "exact"  # never waits: a build starts
    build = index.start_background_build()
    assert build is not None
    index.add(["late"], clustered(1, 8, seed=5))  # arrives during the build
    build.join(timeout=120)
    assert index.has_hnsw and index.choose_engine("auto", None) == "hnsw"
    assert index.ids[index.top(index.matrix[-1], 1, engine="hnsw").rows[0]] == "late"
    assert index.choose_engine("auto", 100) == "exact"  # a small scope is scanned
    assert index.choose_engine("exact", None) == "exact"


def test_duplicate_ids_are_not_added_twice() -> None:
    x = clustered(10)
    index = VectorIndex.from_arrays([f"t{i}" for i in range(10)], x)
    index.add(["t3", "new"], x[:2])
    assert len(index) == 11 and index.ids[-1] == "new"


def test_sync_with_cache_appends_then_reloads(tmp_path: Path) -> None:
    db = tmp_path / "c.duckdb"
    x = clustered(300, dim=48)
    ids = [f"demo/x/112/112/{i}_0" for i in range(300)]
    with EmbeddingCache(db) as cache:
        eset = cache.embedding_set("m", "h", dim=48)
        assert eset is not None
        cache.write_embeddings(eset, ids[:200], x[:200])
        index = get_index(cache, eset)
        assert len(index) == 200
        assert sync_index(index, cache, eset) == 0  # nothing new
        cache.write_embeddings(eset, ids[200:], x[200:])
        assert get_index(cache, eset) is index and len(index) == 300
        np.testing.assert_allclose(index.matrix[index.row_of[ids[250]]], normalise(x[250]),
                                   rtol=1e-6)  # fmt: skip
        with cache.cursor() as cur:
            cur.execute(f"DELETE FROM {eset.table_name} WHERE tile_id = ?", [ids[0]])
        assert len(get_index(cache, eset)) == 299 and ids[0] not in index.row_of


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_indexes(n: int) -> None:
    index = VectorIndex.from_arrays([f"t{i}" for i in range(n)], clustered(n, 8)) if n else (
        VectorIndex(8))  # fmt: skip
    top = index.top(np.ones(8, np.float32), 5)
    assert len(top.rows) == n
