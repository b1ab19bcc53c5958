"""The vector index: exact scan equals brute force, HNSW recall, filters, sync with the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from backend.search import index_sync
from backend.search.index import HNSW_MIN_VECTORS, VectorIndex, normalise
from backend.search.index_store import IndexStore, index_folder
from backend.search.index_sync import get_index, sync_index
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


# --- the index kept beside the cache -------------------------------------------------------------
def _fresh_process() -> None:
    """Forget every in-memory index, as a new CLI call or app start would."""
    index_sync._INDEXES.clear()


@pytest.fixture
def persisted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A cache of 400 clustered vectors whose index is kept on disk (any size is persisted)."""
    monkeypatch.setattr(index_sync, "PERSIST_MIN_VECTORS", 0)
    _fresh_process()
    db = tmp_path / "c.duckdb"
    x = clustered(400, dim=48)
    with EmbeddingCache(db) as cache:
        eset = cache.embedding_set("m", "h", dim=48)
        assert eset is not None
        cache.write_embeddings(eset, [f"s/x/112/112/{i}_0" for i in range(300)], x[:300])
    yield db
    _fresh_process()


def _no_table_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the index was read from the table, not from disk")

    monkeypatch.setattr(EmbeddingCache, "embeddings", fail)


def test_a_fresh_process_opens_the_saved_index_and_graph(
    persisted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_sets()[0]
        index = get_index(cache, eset)
        index.build_hnsw()
        q = index.matrix[17] + 0.01
        expected = index.top(q, 10, engine="hnsw")
    folder = index_folder(persisted) / f"set-{eset.set_id}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["rows"] == 300 and manifest["graph_rows"] == 300
    assert manifest["table_rows"] == 300 and manifest["identity"]["model_id"] == "m"
    _fresh_process()
    _no_table_reads(monkeypatch)
    with EmbeddingCache(persisted, read_only=True) as cache:
        reopened = get_index(cache, eset)
        assert reopened is not index and len(reopened) == 300
        assert isinstance(reopened._matrix, np.memmap) and reopened._hnsw_view
        got = reopened.top(q, 10, engine="hnsw")
        assert got.engine == "hnsw" and got.rows.tolist() == expected.rows.tolist()
        np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-6)
        assert reopened.ids == index.ids


def test_new_rows_are_appended_on_disk_and_found_at_once(persisted: Path) -> None:
    x = clustered(400, dim=48)
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_sets()[0]
        get_index(cache, eset).build_hnsw()
        generation = get_index(cache, eset).manifest.generation  # type: ignore[union-attr]
        cache.write_embeddings(eset, [f"s/x/112/112/{i}_0" for i in range(300, 400)], x[300:])
    _fresh_process()
    with EmbeddingCache(persisted, read_only=True) as cache:
        index = get_index(cache, eset)
        assert len(index) == 400 and index.manifest is not None
        assert index.manifest.generation == generation  # appended, not rebuilt
        assert index.manifest.rows == 400 and index.manifest.graph_rows == 300
        assert index.has_hnsw and index.tail == 100  # the graph was not rebuilt either
        for row in (350, 399):  # a new tile is its own nearest neighbour through the hnsw engine
            top = index.top(index.matrix[index.row_of[f"s/x/112/112/{row}_0"]], 1, engine="hnsw")
            assert top.engine == "hnsw" and index.ids[top.rows[0]] == f"s/x/112/112/{row}_0"
        index.build_hnsw()  # the graph takes the tail in and is saved again
        assert index.tail == 0 and index.manifest is not None and index.manifest.graph_rows == 400
    _fresh_process()
    with EmbeddingCache(persisted, read_only=True) as cache:
        again = get_index(cache, eset)
        assert again._hnsw_view and again.tail == 0 and len(again) == 400


def test_removed_tiles_are_never_served(persisted: Path) -> None:
    gone = [f"s/x/112/112/{i}_0" for i in range(10)]
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_sets()[0]
        index = get_index(cache, eset)
        index.build_hnsw()
        probe = index.matrix[index.row_of[gone[0]]].copy()
        with cache.cursor() as cur:
            cur.execute(f"DELETE FROM {eset.table_name} WHERE tile_id IN (SELECT unnest(?))",
                        [gone])  # fmt: skip
        assert get_index(cache, eset) is index and len(index) == 290
        for engine in ("exact", "hnsw"):
            top = index.top(probe, 20, engine=engine)  # type: ignore[arg-type]
            assert not {index.ids[r] for r in top.rows} & set(gone) and len(top.rows) == 20
    _fresh_process()
    with EmbeddingCache(persisted, read_only=True) as cache:
        reopened = get_index(cache, eset)
        assert len(reopened) == 290 and not set(gone) & set(reopened.row_of)
        assert reopened.manifest is not None and len(reopened.manifest.dead) == 10
        top = reopened.top(probe, 20, engine="hnsw")
        assert not {reopened.ids[r] for r in top.rows} & set(gone)


