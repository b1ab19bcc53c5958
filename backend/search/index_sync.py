"""Indexes that follow the cache: one :class:`VectorIndex` per process and embedding set.

Before each query :func:`sync_index` compares the set table's row count and newest
``created_at`` (its *data version*) with what the index reflects, appends only the new rows, marks
rows whose tiles left the table as dead (never returned; the index is rebuilt from the table only
when dead rows pass :data:`MAX_DEAD_FRACTION`) and so never serves stale rows. From
:data:`PERSIST_MIN_VECTORS` rows up the index also lives on disk beside the cache
(:mod:`backend.search.index_store`): a fresh process memory-maps the vectors and the graph instead
of reading a million rows from DuckDB and rebuilding the graph (11 min at 1M on 2 cores), and every
change is written back.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from backend.search.index import HNSW_PARAMS, IndexVersion, VectorIndex, normalise
from backend.search.index_store import IndexStore, SetIdentity, index_folder
from backend.store.cache import EmbeddingCache, EmbeddingSet

log = logging.getLogger(__name__)

#: From this many rows a set's index is kept on disk beside the cache (smaller ones load in ms).
PERSIST_MIN_VECTORS = 20_000
#: Dead rows (tiles removed from the cache) tolerated before the index is rebuilt from the table.
MAX_DEAD_FRACTION = 0.25


@dataclass
class _Delta:
    """How a set's table differs from its index: rows to add, tiles gone, or reload all."""

    ids: list[str] = field(default_factory=list)
    unit: NDArray[np.float32] | None = None
    removed: list[str] = field(default_factory=list)
    reload: bool = False


_INDEXES: dict[tuple[str, int, str, str], VectorIndex] = {}
_INDEXES_LOCK = threading.Lock()


def table_version(cache: EmbeddingCache, eset: EmbeddingSet) -> IndexVersion:
    """The row count and newest ``created_at`` of a set's table (its data version)."""
    with cache.cursor() as cur:
        row = cur.execute(
            f"SELECT count(*), epoch_us(max(created_at)) FROM {eset.table_name}"
        ).fetchone()
    if not row:
        return IndexVersion(0, None)
    return IndexVersion(int(row[0]), None if row[1] is None else int(row[1]))


def set_identity(cache: EmbeddingCache, eset: EmbeddingSet) -> SetIdentity:
    """The set's key on disk: its number, model, preprocessing, dimension and creation time."""
    with cache.cursor() as cur:
        row = cur.execute(
            "SELECT epoch_us(created_at) FROM embedding_sets WHERE set_id = ?",
            [eset.set_id],
        ).fetchone()
    created = str(row[0]) if row and row[0] is not None else ""
    return SetIdentity(eset.set_id, eset.model_id, eset.preprocessing_hash, eset.dim, created)


def get_index(cache: EmbeddingCache, eset: EmbeddingSet) -> VectorIndex:
    """The index of a set, brought up to date with the cache.

    One per process and set; a fresh process opens the copy kept beside the cache when there is
    one. New rows (embedded since the last call, in this or another process) are appended and
    tiles that left the cache are dropped. The returned index is locked by the caller while used
    (``with index.lock``) when threads share it.
    """
    key = (str(cache.path.resolve()), eset.set_id, eset.model_id, eset.preprocessing_hash)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None or index.dim != eset.dim:
            store = IndexStore.beside(cache.path.resolve(), set_identity(cache, eset))
            index = _INDEXES[key] = VectorIndex(eset.dim, store)
    with index.lock:
        sync_index(index, cache, eset)
    return index


def sync_index(index: VectorIndex, cache: EmbeddingCache, eset: EmbeddingSet) -> int:
    """Bring the index to the table's data version; returns the change in live rows.

    Never serves stale rows: anything the table gained is added, anything it lost is dropped.
    With a store, the copy on disk is opened when it matches the table, and updated otherwise.
    """
    current = table_version(cache, eset)
    if current == index.version:
        return 0
    before = len(index)
    store = index.store if current.rows >= PERSIST_MIN_VECTORS else None
    if store is not None:
        on_disk = store.manifest()
        if (on_disk is not None and not index.reflects(on_disk)
                and IndexVersion(on_disk.table_rows, on_disk.table_newest) == current):  # fmt: skip
            try:  # the fast path of a fresh process: nothing to write, no lock needed
                index.adopt(store, on_disk)
                return len(index) - before
            except OSError as e:
                log.warning("Could not open the vector index beside the cache: %s", e)
        try:
            with store.lock():
                _sync_on_disk(index, store, cache, eset, current)
            return len(index) - before
        except OSError as e:  # a read-only or full disk: the index stays in memory
            log.warning("Could not update the vector index beside the cache: %s", e)
            index.store = None
    _apply(index, _table_delta(index, cache, eset, current))
    index.version = current
    return len(index) - before


