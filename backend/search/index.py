"""Nearest-neighbour search over one embedding set: an exact scan and an HNSW index, kept in sync.

A :class:`VectorIndex` holds the set's vectors L2-normalised in one float32 matrix, so cosine
similarity is an inner product. Two engines answer a top-k query over it:

* **exact**: one BLAS matrix-vector product (``matrix @ q``) and a partial sort. At 100k vectors
  of 384 dims it takes a few ms; it is the reference the approximate engine is measured against.
* **hnsw**: a usearch HNSW graph (``f16`` vectors, connectivity 16) for candidates, re-scored
  exactly from the float32 matrix, so the scores returned are true cosines whatever the engine.
  Chosen over DuckDB's vss extension by measurement (bench/README.md): at 20k vectors usearch
  builds in 1.2 s and answers in 0.12 ms, vss in 8.3 s and 5 ms (SQL and literal parsing).

``auto`` uses the graph from :data:`HNSW_MIN_VECTORS` vectors up (the switch point measured in
``bench/bench_search.py``), and the exact scan below it or when a scope keeps only a small part of
the set (the scan over a few rows beats a filtered graph walk). Building the graph takes minutes
at 100k vectors on 2 cores, so ``auto`` builds it on a background thread and answers with the
exact scan until it is ready: no query ever waits for a build; ``hnsw`` builds synchronously.

Indexes live in memory per process, one per (cache file, embedding set), and follow the cache:
before each query :func:`get_index` compares the set table's row count and newest ``created_at``
with what the index holds and appends only the new rows (to the matrix and the graph); a table that
shrank (a deleted set) is reloaded from scratch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from backend.store.cache import EmbeddingCache, EmbeddingSet

Engine = Literal["auto", "exact", "hnsw"]

#: From this many vectors in scope, ``auto`` answers with the HNSW graph (bench/README.md).
HNSW_MIN_VECTORS = 50_000
#: Below this share of the set in scope, ``auto`` scans the scope's rows exactly instead.
HNSW_MIN_SCOPE_FRACTION = 0.2
#: HNSW parameters (usearch): graph degree, build and search beam widths.
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 64

_EPS = 1e-12


@dataclass(frozen=True)
class IndexVersion:
    """What the index has seen of its table: row count and newest ``created_at`` (epoch µs)."""

    rows: int
    newest: int | None


@dataclass(frozen=True)
class Neighbours:
    """Rows of the index (best first) with their cosine similarities."""

    rows: NDArray[np.int64]
    scores: NDArray[np.float32]
    engine: Literal["exact", "hnsw"]


def normalise(vectors: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, _EPS), dtype=np.float32)


class VectorIndex:
    """Unit-normalised vectors with their ids, an exact scan and an optional HNSW graph.

    Args:
        dim: Vector dimension.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every vector and the graph (the lock stays)."""
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self._matrix = np.empty((0, self.dim), dtype=np.float32)
        self._n = 0
        self._hnsw: Any = None
        self._building: threading.Thread | None = None
        self._hnsw_rows = 0
        self.version = IndexVersion(0, None)

    @classmethod
    def from_arrays(cls, ids: list[str], vectors: NDArray[np.float32]) -> VectorIndex:
        """An index over given vectors (benchmarks, tests)."""
        index = cls(int(vectors.shape[1]))
        index.add(ids, vectors)
        return index

    def __len__(self) -> int:
        return self._n

    @property
    def matrix(self) -> NDArray[np.float32]:
        """The ``[N, D]`` unit-normalised vectors (a view; do not modify)."""
        return self._matrix[: self._n]

    @property
    def has_hnsw(self) -> bool:
        return self._hnsw is not None

    def add(self, ids: list[str], vectors: NDArray[np.float32]) -> None:
        """Append vectors (ids already present are skipped); an existing graph gets them too."""
        fresh = [i for i, t in enumerate(ids) if t not in self.row_of]
        if not fresh:
            return
        if len(fresh) != len(ids):
            ids = [ids[i] for i in fresh]
            vectors = vectors[fresh]
        new = normalise(vectors)
        need = self._n + len(ids)
        if need > self._matrix.shape[0]:
            grown = np.empty((max(need, 2 * self._matrix.shape[0]), self.dim), dtype=np.float32)
            grown[: self._n] = self._matrix[: self._n]
            self._matrix = grown
        self._matrix[self._n : need] = new
        for i, t in enumerate(ids):
            self.row_of[t] = self._n + i
        self.ids.extend(ids)
        self._n = need
        if self._hnsw is not None:
            self._extend_hnsw()

    # --- engines --------------------------------------------------------------------------
    def build_hnsw(self) -> None:
        """Build (or extend) the HNSW graph over every vector held."""
        with self.lock:
            if self._hnsw is None:
                self._hnsw, self._hnsw_rows, self._building = _new_graph(self.dim), 0, None
            self._extend_hnsw()

    def _extend_hnsw(self) -> None:
        if self._hnsw_rows >= self._n:
            return
        keys = np.arange(self._hnsw_rows, self._n, dtype=np.uint64)
        self._hnsw.add(keys, self._matrix[self._hnsw_rows : self._n], threads=0)
        self._hnsw_rows = self._n

    def memory_bytes(self) -> int:
        """Bytes held by the float32 matrix and the graph."""
        graph = int(getattr(self._hnsw, "memory_usage", 0)) if self._hnsw is not None else 0
        return int(self._matrix.nbytes) + graph

    def choose_engine(self, engine: Engine, scope_rows: int | None) -> Literal["exact", "hnsw"]:
        """The engine ``auto`` resolves to for a scope of ``scope_rows`` rows (None = all).

        ``auto`` never waits for a graph: from :data:`HNSW_MIN_VECTORS` up it starts building one
        in the background (minutes at 100k on 2 cores) and scans exactly until it is ready.
        """
        if engine != "auto":
            return engine
        n = self._n if scope_rows is None else scope_rows
        if n < HNSW_MIN_VECTORS:
            return "exact"
        if scope_rows is not None and scope_rows < HNSW_MIN_SCOPE_FRACTION * self._n:
            return "exact"
        if self._hnsw is None:
            self.start_background_build()
            return "exact"
        return "hnsw"

    def start_background_build(self) -> threading.Thread | None:
        """Build the graph on a daemon thread; queries keep using the exact scan meanwhile."""
        with self.lock:
            if self._hnsw is not None or self._building is not None:
                return self._building
            # Rows below _n are never rewritten (the matrix grows by reallocation), so the
            # thread can read this view while new rows arrive.
            n, data = self._n, self._matrix[: self._n]
            thread = threading.Thread(target=self._build, args=(n, data), daemon=True,
                                      name="softmap-hnsw-build")  # fmt: skip
            self._building = thread
        thread.start()
        return thread

    def _build(self, n: int, data: NDArray[np.float32]) -> None:
        graph = _new_graph(self.dim)
        graph.add(np.arange(n, dtype=np.uint64), data, threads=0)
        with self.lock:
            if self._building is threading.current_thread():
                self._hnsw, self._hnsw_rows, self._building = graph, n, None
                self._extend_hnsw()

    def top(
        self,
        query: NDArray[np.float32],
        m: int,
        *,
        rows: NDArray[np.int64] | None = None,
        exclude: NDArray[np.int64] | None = None,
        engine: Engine = "auto",
    ) -> Neighbours:
        """The ``m`` rows most similar to ``query`` (cosine), best first.

        Args:
            query: ``[D]`` vector (normalised here).
            m: How many rows at most.
            rows: Restrict to these rows (a scope); None searches every row.
            exclude: Rows never returned (the query tiles).
            engine: ``exact``, ``hnsw`` or ``auto`` (see :meth:`choose_engine`).
        """
        q = normalise(query.reshape(1, -1))[0]
        chosen = self.choose_engine(engine, None if rows is None else len(rows))
        if chosen == "hnsw" and self._n:
            found = self._hnsw_top(q, m, rows, exclude)
            if found is not None:
                return found
        return self._exact_top(q, m, rows, exclude)

    def _exact_top(
        self,
        q: NDArray[np.float32],
        m: int,
        rows: NDArray[np.int64] | None,
        exclude: NDArray[np.int64] | None,
    ) -> Neighbours:
        cand: NDArray[np.int64] | None = None
        if rows is None:
            scores = self.matrix @ q
            if exclude is not None and len(exclude):
                scores[exclude] = -np.inf
        else:
            cand = np.asarray(rows, dtype=np.int64)
            if exclude is not None and len(exclude):
                cand = cand[~np.isin(cand, exclude)]
            scores = self._matrix[cand] @ q
        m = min(m, len(scores))
        if m <= 0:
            return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32), "exact")
        part = np.argpartition(-scores, m - 1)[:m] if m < len(scores) else np.arange(len(scores))
        order = part[np.argsort(-scores[part], kind="stable")]
        out_rows = order.astype(np.int64) if cand is None else cand[order]
        out_scores = scores[order].astype(np.float32)
        valid = np.isfinite(out_scores)
        return Neighbours(out_rows[valid], out_scores[valid], "exact")

    def _hnsw_top(
        self,
        q: NDArray[np.float32],
        m: int,
        rows: NDArray[np.int64] | None,
        exclude: NDArray[np.int64] | None,
    ) -> Neighbours | None:
        """Graph candidates re-scored exactly; None when the scope filter left too few."""
        self.build_hnsw()
        allowed: NDArray[np.bool_] | None = None
        if rows is not None:
            allowed = np.zeros(self._n, dtype=bool)
            allowed[rows] = True
        n_excl = 0 if exclude is None else len(exclude)
        share = 1.0 if rows is None else max(len(rows) / max(self._n, 1), 1e-6)
        # Over-fetch so that filtering by scope and exclusion still leaves m rows.
        want = min(self._n, int((m + n_excl) / share * 1.5) + 16)
        ef = max(HNSW_EXPANSION_SEARCH, want)
        hnsw: Any = self._hnsw
        if hnsw.expansion_search != ef:
            hnsw.expansion_search = ef
        found = hnsw.search(q, want, threads=1)
        cand = np.asarray(found.keys, dtype=np.int64)
        if allowed is not None:
            cand = cand[allowed[cand]]
        if exclude is not None and n_excl:
            cand = cand[~np.isin(cand, exclude)]
        available = self._n if rows is None else len(rows)
        if len(cand) < min(m, available - n_excl):
            return None
        scores = self._matrix[cand] @ q
        order = np.argsort(-scores, kind="stable")[:m]
        return Neighbours(cand[order], scores[order].astype(np.float32), "hnsw")


def _new_graph(dim: int) -> Any:
    from usearch.index import Index

    return Index(
        ndim=dim,
        metric="ip",
        dtype="f16",
        connectivity=HNSW_CONNECTIVITY,
        expansion_add=HNSW_EXPANSION_ADD,
        expansion_search=HNSW_EXPANSION_SEARCH,
    )


# --- indexes that follow the cache --------------------------------------------------------
_INDEXES: dict[tuple[str, int, str, str], VectorIndex] = {}
_INDEXES_LOCK = threading.Lock()


def table_version(cache: EmbeddingCache, eset: EmbeddingSet) -> IndexVersion:
    """The row count and newest ``created_at`` of a set's table."""
    with cache.cursor() as cur:
        row = cur.execute(
            f"SELECT count(*), epoch_us(max(created_at)) FROM {eset.table_name}"
        ).fetchone()
    if not row:
        return IndexVersion(0, None)
    return IndexVersion(int(row[0]), None if row[1] is None else int(row[1]))