def test_many_removals_rebuild_and_a_replaced_cache_is_not_reused(persisted: Path) -> None:
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_sets()[0]
        first = get_index(cache, eset).manifest
        with cache.cursor() as cur:
            cur.execute(f"DELETE FROM {eset.table_name} WHERE tile_id < 's/x/112/112/2'")
        index = get_index(cache, eset)
        assert index.manifest is not None and first is not None
        assert index.manifest.generation == first.generation + 1 and not index.manifest.dead
        assert len(index) == index.manifest.rows == index.manifest.table_rows
    # Another cache file at the same path: same set id, other content. Never reused.
    persisted.unlink()
    _fresh_process()
    x = clustered(30, dim=48, seed=3)
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_set("m", "h", dim=48)
        assert eset is not None
        cache.write_embeddings(eset, [f"o/y/112/112/{i}_0" for i in range(30)], x)
        index = get_index(cache, eset)
        assert len(index) == 30 and all(t.startswith("o/") for t in index.ids)


def test_partial_rows_of_a_crashed_writer_are_ignored(persisted: Path) -> None:
    x = clustered(400, dim=48)
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_sets()[0]
        m = get_index(cache, eset).manifest
        assert m is not None
        folder = index_folder(persisted) / f"set-{eset.set_id}"
        with (folder / m.vectors_file).open("ab") as f:
            f.write(b"\x00" * 1000)  # a crash mid-append
        with (folder / m.ids_file).open("ab") as f:
            f.write(b"\nhalf")
        cache.write_embeddings(eset, [f"s/x/112/112/{i}_0" for i in range(300, 310)], x[300:310])
    _fresh_process()
    with EmbeddingCache(persisted, read_only=True) as cache:
        index = get_index(cache, eset)
        assert len(index) == 310 and "half" not in index.row_of
        row = index.row_of["s/x/112/112/305_0"]
        np.testing.assert_allclose(index.matrix[row], normalise(x[305]), rtol=1e-6)


def test_an_unwritable_folder_keeps_the_index_in_memory(
    persisted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: IndexStore) -> None:
        raise PermissionError("read-only file system")

    monkeypatch.setattr(IndexStore, "lock", refuse)
    with EmbeddingCache(persisted, read_only=True) as cache:
        index = get_index(cache, cache.embedding_sets()[0])
        assert len(index) == 300 and index.store is None
        assert not index_folder(persisted).exists()


def test_a_long_tail_is_taken_into_the_graph_in_the_background(
    persisted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.search import index as index_module

    monkeypatch.setattr(index_module, "HNSW_MIN_VECTORS", 0)
    monkeypatch.setattr(index_module, "HNSW_MAX_TAIL", 50)
    x = clustered(400, dim=48)
    with EmbeddingCache(persisted) as cache:
        eset = cache.embedding_sets()[0]
        get_index(cache, eset).build_hnsw()
        cache.write_embeddings(eset, [f"s/x/112/112/{i}_0" for i in range(300, 400)], x[300:])
    _fresh_process()
    with EmbeddingCache(persisted, read_only=True) as cache:
        index = get_index(cache, eset)
        assert index._hnsw_view and index.tail == 100
        assert index.choose_engine("auto", None) == "hnsw"  # answers now, extends meanwhile
        build = index._building
        assert build is not None
        build.join(timeout=120)
        assert index.tail == 0 and not index._hnsw_view
        assert index.manifest is not None and index.manifest.graph_rows == 400
        t = "s/x/112/112/377_0"
        top = index.top(index.matrix[index.row_of[t]], 1, engine="hnsw")
        assert index.ids[top.rows[0]] == t


def test_the_kept_index_of_an_emptied_or_deleted_set_is_removed(persisted: Path) -> None:
    with EmbeddingCache(persisted) as cache:
        kept = cache.embedding_set("m2", "h", dim=48)
        assert kept is not None
        cache.write_embeddings(kept, ["t/x/112/112/0_0"], clustered(1, dim=48))
        eset = next(e for e in cache.embedding_sets() if e.model_id == "m")
        get_index(cache, eset).build_hnsw()
        get_index(cache, kept)
        folder = index_folder(persisted)
        assert (folder / f"set-{eset.set_id}" / "manifest.json").exists()
        (folder / "set-99").mkdir()  # a set no longer in the cache
        assert index_sync.drop_unused_indexes(cache) == [99]  # sets with rows keep theirs
        assert cache.remove_source("s") == 0  # its rows leave the set tables (no tile rows here)
        assert index_sync.drop_unused_indexes(cache) == [eset.set_id]
        assert not (folder / f"set-{eset.set_id}").exists()
        assert (folder / f"set-{kept.set_id}").exists()
        assert len(get_index(cache, eset)) == 0  # never served from the dropped copy


def test_the_workspace_precision_is_the_engine_s() -> None:
    """The workspace spells the precisions out so that importing it does not import torch."""
    from typing import get_args

    from backend.models.inference import Precision
    from backend.service import workspace

    assert get_args(workspace.Precision) == get_args(Precision)
