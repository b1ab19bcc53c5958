"""2-D projections of a scope's embeddings: UMAP (seeded, optional PCA first) or plain PCA.

A projection is fitted once per (embedding set, scope, method, parameters) and cached in DuckDB:
``projections`` holds the parameters, the *data version* (a hash of the tile ids it was fitted on)
and the fitted reducer (pickled), ``projection_points`` the coordinates per tile and whether each
was ``fit`` or placed later by ``transform``. Asking again:

* same tiles → the stored coordinates (``cached=True``, milliseconds);
* new tiles (the scope grew after more embedding) → only those are placed with the stored
  reducer's ``transform`` and added, the others keep their coordinates;
* more new tiles than ``refit_ratio`` × the fitted ones, or ``refit=True`` → a fresh fit (a
  transform of mostly-new data would squeeze it into the old layout).

Embeddings are L2-normalised first, so Euclidean distances follow cosine similarity. UMAP's
neighbour graph comes from a usearch HNSW index over the (PCA-reduced) vectors, passed to UMAP as
``precomputed_knn`` (seconds on 2 cores, where pynndescent seeded runs on one thread); the same
index, rebuilt on demand, finds the neighbours of new tiles for ``transform``.

UMAP's numba JIT used to cost 48–119 s in every fresh process. :func:`configure_jit_cache` points
numba's on-disk cache at a writable folder and turns it on for umap's and pynndescent's jitted
functions, so the code is compiled once per install (by ``make install`` or in the background at
the app's first start, :func:`start_background_warm_up`) and loaded from disk afterwards.
``method="pca"`` is the instant fallback to show while UMAP computes. The pickled reducer is read
back only from the user's own cache file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from backend.errors import SoftMapError
from backend.settings import get_settings
from backend.store.cache import EmbeddingCache
from backend.store.scopes import Scope, scope_embeddings

log = logging.getLogger(__name__)

Method = Literal["umap", "pca"]
MIN_TILES = 4
#: From this many tiles UMAP gets a precomputed HNSW neighbour graph (below, UMAP computes exact
#: pairwise distances itself, as it does for small data).
PRECOMPUTED_KNN_MIN = 4096
#: Epochs of the SGD layout above 10k tiles when ``n_epochs`` is not given (UMAP's would be 200).
LARGE_EPOCHS = 100

_DDL = """
CREATE TABLE IF NOT EXISTS projections (
    projection_id TEXT PRIMARY KEY, set_id INTEGER NOT NULL, model_id TEXT,
    preprocessing_hash TEXT, scope TEXT, method TEXT, params JSON, data_version TEXT,
    fitted INTEGER, seconds DOUBLE, created_at TIMESTAMPTZ, reducer BLOB
);
CREATE TABLE IF NOT EXISTS projection_points (
    projection_id TEXT NOT NULL, tile_id TEXT NOT NULL, x FLOAT, y FLOAT, placed TEXT,
    PRIMARY KEY (projection_id, tile_id)
);
"""


@dataclass(frozen=True)
class ProjectionParams:
    """Parameters of a projection (all of them are part of the cache key).

    Attributes:
        method: ``umap`` or ``pca`` (2-D PCA, instant).
        pca_dims: reduce to this many dimensions with PCA before UMAP (0 = no PCA first).
        n_neighbors, min_dist, n_epochs: UMAP's (``n_epochs=None``: UMAP's default, 500, up to
            10k tiles, and :data:`LARGE_EPOCHS` above, where UMAP would use 200: with the PCA
            initialisation the layout has settled by then, and the epochs are most of a fit's
            time; trustworthiness of both in ``bench/bench_projection.py``).
        seed: random state. A seed makes UMAP deterministic but single-threaded.
        refit_ratio: refit instead of ``transform`` when the new tiles outnumber this share of
            the fitted ones.
    """

    method: Method = "umap"
    pca_dims: int = 50
    n_neighbors: int = 15
    min_dist: float = 0.1
    n_epochs: int | None = None
    seed: int | None = 0
    refit_ratio: float = field(default=0.5, compare=False)

    def key_params(self) -> dict[str, object]:
        out = asdict(self)
        out.pop("refit_ratio")
        if self.method == "pca":
            for k in ("pca_dims", "n_neighbors", "min_dist", "n_epochs"):
                out.pop(k)
        return out


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of a scope's tiles."""

    tile_ids: tuple[str, ...]
    xy: NDArray[np.float32]  # (n, 2), rows in tile_ids order
    method: Method
    params: dict[str, object]
    cached: bool  # every coordinate came from the cache
    transformed: int  # tiles placed with transform in this call
    fitted: int  # tiles the stored reducer was fitted on
    data_version: str
    projection_id: str
    seconds: float

    def to_json(self, *, points: bool = False) -> dict[str, object]:
        out: dict[str, object] = {
            "projection_id": self.projection_id,
            "method": self.method,
            "params": self.params,
            "tiles": len(self.tile_ids),
            "fitted": self.fitted,
            "transformed": self.transformed,
            "cached": self.cached,
            "data_version": self.data_version,
            "seconds": self.seconds,
        }
        if points:
            out["points"] = [
                {"tile_id": t, "x": round(float(x), 5), "y": round(float(y), 5)}
                for t, (x, y) in zip(self.tile_ids, self.xy, strict=True)
            ]
        return out


