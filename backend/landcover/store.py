"""Where land cover is kept: fitted heads and per-tile (and per-token) predictions in DuckDB.

Tables (owned here, created on first use): ``landcover_heads`` (metadata JSON + ``.npz`` weights),
``landcover_predictions`` (``FLOAT[9]`` per tile, model and head) and
``landcover_token_predictions`` (``g × g × 9`` probabilities per tile, model and head),
``landcover_ood`` (out-of-distribution scores per tile, or per cell with ``grid > 1``). Bundled
heads live as files in ``assets/models/heads/`` and are listed after the user's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from backend.errors import UnknownHeadError
from backend.landcover.heads import LandCoverHead, load_bundled
from backend.landcover.labels import N_CLASSES
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS landcover_heads (
    head_id TEXT PRIMARY KEY, model_id TEXT NOT NULL, preprocessing_hash TEXT, mapping TEXT,
    created_at TIMESTAMPTZ, info JSON, params BLOB
);
CREATE TABLE IF NOT EXISTS landcover_predictions (
    tile_id TEXT NOT NULL, model_id TEXT NOT NULL, head_id TEXT NOT NULL,
    probabilities FLOAT[{N_CLASSES}] NOT NULL, created_at TIMESTAMPTZ,
    PRIMARY KEY (tile_id, model_id, head_id)
);
CREATE TABLE IF NOT EXISTS landcover_token_predictions (
    tile_id TEXT NOT NULL, model_id TEXT NOT NULL, head_id TEXT NOT NULL, grid INTEGER NOT NULL,
    probabilities FLOAT[] NOT NULL, created_at TIMESTAMPTZ,
    PRIMARY KEY (tile_id, model_id, head_id)
);
CREATE TABLE IF NOT EXISTS landcover_ood (
    tile_id TEXT NOT NULL, model_id TEXT NOT NULL, head_id TEXT NOT NULL, grid INTEGER NOT NULL,
    scores FLOAT[] NOT NULL, created_at TIMESTAMPTZ,
    PRIMARY KEY (tile_id, model_id, head_id, grid)
);
"""


def ensure_tables(cache: EmbeddingCache) -> bool:
    """Create the land-cover tables (False on a read-only cache that lacks them)."""
    return cache.ensure_schema("landcover", _SCHEMA)


def now() -> datetime:
    return datetime.now(timezone.utc)


def bundled_heads_dir(settings: Settings | None = None) -> Path:
    """Where bundled heads live: ``<assets>/models/heads``."""
    return (settings or get_settings()).assets_dir / "models" / "heads"


# --- heads: store, list, resolve ------------------------------------------------------------
def save_head(cache: EmbeddingCache, head: LandCoverHead) -> None:
    """Store a user-fitted head in the cache (replacing one with the same id)."""
    ensure_tables(cache)
    with cache.transaction() as cur:
        cur.execute("DELETE FROM landcover_heads WHERE head_id = ?", [head.head_id])
        cur.execute(
            "INSERT INTO landcover_heads VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                head.head_id,
                head.model_id,
                head.preprocessing_hash,
                head.mapping,
                now(),
                json.dumps(head.info()),
                head.arrays_bytes(),
            ],
        )
    forget_predictions(cache, head.head_id)


_PREDICTION_TABLES = ("landcover_predictions", "landcover_token_predictions", "landcover_ood")


def forget_stale_predictions(cache: EmbeddingCache, head: LandCoverHead) -> None:
    """Delete stored predictions of ``head``'s id written before the head was fitted.

    A bundled head refitted under the same id (``softmap-default@reference``) reaches other
    caches through the assets, not through :func:`save_head`: their maps of the earlier head
    would otherwise be served as this one's.
    """
    if not head.created_at or not ensure_tables(cache):
        return
    created = datetime.fromisoformat(head.created_at)
    with cache.cursor() as cur:
        stale = any(
            cur.execute(
                f"SELECT 1 FROM {table} WHERE head_id = ? AND created_at < ? LIMIT 1",
                [head.head_id, created],
            ).fetchone()
            for table in _PREDICTION_TABLES
        )
    if stale:
        with cache.transaction() as cur:
            for table in _PREDICTION_TABLES:
                cur.execute(
                    f"DELETE FROM {table} WHERE head_id = ? AND created_at < ?",
                    [head.head_id, created],
                )


