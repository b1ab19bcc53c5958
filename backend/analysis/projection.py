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

Embeddings are L2-normalised first, so Euclidean distances follow cosine similarity. UMAP's numba
JIT costs 10–30 s on the first fit of a process: call :func:`warm_up` once (the app does, in a
cached resource) so users do not wait for it. ``method="pca"`` is the instant fallback to show
while UMAP computes. The pickled reducer is read back only from the user's own cache file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from backend.errors import SoftMapError
from backend.store.cache import EmbeddingCache
from backend.store.scopes import Scope, scope_embeddings

Method = Literal["umap", "pca"]
MIN_TILES = 4

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
        n_neighbors, min_dist, n_epochs: UMAP's (``n_epochs=None``: UMAP's default, 200 for
            large data and 500 for small).
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
    import umap

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(params.n_neighbors, n - 1)),
        min_dist=params.min_dist,
        n_epochs=params.n_epochs,
        init="pca",
        random_state=params.seed,
        n_jobs=1 if params.seed is not None else -1,
    )
    xy = np.asarray(reducer.fit_transform(x), dtype=np.float32)
    return _Reducer(pre, reducer), xy


def warm_up(n: int = 4500, dim: int = 8) -> float:
    """Compile UMAP's numba code (fit and transform) on small random data; returns seconds.

    ``n`` above 4096 makes UMAP use (and compile) pynndescent, as real scopes of that size do;
    a smaller warm-up leaves most of the JIT to the first real fit. Costs 15–50 s once per
    process (2 shared cores); later fits in the process skip it.
    """
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    params = ProjectionParams(pca_dims=0, n_epochs=20)
    reducer, _ = fit_reducer(x, params)
    reducer.transform(x[:8] + 0.01)
    return time.perf_counter() - start


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
