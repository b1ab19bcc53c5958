"""Nearest-neighbour search over one embedding set: an exact scan and an HNSW index, kept in sync.

A :class:`VectorIndex` holds the set's vectors L2-normalised in one float32 matrix, so cosine
similarity is an inner product. Two engines answer a top-k query over it:

* **exact**: one BLAS matrix-vector product (``matrix @ q``) and a partial sort. At 100k vectors
  of 384 dims it takes a few ms; it is the reference the approximate engine is measured against.
* **hnsw**: a usearch HNSW graph (``f16`` vectors, connectivity 16) for candidates, re-scored
  exactly from the float32 matrix, so the scores returned are true cosines whatever the engine.
  Rows added after the graph was built (the *tail*) are scanned exactly and merged, so a new tile
  is found at once; the graph takes them in (incrementally, never rebuilt) once the tail passes
  :data:`HNSW_MAX_TAIL` rows. Chosen over DuckDB's vss extension by measurement (bench/README.md).

``auto`` uses the graph from :data:`HNSW_MIN_VECTORS` vectors up (the switch point measured in
``bench/bench_search.py``), and the exact scan below it or when a scope keeps only a small part of
the set (the scan over a few rows beats a filtered graph walk). Building the graph takes minutes
at 100k vectors and ~11 min at 1M on 2 cores, so ``auto`` builds it on a background thread and
answers with the exact scan until it is ready: no query ever waits for a build; ``hnsw`` builds
synchronously.

Indexes follow the cache (:mod:`backend.search.index_sync`): one per process and set, synced
with the set's table before each query, kept on disk beside the cache from 20k rows up
(:mod:`backend.search.index_store`). Rows whose tiles left the cache are *dead*: they stay in the
matrix and the graph but are never returned.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from backend.search.index_store import IndexStore, Manifest

log = logging.getLogger(__name__)

Engine = Literal["auto", "exact", "hnsw"]

#: From this many vectors in scope, ``auto`` answers with the HNSW graph (bench/README.md).
HNSW_MIN_VECTORS = 50_000
#: Below this share of the set in scope, ``auto`` scans the scope's rows exactly instead.
HNSW_MIN_SCOPE_FRACTION = 0.2
#: HNSW parameters (usearch): graph degree, build and search beam widths.
HNSW_CONNECTIVITY = 16
HNSW_EXPANSION_ADD = 128
HNSW_EXPANSION_SEARCH = 64
HNSW_PARAMS: dict[str, Any] = {"connectivity": HNSW_CONNECTIVITY,
                               "expansion_add": HNSW_EXPANSION_ADD, "dtype": "f16"}  # fmt: skip
#: Rows past the graph scanned exactly before the graph takes them in (0.5 ms per 10k rows).
HNSW_MAX_TAIL = 10_000

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
        store: Where the index is kept on disk (None: in memory only).
    """

    def __init__(self, dim: int, store: IndexStore | None = None) -> None:
        self.dim = dim
        self.store = store
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget every vector and the graph (the lock and the store stay)."""
        self.ids: list[str] = []
        self._row_of: dict[str, int] | None = {}
        self._matrix: NDArray[np.float32] = np.empty((0, self.dim), dtype=np.float32)
        self._n = 0
        self._dead: NDArray[np.bool_] | None = None
        self._n_dead = 0
        self._hnsw: Any = None
        self._hnsw_view = False  # a memory-mapped saved graph: immutable
        self._hnsw_rows = 0
        self._building: threading.Thread | None = None
        self.version = IndexVersion(0, None)
        self.manifest: Manifest | None = None  # the on-disk state this index reflects

    @classmethod
    def from_arrays(cls, ids: list[str], vectors: NDArray[np.float32]) -> VectorIndex:
        """An index over given vectors (benchmarks, tests)."""
        index = cls(int(vectors.shape[1]))
        index.add(ids, vectors)
        return index

    def __len__(self) -> int:
        """Live rows (dead ones are left out)."""
        return self._n - self._n_dead

    @property
    def matrix(self) -> NDArray[np.float32]:
        """The ``[N, D]`` unit-normalised vectors, dead rows included (a view; do not modify)."""
        return self._matrix[: self._n]

    @property
    def row_of(self) -> dict[str, int]:
        """Row of each live tile id (built on first use: 0.2 s at 1M ids)."""
        if self._row_of is None:
            live = (range(self._n) if self._dead is None
                    else np.flatnonzero(~self._dead[: self._n]).tolist())  # fmt: skip
            self._row_of = {self.ids[r]: r for r in live}
        return self._row_of

    @property
    def has_hnsw(self) -> bool:
        return self._hnsw is not None

    @property
    def tail(self) -> int:
        """Rows not yet in the graph (scanned exactly by the ``hnsw`` engine)."""
        return self._n - self._hnsw_rows if self._hnsw is not None else self._n

    def dead_rows(self) -> tuple[int, ...]:
        if self._dead is None:
            return ()
        return tuple(np.flatnonzero(self._dead[: self._n]).tolist())

    def add(self, ids: list[str], vectors: NDArray[np.float32]) -> None:
        """Append vectors (ids already present are skipped); the graph sees them as its tail."""
        row_of = self.row_of
        fresh = [i for i, t in enumerate(ids) if t not in row_of]
        if not fresh:
            return
        if len(fresh) != len(ids):
            ids = [ids[i] for i in fresh]
            vectors = vectors[fresh]
        new = normalise(vectors)
        need = self._n + len(ids)
        if need > self._matrix.shape[0] or not self._matrix.flags.writeable:
            grown = np.empty((max(need, 2 * self._n), self.dim), dtype=np.float32)
            grown[: self._n] = self._matrix[: self._n]
            self._matrix = grown
        self._matrix[self._n : need] = new
        for i, t in enumerate(ids):
            row_of[t] = self._n + i
        self.ids.extend(ids)
        self._n = need
        if self._dead is not None:
            self._dead = np.concatenate([self._dead[: self._n - len(ids)],
                                         np.zeros(len(ids), dtype=bool)])  # fmt: skip

    def remove(self, ids: list[str]) -> int:
        """Mark tiles dead: their rows stay in the matrix and graph but are never returned."""
        rows = [self.row_of.pop(t) for t in ids if t in self.row_of]
        if rows:
            if self._dead is None:
                self._dead = np.zeros(self._n, dtype=bool)
            self._dead[rows] = True
            self._n_dead = int(self._dead.sum())
        return len(rows)

    # --- on disk -----------------------------------------------------------------------------
    def reflects(self, m: Manifest | None) -> bool:
        return m is not None and self.manifest == m

    def adopt(self, store: IndexStore, m: Manifest, ids: list[str] | None = None) -> None:
        """Take the on-disk state ``m`` (memory-mapped): ``ids`` are its tile ids if known."""
        same_rows = (self.manifest is not None and self.manifest.generation == m.generation
                     and self._n <= m.rows)  # fmt: skip
        keep_graph = same_rows and self._hnsw is not None
        if ids is None:
            ids = self.ids if same_rows and self._n == m.rows else store.ids(m)
        matrix = store.vectors(m)
        graph, graph_rows, view = self._hnsw, self._hnsw_rows, self._hnsw_view
        building = self._building if keep_graph or same_rows else None
        self.reset()
        self.ids, self._matrix, self._n, self._row_of = ids, matrix, m.rows, None
        if m.dead:
            self._dead = np.zeros(m.rows, dtype=bool)
            self._dead[list(m.dead)] = True
            self._n_dead = int(self._dead.sum())
        if keep_graph and graph_rows >= m.graph_rows:
            self._hnsw, self._hnsw_rows, self._hnsw_view = graph, graph_rows, view
        elif m.graph is not None and m.hnsw == HNSW_PARAMS and m.graph_rows <= m.rows:
            self._hnsw, self._hnsw_rows, self._hnsw_view = store.view_graph(m), m.graph_rows, True
        self._building = building
        self.version = IndexVersion(m.table_rows, m.table_newest)
        self.manifest = m

    def _save_graph(self) -> None:
        """Write the graph beside the cache when it covers more rows than the saved one."""
        store, m = self.store, self.manifest
        if store is None or m is None or self._hnsw is None or self._hnsw_view:
            return
        if self._hnsw_rows <= m.graph_rows and m.graph is not None:
            return
        try:
            with store.lock():
                on_disk = store.manifest()
                if on_disk is None or on_disk.generation != m.generation:
                    return  # another process rebuilt the files: our row numbers are not theirs
                if on_disk.rows < self._hnsw_rows or on_disk.graph_rows >= self._hnsw_rows:
                    return
                saved = store.save_graph(on_disk, self._hnsw, self._hnsw_rows, HNSW_PARAMS)
                store.commit(saved, on_disk)
        except OSError as e:
            log.warning("Could not save the vector index beside the cache: %s", e)
            return
        if self.manifest == m:
            self.manifest = saved if on_disk == m else None

    # --- engines --------------------------------------------------------------------------
    def build_hnsw(self) -> None:
        """Build (or extend) the HNSW graph over every vector held, and save it if kept on disk."""
        with self.lock:
            if self._hnsw is None:
                self._hnsw, self._hnsw_rows, self._building = _new_graph(self.dim), 0, None
                self._hnsw_view = False
            if self._hnsw_rows < self._n:
                self._extend_hnsw()
            self._save_graph()

    def _extend_hnsw(self) -> None:
        if self._hnsw_rows >= self._n:
            return
        if self._hnsw_view:
            self._hnsw, self._hnsw_view = self._hnsw.copy(), False
        keys = np.arange(self._hnsw_rows, self._n, dtype=np.uint64)
        self._hnsw.add(keys, self._matrix[self._hnsw_rows : self._n], threads=0)
        self._hnsw_rows = self._n

    def memory_bytes(self) -> int:
        """Bytes held by the float32 matrix and the graph (memory-mapped ones included)."""
        graph = 0
        if self._hnsw is not None:
            graph = (int(getattr(self._hnsw, "memory_usage", 0)) if not self._hnsw_view
                     else int(self._hnsw.serialized_length))  # fmt: skip
        return int(self._matrix[: self._n].nbytes) + graph

    def choose_engine(self, engine: Engine, scope_rows: int | None) -> Literal["exact", "hnsw"]:
        """The engine ``auto`` resolves to for a scope of ``scope_rows`` rows (None = all).

        ``auto`` never waits for a graph: from :data:`HNSW_MIN_VECTORS` up it starts building one
        in the background (minutes at 100k on 2 cores) and scans exactly until it is ready; a
        tail past :data:`HNSW_MAX_TAIL` rows is taken into the graph in the background too.
        """
        if engine != "auto":
            return engine
        n = len(self) if scope_rows is None else scope_rows
        if n < HNSW_MIN_VECTORS:
            return "exact"
        if scope_rows is not None and scope_rows < HNSW_MIN_SCOPE_FRACTION * len(self):
            return "exact"
        if self._hnsw is None:
            self.start_background_build()
            return "exact"
        if self.tail > HNSW_MAX_TAIL:
            self.start_background_build()
        return "hnsw"

    def start_background_build(self) -> threading.Thread | None:
        """Build (or extend) the graph on a daemon thread; queries go on meanwhile.

        Until a first graph is ready queries scan exactly; while a graph is extended they use
        the old graph and scan its tail.
        """
        with self.lock:
            if self._building is not None or (self._hnsw is not None and not self.tail):
                return self._building
            # Rows below _n are never rewritten (the matrix grows by reallocation), so the
            # thread can read this view while new rows arrive.
            n, data = self._n, self._matrix[: self._n]
            base, start = self._hnsw, self._hnsw_rows
            thread = threading.Thread(target=self._build, args=(n, data, base, start),
                                      daemon=True, name="softmap-hnsw-build")  # fmt: skip
            self._building = thread
        thread.start()
        return thread

    def _build(self, n: int, data: NDArray[np.float32], base: Any, start: int) -> None:
        try:
            graph = _new_graph(self.dim) if base is None else base.copy()
            if base is None:
                start = 0
            graph.add(np.arange(start, n, dtype=np.uint64), data[start:n], threads=0)
        except Exception:  # a failed build leaves the exact scan in place
            log.exception("Building the HNSW graph failed")
            with self.lock:
                if self._building is threading.current_thread():
                    self._building = None
            return
        with self.lock:
            if self._building is threading.current_thread():
                self._hnsw, self._hnsw_rows, self._hnsw_view = graph, n, False
                self._building = None
                self._save_graph()

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
            rows: Restrict to these rows (a scope of live rows); None searches every live row.
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
            if self._dead is not None:
                scores[self._dead[: self._n]] = -np.inf
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
        """Graph candidates and the tail, re-scored exactly; None when filters left too few."""
        if self._hnsw is None or (self.tail > HNSW_MAX_TAIL and self._building is None):
            self.build_hnsw()
        hnsw: Any = self._hnsw
        graph_rows = self._hnsw_rows
        allowed: NDArray[np.bool_] | None = None
        if rows is not None:
            allowed = np.zeros(self._n, dtype=bool)
            allowed[rows] = True
        elif self._dead is not None:
            allowed = ~self._dead[: self._n]
        n_excl = 0 if exclude is None else len(exclude)
        live = max(len(self), 1)
        share = 1.0 if rows is None else max(len(rows) / live, 1e-6)
        share *= live / max(self._n, 1)  # dead rows still answer graph walks
        # Over-fetch so that filtering by scope, death and exclusion still leaves m rows.
        want = min(graph_rows, int((m + n_excl) / share * 1.5) + 16)
        parts: list[NDArray[np.int64]] = []
        if want > 0:
            ef = max(HNSW_EXPANSION_SEARCH, want)
            if hnsw.expansion_search != ef:
                hnsw.expansion_search = ef
            found = hnsw.search(q, want, threads=1)
            parts.append(np.asarray(found.keys, dtype=np.int64))
        if graph_rows < self._n:
            parts.append(np.arange(graph_rows, self._n, dtype=np.int64))
        cand = np.concatenate(parts) if parts else np.empty(0, np.int64)
        if allowed is not None:
            cand = cand[allowed[cand]]
        if exclude is not None and n_excl:
            cand = cand[~np.isin(cand, exclude)]
        available = len(self) if rows is None else len(rows)
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
        dtype=HNSW_PARAMS["dtype"],
        connectivity=HNSW_CONNECTIVITY,
        expansion_add=HNSW_EXPANSION_ADD,
        expansion_search=HNSW_EXPANSION_SEARCH,
    )