def forget_predictions(cache: EmbeddingCache, head_id: str) -> None:
    """Delete the stored predictions of a head id (stale once a head with that id is refitted)."""
    if not ensure_tables(cache):
        return
    with cache.transaction() as cur:
        for table in _PREDICTION_TABLES:
            cur.execute(f"DELETE FROM {table} WHERE head_id = ?", [head_id])


def list_heads(
    cache: EmbeddingCache | None, model_id: str | None = None, settings: Settings | None = None
) -> list[LandCoverHead]:
    """User-fitted heads (newest first), then bundled ones, optionally for one model."""
    heads: list[LandCoverHead] = []
    if cache is not None and cache.has_table("landcover_heads"):  # listing creates nothing
        with cache.cursor() as cur:
            rows = cur.execute(
                "SELECT info, params FROM landcover_heads "
                "WHERE ? IS NULL OR model_id = ? ORDER BY created_at DESC",
                [model_id, model_id],
            ).fetchall()
        heads += [LandCoverHead.from_parts(json.loads(i), bytes(p), bundled=False) for i, p in rows]
    heads += [
        h
        for h in load_bundled(bundled_heads_dir(settings))
        if model_id is None or h.model_id == model_id
    ]
    return heads


def resolve_head(
    cache: EmbeddingCache | None,
    model_id: str,
    head_id: str | None = None,
    settings: Settings | None = None,
) -> LandCoverHead:
    """The head to use: ``head_id`` if given, else the newest fitted one, else the bundled one.

    Raises:
        UnknownHeadError: no such head, a head of another model, or none for the model.
    """
    heads = list_heads(cache, None, settings)
    if head_id is not None:
        for h in heads:
            if h.head_id == head_id:
                if h.model_id != model_id:
                    raise UnknownHeadError(
                        f"Head '{head_id}' belongs to {h.model_id}, not {model_id}: pass a head "
                        f"of {model_id} or --model {h.model_id}."
                    )
                return h
        mine = ", ".join(h.head_id for h in heads if h.model_id == model_id) or "none"
        raise UnknownHeadError(
            f"There is no land-cover head '{head_id}'. Heads for {model_id}: {mine}."
        )
    for h in heads:
        if h.model_id == model_id:
            return h
    raise UnknownHeadError(
        f"There is no land-cover head for {model_id}. Fit one with `softmap landcover fit "
        f"--model {model_id} --source demo/brandenburg` (or --labels PATH --mapping NAME)."
    )


# --- stored predictions ------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredPredictions:
    """Per-tile class probabilities read back from the cache (tiles without one left out)."""

    head_id: str | None
    tile_ids: tuple[str, ...]
    probabilities: NDArray[np.float32]  # (n, 9)


def stored_predictions(
    cache: EmbeddingCache, model_id: str, tile_ids: Sequence[str], head_id: str | None = None
) -> StoredPredictions:
    """Stored tile probabilities of ``model_id`` (``head_id``, or the most recently written head).

    The result keeps the order of ``tile_ids`` and leaves out tiles that have no prediction.
    """
    empty = StoredPredictions(head_id, (), np.zeros((0, N_CLASSES), dtype=np.float32))
    if not tile_ids or not ensure_tables(cache):
        return empty
    with cache.cursor() as cur:
        if head_id is None:
            row = cur.execute(
                """SELECT head_id FROM landcover_predictions
                WHERE model_id = ? AND tile_id IN (SELECT unnest(?::VARCHAR[]))
                GROUP BY head_id ORDER BY max(created_at) DESC LIMIT 1""",
                [model_id, list(tile_ids)],
            ).fetchone()
            if row is None:
                return empty
            head_id = str(row[0])
        table = cur.execute(
            """SELECT tile_id, probabilities FROM landcover_predictions
            WHERE model_id = ? AND head_id = ? AND tile_id IN (SELECT unnest(?::VARCHAR[]))""",
            [model_id, head_id, list(tile_ids)],
        ).to_arrow_table()
    found = dict(zip(table.column("tile_id").to_pylist(), _matrix(table, N_CLASSES), strict=True))
    keep = [t for t in tile_ids if t in found]
    probs = np.stack([found[t] for t in keep]) if keep else empty.probabilities
    return StoredPredictions(head_id, tuple(keep), probs.astype(np.float32))


