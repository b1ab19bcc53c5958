"""The small reads interactive views make on every rerun: how far a model's embeddings go (a
data version to key derived results by), tiles under a point or inside a region, stored
predictions over a scope, similarities to one tile, and match heatmaps of results.

Each is a few indexed queries on the shared cache; views cache their results keyed by the data
version, so a rerun that changes nothing reads nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backend.classes.classifier import stored_predictions as stored_class_predictions
from backend.errors import NotFoundError
from backend.imagery.regions import Region
from backend.landcover.heads import check_head_applies
from backend.landcover.store import (
    StoredPredictions,
    ensure_tables,
    resolve_head,
    stored_predictions,
    write_predictions,
)
from backend.search.heatmap import MatchHeatmap, match_heatmaps
from backend.search.query import Scope as SearchScope
from backend.search.query import scope_tile_ids, tile_at_point
from backend.service.classes import ScopeRequest, resolve
from backend.service.workspace import Workspace
from backend.store.scopes import Scope, scope_embeddings
from backend.store.scopes import tile_records as scope_tile_records

#: A model's data version: (embedding set id, rows) per set that holds any embedding.
DataVersion = tuple[tuple[int, int], ...]


def model_version(ws: Workspace, model_id: str) -> DataVersion:
    """(set id, rows) of each embedding set of the model; empty when nothing is cached.

    A few ``count(*)``: cheap, and it changes whenever the model's embeddings do.
    """
    out = []
    with ws.cache(read_only=True) as cache:
        for s in cache.embedding_sets():
            if s.model_id != model_id:
                continue
            with cache.cursor() as cur:
                row = cur.execute(f"SELECT count(*) FROM {s.table_name}").fetchone()
            if row and row[0]:
                out.append((s.set_id, int(row[0])))
    return tuple(out)


def resolve_scope(ws: Workspace, req: ScopeRequest) -> Scope:
    """The embedded tiles a scope request names (see :class:`ScopeRequest`).

    Raises:
        NoEmbeddingsError, EmptyScopeError: nothing of the model is cached there.
    """
    with ws.cache(read_only=True) as cache:
        return resolve(ws, cache, req)[0]


def records(ws: Workspace, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Stored tile records in the order asked (missing ids left out), one join for many ids."""
    with ws.cache(read_only=True) as cache:
        return scope_tile_records(cache, tile_ids)


def tile_under(ws: Workspace, model_id: str, lon: float, lat: float) -> str | None:
    """The model's cached tile under a lon/lat point (first embedding set that has one)."""
    with ws.cache(read_only=True) as cache:
        for s in cache.embedding_sets():
            if s.model_id == model_id:
                hit = tile_at_point(cache, s, lon, lat)
                if hit is not None:
                    return hit
    return None


def region_tiles(
    ws: Workspace, model_id: str, source_id: str, region: Region, limit: int
) -> list[dict[str, Any]]:
    """Records of the model's cached tiles over a region of one source (at most ``limit``)."""
    scope = SearchScope("region", source_id, region)
    ids: dict[str, None] = {}
    with ws.cache(read_only=True) as cache:
        for s in cache.embedding_sets():
            if s.model_id == model_id:
                ids.update(dict.fromkeys(scope_tile_ids(cache, s, scope) or []))
        return cache.tiles(sorted(ids)[:limit])


def landcover_predictions(
    ws: Workspace, model_id: str, tile_ids: Sequence[str], head_id: str | None = None
) -> StoredPredictions:
    """Stored tile probabilities of a model's head (default: the most recently written head)."""
    with ws.cache(read_only=True) as cache:
        return stored_predictions(cache, model_id, tile_ids, head_id)


def predict_scope_landcover(ws: Workspace, scope: Scope) -> int:
    """Predict and store land cover for the scope's tiles that lack it; returns tiles predicted.

    The embeddings are cached already, so this only applies the model's land-cover head.

    Raises:
        UnknownHeadError: the model has no land-cover head.
        HeadMismatchError: the head was fitted on embeddings of another preprocessing.
    """
    with ws.cache() as cache:
        head = resolve_head(cache, scope.eset.model_id, None, ws.settings)
        check_head_applies(head, scope.eset.preprocessing_hash, cache.set_preprocessing(scope.eset))
        ensure_tables(cache)
        have = set(stored_predictions(cache, head.model_id, scope.tile_ids, head.head_id).tile_ids)
        todo = [t for t in scope.tile_ids if t not in have]
        if todo:
            ids, x = scope_embeddings(cache, scope.eset, todo)
            write_predictions(cache, "landcover_predictions", head, ids, head.tile.predict(x))
    return len(todo)


def class_predictions(
    ws: Workspace, class_name: str, scope: Scope
) -> tuple[list[str], NDArray[np.float64]]:
    """(tile ids, probabilities) a class's last training stored for the scope's embedding set."""
    with ws.cache(read_only=True) as cache:
        return stored_class_predictions(cache, class_name, scope.eset, None)


def similarities(ws: Workspace, scope: Scope, anchor: str) -> dict[str, float]:
    """Cosine similarity of every scope tile to ``anchor`` (a tile of the same embedding set).

    Raises:
        NotFoundError: the anchor has no embedding in the scope's embedding set.
    """
    with ws.cache(read_only=True) as cache:
        ids, x = scope_embeddings(cache, scope.eset, scope.tile_ids)
        _, a = scope_embeddings(cache, scope.eset, [anchor])
    if len(a) == 0:
        raise NotFoundError(f"Tile {anchor} has no {scope.eset.model_id} embedding.")
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    q = a[0] / max(float(np.linalg.norm(a[0])), 1e-12)
    return dict(zip(ids, (unit @ q).tolist(), strict=True))


def result_heatmap(
    ws: Workspace, model_id: str, preprocessing_hash: str, tile_id: str, query: NDArray[np.float32]
) -> MatchHeatmap | None:
    """Where inside a result tile the match is: its patch tokens against the query vector."""
    engine = ws.engine(model_id)
    with ws.cache(read_only=True) as cache:
        eset = cache.embedding_set(model_id, preprocessing_hash)
        if eset is None:
            return None
        return match_heatmaps(cache, engine, eset, [tile_id], query, catalog=ws.catalog())[0]