@dataclass
class _Reducer:
    """What is pickled: optional PCA pre-step and the 2-D reducer."""

    pre: Any
    reducer: Any

    def transform(self, vectors: NDArray[np.floating]) -> NDArray[np.float32]:
        x = _unit(vectors)
        if self.pre is not None:
            x = self.pre.transform(x)
        return np.asarray(self.reducer.transform(x), dtype=np.float32)


def _unit(v: NDArray[np.floating]) -> NDArray[np.float32]:
    x = np.asarray(v, dtype=np.float32)
    out: NDArray[np.float32] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def fit_reducer(
    vectors: NDArray[np.floating], params: ProjectionParams
) -> tuple[_Reducer, NDArray[np.float32]]:
    """Fit a projection on ``(n, d)`` vectors; returns the reducer and the ``(n, 2)`` coordinates.

    Raises:
        SoftMapError: fewer than ``MIN_TILES`` vectors.
    """
    from sklearn.decomposition import PCA

    n, d = vectors.shape
    if n < MIN_TILES:
        raise SoftMapError(
            f"A projection needs at least {MIN_TILES} embedded tiles; the scope has {n}.",
            title="Too few tiles",
        )
    x = _unit(vectors)
    if params.method == "pca":
        pca = PCA(n_components=2, random_state=params.seed)
        return _Reducer(None, pca), np.asarray(pca.fit_transform(x), dtype=np.float32)
    pre = None
    if params.pca_dims and d > params.pca_dims and n > params.pca_dims:
        pre = PCA(n_components=params.pca_dims, random_state=params.seed)
        x = pre.fit_transform(x).astype(np.float32)
    umap = import_umap()
    n_neighbors = max(2, min(params.n_neighbors, n - 1))
    knn: tuple[Any, ...] = (None, None, None)
    if n >= PRECOMPUTED_KNN_MIN:
        index = KnnIndex(x)
        knn = (*index.self_neighbours(n_neighbors), index)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=params.min_dist,
        n_epochs=params.n_epochs if params.n_epochs or n <= 10_000 else LARGE_EPOCHS,
        init="pca",
        random_state=params.seed,
        n_jobs=1 if params.seed is not None else -1,
        precomputed_knn=knn,
    )
    with warnings.catch_warnings():  # "not an NNDescent object": ours serves transform
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        xy = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    return _Reducer(pre, reducer), xy