def _matrix(table: pa.Table, width: int) -> NDArray[np.float32]:
    col = table.column("probabilities").combine_chunks()
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return flat.reshape(len(table), width)


def write_predictions(
    cache: EmbeddingCache,
    table_name: Literal["landcover_predictions", "landcover_token_predictions"],
    head: LandCoverHead,
    tile_ids: Sequence[str],
    probs: NDArray[np.float32],
    grid: int | None = None,
) -> None:
    n = len(tile_ids)
    flat = pa.array(np.ascontiguousarray(probs, dtype=np.float32).reshape(n, -1).ravel())
    width = int(probs.reshape(n, -1).shape[1])
    columns: dict[str, Any] = {
        "tile_id": list(tile_ids),
        "model_id": [head.model_id] * n,
        "head_id": [head.head_id] * n,
    }
    if grid is not None:
        columns["grid"] = pa.array([grid] * n, type=pa.int32())
        columns["probabilities"] = pa.ListArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)), flat
        )
    else:
        columns["probabilities"] = pa.FixedSizeListArray.from_arrays(flat, width)
    columns["created_at"] = pa.array([now()] * n, type=pa.timestamp("us", tz="UTC"))
    batch = pa.table(columns)
    with cache.transaction() as cur:
        cur.register("_lc", batch)
        cur.execute(f"INSERT INTO {table_name} SELECT * FROM _lc ON CONFLICT DO NOTHING")
        cur.unregister("_lc")


def stored_token_predictions(
    cache: EmbeddingCache, head: LandCoverHead, tile_ids: Sequence[str], grid: int
) -> dict[str, NDArray[np.float32]]:
    with cache.cursor() as cur:
        table = cur.execute(
            """SELECT tile_id, probabilities FROM landcover_token_predictions
            WHERE model_id = ? AND head_id = ? AND grid = ?
                AND tile_id IN (SELECT unnest(?::VARCHAR[]))""",
            [head.model_id, head.head_id, grid, list(tile_ids)],
        ).to_arrow_table()
    mat = _matrix(table, N_CLASSES * grid * grid).reshape(-1, N_CLASSES, grid, grid)
    return dict(zip(table.column("tile_id").to_pylist(), mat, strict=True))


def write_ood(
    cache: EmbeddingCache,
    head: LandCoverHead,
    tile_ids: Sequence[str],
    scores: NDArray[np.float32],
    grid: int,
) -> None:
    """Store out-of-distribution scores ``(n,)`` (grid 1) or ``(n, g, g)`` of tiles."""
    n = len(tile_ids)
    if n == 0:
        return
    flat = np.ascontiguousarray(scores, dtype=np.float32).reshape(n, -1)
    width = flat.shape[1]
    batch = pa.table(
        {
            "tile_id": list(tile_ids),
            "model_id": [head.model_id] * n,
            "head_id": [head.head_id] * n,
            "grid": pa.array([grid] * n, type=pa.int32()),
            "scores": pa.ListArray.from_arrays(
                pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
                pa.array(flat.ravel()),
            ),
            "created_at": pa.array([now()] * n, type=pa.timestamp("us", tz="UTC")),
        }
    )
    with cache.transaction() as cur:
        cur.register("_ood", batch)
        cur.execute("INSERT INTO landcover_ood SELECT * FROM _ood ON CONFLICT DO NOTHING")
        cur.unregister("_ood")


def stored_ood(
    cache: EmbeddingCache, head: LandCoverHead, tile_ids: Sequence[str], grid: int
) -> dict[str, NDArray[np.float32]]:
    """Stored scores of tiles: ``(g, g)`` arrays per tile (``(1, 1)`` for grid 1)."""
    with cache.cursor() as cur:
        table = cur.execute(
            """SELECT tile_id, scores FROM landcover_ood
            WHERE model_id = ? AND head_id = ? AND grid = ?
                AND tile_id IN (SELECT unnest(?::VARCHAR[]))""",
            [head.model_id, head.head_id, grid, list(tile_ids)],
        ).to_arrow_table()
    col = table.column("scores").combine_chunks()
    flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    mat = flat.reshape(len(table), grid, grid)
    return dict(zip(table.column("tile_id").to_pylist(), mat, strict=True))