def get_index(cache: EmbeddingCache, eset: EmbeddingSet) -> VectorIndex:
    """The in-memory index of a set, brought up to date with the cache.

    New rows (embedded since the last call, in this or another process) are appended; the graph,
    if built, gets them too. The returned index is locked by the caller while used
    (``with index.lock``) when threads share it.
    """
    key = (str(cache.path.resolve()), eset.set_id, eset.model_id, eset.preprocessing_hash)
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None or index.dim != eset.dim:
            index = _INDEXES[key] = VectorIndex(eset.dim)
    with index.lock:
        sync_index(index, cache, eset)
    return index


def sync_index(index: VectorIndex, cache: EmbeddingCache, eset: EmbeddingSet) -> int:
    """Append the set's rows the index lacks; returns how many were added."""
    current = table_version(cache, eset)
    if current == index.version:
        return 0
    before = len(index)
    if current.rows < index.version.rows or index.version.newest is None:
        if before:
            index.reset()
            before = 0
        ids, vectors = cache.embeddings(eset)
    else:
        # Rows arrive in batches stamped with their commit time: anything newer than what we
        # saw, plus the rows sharing the newest stamp (already-known ids are skipped).
        with cache.cursor() as cur:
            table = cur.execute(
                f"SELECT tile_id, vector FROM {eset.table_name} WHERE epoch_us(created_at) >= ?",
                [index.version.newest],
            ).to_arrow_table()
        ids = table.column("tile_id").to_pylist()
        flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vectors = np.asarray(flat, dtype=np.float32).reshape(len(ids), eset.dim)
    index.add(ids, vectors)
    if len(index) != current.rows:  # rows without a newer stamp changed: reload everything
        index.reset()
        ids, vectors = cache.embeddings(eset)
        index.add(ids, vectors)
        before = 0
    index.version = current
    return len(index) - before