class KnnIndex:
    """Nearest neighbours (Euclidean) among fitted vectors, through a usearch HNSW graph.

    UMAP takes it as its ``knn_search_index``: ``transform`` calls :meth:`query`. Pickled with
    the reducer without its graph, which is rebuilt on the first query after loading.
    """

    _angular_trees = False  # read by UMAP's transform

    def __init__(self, data: NDArray[np.float32]) -> None:
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self._graph: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.data, self._graph = state["data"], None

    def _index(self) -> Any:
        if self._graph is None:
            from usearch.index import Index

            graph = Index(ndim=self.data.shape[1], metric="l2sq", dtype="f32", connectivity=16,
                          expansion_add=64, expansion_search=64)  # fmt: skip
            graph.add(np.arange(len(self.data), dtype=np.uint64), self.data, threads=0)
            self._graph = graph
        return self._graph

    def _search(
        self, x: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        graph = self._index()
        graph.expansion_search = max(64, 2 * k)
        found = graph.search(np.ascontiguousarray(x, dtype=np.float32), k, threads=0)
        keys = np.asarray(found.keys, dtype=np.int64).reshape(len(x), -1)
        dists = np.sqrt(np.maximum(np.asarray(found.distances, np.float32), 0)).reshape(len(x), -1)
        return keys.astype(np.int32), dists.astype(np.float32)

    def self_neighbours(self, k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Each fitted vector's ``k`` nearest, itself first at distance 0 (what UMAP expects)."""
        keys, dists = self._search(self.data, k)
        rows = np.arange(len(self.data), dtype=np.int32)
        missing = keys[:, 0] != rows
        if missing.any():  # the graph missed a point itself (duplicates): put it first
            keys[missing, 1:] = keys[missing, :-1]
            dists[missing, 1:] = dists[missing, :-1]
            keys[missing, 0], dists[missing, 0] = rows[missing], 0.0
        dists[:, 0] = 0.0
        return keys, dists

    def query(self, x: NDArray[np.floating], k: int, epsilon: float = 0.1
              ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:  # fmt: skip
        """The ``k`` nearest fitted vectors of each row of ``x`` (UMAP's NNDescent interface)."""
        return self._search(np.asarray(x, dtype=np.float32), k)


# --- numba's JIT, once per install --------------------------------------------------------------
_JIT_LOCK = threading.Lock()
_WARM: dict[str, threading.Thread] = {}


def jit_cache_dir() -> Path:
    """Where numba keeps compiled UMAP code: ``SOFTMAP_JIT_CACHE_DIR``, else inside the virtual
    environment (one per install), else beside the cache file."""
    configured = get_settings().jit_cache_dir
    if configured is not None:
        return configured
    if sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        return Path(sys.prefix) / "softmap-jit-cache"
    return get_settings().db_path.parent / "jit-cache"


def configure_jit_cache() -> Path | None:
    """Point numba's on-disk cache at :func:`jit_cache_dir` (unless ``NUMBA_CACHE_DIR`` is set).

    Must run before umap is imported (:func:`import_umap` calls it); returns the folder, or None
    when it cannot be created (numba then compiles in every process, as before).
    """
    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or jit_cache_dir())
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        log.warning("No on-disk JIT cache (%s): UMAP compiles in every process", e)
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if "numba" in sys.modules:  # imported already: the locator reads the config, not the env
        from numba.core import config

        setattr(config, "CACHE_DIR", str(folder))  # noqa: B010  (untyped module)
    return folder


def import_umap() -> Any:
    """umap, with numba's on-disk cache on for every jitted function of umap and pynndescent.

    Most of umap's functions are ``@numba.njit()`` without ``cache=True``, so numba's cache alone
    would not keep them: caching is enabled on each dispatcher before its first compilation.
    """
    with _JIT_LOCK:
        if "umap" not in sys.modules:
            configure_jit_cache()
        import umap
        import umap.layouts
        import umap.spectral
        import umap.umap_
        from numba.core.caching import NullCache
        from numba.core.dispatcher import Dispatcher

        for name, module in list(sys.modules.items()):
            if not name.startswith(("umap", "pynndescent")) or module is None:
                continue
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher) and isinstance(
                    getattr(value, "_cache", None), NullCache
                ):
                    try:
                        value.enable_caching()
                    except Exception:  # a function numba cannot cache (dynamic globals)
                        continue
        return umap


def start_background_warm_up() -> threading.Thread:
    """Warm UMAP up on a daemon thread, once per process (the app calls it at start).

    The first time after install this compiles (and stores) the JIT code, 1–2 minutes on 2
    cores; later it only loads the compiled code from disk, so the first fit a user asks for does
    not wait for either.
    """
    with _JIT_LOCK:
        thread = _WARM.get("warm")
        if thread is None:
            thread = threading.Thread(target=_quiet_warm_up, daemon=True, name="umap-warm-up")
            _WARM["warm"] = thread
            thread.start()
    return thread


def _quiet_warm_up() -> None:
    try:
        warm_up()
    except Exception:  # a failed warm-up only means the first fit compiles
        log.exception("UMAP warm-up failed")


def warm_up(n: int = PRECOMPUTED_KNN_MIN + 404, dim: int = 8) -> float:
    """Compile (or load from the on-disk cache) UMAP's numba code for fit and transform on small
    random data; returns seconds.

    ``n`` at :data:`PRECOMPUTED_KNN_MIN` or more takes the path real scopes of that size take
    (precomputed neighbours); smaller ``n`` the small-data path. The first call after install
    compiles (1–2 min on 2 cores) and stores the code; later processes load it in seconds.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    params = ProjectionParams(pca_dims=0, n_epochs=20)
    reducer, _ = fit_reducer(x, params)
    reducer.transform(x[:8] + 0.01)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m backend.analysis.projection --warm-up``: compile UMAP's JIT code (``make
    install`` runs it)."""
    import argparse

    parser = argparse.ArgumentParser(description="Compile UMAP's numba code into the JIT cache.")
    parser.add_argument("--warm-up", action="store_true", required=True)
    parser.parse_args(argv)
    seconds = warm_up()
    print(f"UMAP JIT warmed in {seconds:.1f} s; cache: {os.environ.get('NUMBA_CACHE_DIR')}")
    return 0


def _ensure(cache: EmbeddingCache) -> bool:
    return cache.ensure_schema("projection", _DDL)


def _projection_id(scope: Scope, params: ProjectionParams) -> str:
    blob = json.dumps(
        {
            "set": scope.eset.set_id,
            "model": scope.eset.model_id,
            "prep": scope.eset.preprocessing_hash,
            "scope": scope.key,
            "params": params.key_params(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def data_version(tile_ids: Sequence[str]) -> str:
    """A short hash of a set of tile ids (what a projection was fitted on)."""
    return hashlib.sha256("\n".join(sorted(tile_ids)).encode()).hexdigest()[:16]


def project(
    cache: EmbeddingCache,
    scope: Scope,
    params: ProjectionParams | None = None,
    *,
    refit: bool = False,
) -> Projection:
    """2-D coordinates for every tile of the scope, from the cache when possible.

    See the module docstring for when it fits, transforms or only reads. On a read-only cache
    without a stored projection it fits and returns without storing.

    Raises:
        SoftMapError: too few tiles to fit.
    """
    params = params or ProjectionParams()
    start = time.perf_counter()
    pid = _projection_id(scope, params)
    writable = not cache.read_only and _ensure(cache)
    stored = None if refit else _load(cache, pid)
    wanted = list(scope.tile_ids)
    if stored is not None:
        version, fitted, has_reducer, points = stored
        new = [t for t in wanted if t not in points]
        if not new:
            xy = np.array([points[t] for t in wanted], dtype=np.float32).reshape(-1, 2)
            return Projection(
                scope.tile_ids, xy, params.method, params.key_params(), True, 0, fitted,
                version, pid, round(time.perf_counter() - start, 3),
            )  # fmt: skip
        if has_reducer and len(new) <= params.refit_ratio * fitted:
            reducer = _load_reducer(cache, pid)
            ids, vectors = scope_embeddings(cache, scope.eset, new)
            placed = reducer.transform(vectors)
            if writable:
                _write_points(cache, pid, ids, placed, "transform")
            points.update({t: (float(x), float(y)) for t, (x, y) in zip(ids, placed, strict=True)})
            xy = np.array([points[t] for t in wanted], dtype=np.float32).reshape(-1, 2)
            return Projection(
                scope.tile_ids, xy, params.method, params.key_params(), False, len(ids), fitted,
                version, pid, round(time.perf_counter() - start, 3),
            )  # fmt: skip
    ids, vectors = scope_embeddings(cache, scope.eset, wanted)
    fit_start = time.perf_counter()
    reducer, xy = fit_reducer(vectors, params)
    fit_seconds = time.perf_counter() - fit_start
    version = data_version(ids)
    if writable:
        with cache.transaction() as cur:
            cur.execute("DELETE FROM projection_points WHERE projection_id = ?", [pid])
            cur.execute("DELETE FROM projections WHERE projection_id = ?", [pid])
            cur.execute(
                "INSERT INTO projections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    pid,
                    scope.eset.set_id,
                    scope.eset.model_id,
                    scope.eset.preprocessing_hash,
                    scope.key,
                    params.method,
                    json.dumps(params.key_params()),
                    version,
                    len(ids),
                    fit_seconds,
                    datetime.now(timezone.utc),
                    pickle.dumps(reducer, protocol=pickle.HIGHEST_PROTOCOL),
                ],
            )
        _write_points(cache, pid, ids, xy, "fit")
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    xy = xy[[by_id[t] for t in wanted]]
    return Projection(
        scope.tile_ids, xy, params.method, params.key_params(), False, 0, len(ids), version,
        pid, round(time.perf_counter() - start, 3),
    )  # fmt: skip


def _load(
    cache: EmbeddingCache, pid: str
) -> tuple[str, int, bool, dict[str, tuple[float, float]]] | None:
    if not _ensure(cache):
        return None
    with cache.cursor() as cur:
        row = cur.execute(
            "SELECT data_version, fitted, reducer IS NOT NULL FROM projections "
            "WHERE projection_id = ?",
            [pid],
        ).fetchone()
        if row is None:
            return None
        table = cur.execute(
            "SELECT tile_id, x, y FROM projection_points WHERE projection_id = ?", [pid]
        ).to_arrow_table()
    ids = table.column("tile_id").to_pylist()
    xs = table.column("x").to_numpy()
    ys = table.column("y").to_numpy()
    points = {t: (float(x), float(y)) for t, x, y in zip(ids, xs, ys, strict=True)}
    return str(row[0]), int(row[1]), bool(row[2]), points


def _load_reducer(cache: EmbeddingCache, pid: str) -> _Reducer:
    # The reducer is read only when new tiles need placing: it holds the fitted data (MBs).
    with cache.cursor() as cur:
        row = cur.execute(
            "SELECT reducer FROM projections WHERE projection_id = ?", [pid]
        ).fetchone()
    assert row is not None
    reducer: _Reducer = pickle.loads(row[0])
    return reducer


def _write_points(
    cache: EmbeddingCache,
    pid: str,
    ids: Sequence[str],
    xy: NDArray[np.float32],
    placed: str,
) -> None:
    import pyarrow as pa

    n = len(ids)
    table = pa.table(
        {
            "projection_id": [pid] * n,
            "tile_id": list(ids),
            "x": pa.array(xy[:, 0], pa.float32()),
            "y": pa.array(xy[:, 1], pa.float32()),
            "placed": [placed] * n,
        }
    )
    with cache.transaction() as cur:
        cur.register("_points", table)
        cur.execute("INSERT OR REPLACE INTO projection_points SELECT * FROM _points")
        cur.unregister("_points")


if __name__ == "__main__":
    raise SystemExit(main())