def _sync_on_disk(index: VectorIndex, store: IndexStore, cache: EmbeddingCache,
                  eset: EmbeddingSet, current: IndexVersion) -> None:  # fmt: skip
    """Sync under the store's lock: adopt what another process wrote, then write the delta."""
    on_disk = store.manifest()
    if on_disk is not None and not index.reflects(on_disk):
        index.adopt(store, on_disk)
    if index.version == current and on_disk is not None:
        return
    delta = _table_delta(index, cache, eset, current)
    if on_disk is None or delta.reload:
        _apply(index, delta)
        written = store.start_generation(on_disk, current.rows, current.newest)
        written = store.append(written, index.ids[: index._n], index.matrix)
        written = replace(written, dead=index.dead_rows())
        ids = index.ids[: index._n]
        graph, graph_rows = index._hnsw, index._hnsw_rows
    else:
        dead = set(on_disk.dead) | {index.row_of[t] for t in delta.removed if t in index.row_of}
        unit = delta.unit if delta.unit is not None else np.empty((0, index.dim), np.float32)
        written = store.append(on_disk, delta.ids, unit)
        written = replace(written, dead=tuple(sorted(dead)))
        ids = index.ids[: index._n] + delta.ids
        graph = None
    written = replace(written, table_rows=current.rows, table_newest=current.newest)
    if graph is not None and not index._hnsw_view and graph_rows:
        written = store.save_graph(written, graph, graph_rows, HNSW_PARAMS)
    store.commit(written, on_disk)
    index.adopt(store, written, ids)


def _table_delta(index: VectorIndex, cache: EmbeddingCache, eset: EmbeddingSet,
                 current: IndexVersion) -> _Delta:  # fmt: skip
    """What the table has that the index lacks, and what the index has that the table lost."""
    if not index._n or index.version.newest is None or current.rows == 0:
        return _full(cache, eset)
    if current.rows >= len(index) and current.newest is not None:
        # Rows arrive in batches stamped with their commit time: anything newer than what we
        # saw, plus the rows sharing the newest stamp (already-known ids are skipped).
        ids, vectors = _rows_since(cache, eset, index.version.newest)
        keep = [i for i, t in enumerate(ids) if t not in index.row_of]
        if len(index) + len(keep) == current.rows:
            return _Delta([ids[i] for i in keep], normalise(vectors[keep]))
    # Rows left the table (a source was removed): compare the ids.
    with cache.cursor() as cur:
        table_ids = {r[0] for r in cur.execute(f"SELECT tile_id FROM {eset.table_name}").fetchall()}
    removed = [t for t in index.row_of if t not in table_ids]
    missing = [t for t in table_ids if t not in index.row_of]
    if index._n_dead + len(removed) > MAX_DEAD_FRACTION * (index._n + len(missing)):
        return _full(cache, eset)
    if not missing:
        return _Delta(removed=removed)
    new_ids, vectors = cache.embeddings(eset, missing)
    return _Delta(new_ids, normalise(vectors), removed)


def _full(cache: EmbeddingCache, eset: EmbeddingSet) -> _Delta:
    ids, vectors = cache.embeddings(eset)
    return _Delta(ids, normalise(vectors), reload=True)


def _rows_since(cache: EmbeddingCache, eset: EmbeddingSet, newest: int
                ) -> tuple[list[str], NDArray[np.float32]]:  # fmt: skip
    with cache.cursor() as cur:
        table = cur.execute(
            f"SELECT tile_id, vector FROM {eset.table_name} WHERE epoch_us(created_at) >= ?",
            [newest],
        ).to_arrow_table()
    ids = table.column("tile_id").to_pylist()
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, np.asarray(flat, dtype=np.float32).reshape(len(ids), eset.dim)


def _apply(index: VectorIndex, delta: _Delta) -> None:
    if delta.reload:
        index.reset()
    if delta.removed:
        index.remove(delta.removed)
    if delta.ids and delta.unit is not None:
        index.add(delta.ids, delta.unit)


def drop_unused_indexes(cache: EmbeddingCache) -> list[int]:
    """Delete the kept index of every set that is gone or empty; returns their set ids.

    Run after tiles leave the cache (``sources remove``): an emptied or deleted set's folder
    beside the cache would otherwise stay on disk (up to gigabytes at a million rows). Sets that
    still hold rows keep their index: the next query drops the removed rows from it.
    """
    folder = index_folder(cache.path.resolve())
    live = {e.set_id for e in cache.embedding_sets() if table_version(cache, e).rows > 0}
    dropped: list[int] = []
    for path in sorted(folder.glob("set-*")) if folder.is_dir() else []:
        number = path.name.removeprefix("set-")
        if not number.isdigit() or int(number) in live:
            continue
        shutil.rmtree(path, ignore_errors=True)
        dropped.append(int(number))
    with _INDEXES_LOCK:
        for key in [k for k in _INDEXES if k[0] == str(cache.path.resolve()) and k[1] in dropped]:
            del _INDEXES[key]
    return dropped
