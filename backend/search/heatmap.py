"""Where inside a tile a match is: cosine of its ViT patch tokens against a query vector.

The query is the search's query vector, which lives in class-token space (a tile's cached
embedding is its class token). DINOv2's class and patch tokens come out of the same final norm,
so a patch token's cosine with the query says how much that 14 px (140 m) patch looks like the
query. :func:`token_mean_query` gives the alternative: the mean of a query tile's own patch
tokens, which compares patches with patches.

Tokens are recomputed on demand (read the tile, one forward pass) rather than stored: a ViT-S/14
tile has 16 × 16 tokens of 384 floats, 393 KB, 256 times its class token: 39 GB per 100k tiles.
Recomputing the top 10 results costs one batch of 10 forward passes (figures in docs/search.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from backend.errors import NotFoundError, SoftMapError
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SourceCatalog
from backend.models.inference import EmbeddingEngine
from backend.search.index import normalise
from backend.store.cache import EmbeddingCache, EmbeddingSet
from backend.store.catalog import open_catalog


@dataclass(frozen=True)
class MatchHeatmap:
    """Cosine of each patch token of a tile with the query, on the tile's ``(g, g)`` grid.

    Row 0 is the tile's top (north in the scene grid), column 0 its left edge.
    """

    tile_id: str
    scores: NDArray[np.float32]
    best_row: int
    best_col: int
    best_score: float
    footprint: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "tile_id": self.tile_id,
            "scores": np.round(self.scores, 5).tolist(),
            "best_row": self.best_row,
            "best_col": self.best_col,
            "best_score": self.best_score,
        }


def _preprocessing(cache: EmbeddingCache, eset: EmbeddingSet) -> dict[str, Any]:
    with cache.cursor() as cur:
        row = cur.execute(
            "SELECT preprocessing FROM embedding_sets WHERE set_id = ?", [eset.set_id]
        ).fetchone()
    return dict(json.loads(row[0])) if row and row[0] else {}


def tile_tokens(
    cache: EmbeddingCache,
    engine: EmbeddingEngine,
    eset: EmbeddingSet,
    tile_ids: Sequence[str],
    *,
    catalog: SourceCatalog | None = None,
) -> dict[str, NDArray[np.float32]]:
    """Recompute the ``(g, g, D)`` patch tokens of cached tiles, read as the set was embedded.

    Raises:
        SoftMapError: the engine's model is not a ViT, or not the set's model.
        NotFoundError: a tile is not in the cache.
    """
    meta = engine.model.meta
    if meta.patch_size is None:
        raise SoftMapError(
            f"{meta.id} is a CNN without patch tokens: match heatmaps need a ViT model.",
            title="No patch tokens",
        )
    if meta.id != eset.model_id:
        raise SoftMapError(f"The engine runs {meta.id}, but the set holds {eset.model_id}.")
    records = cache.tiles(list(tile_ids))
    found = {r["tile_id"] for r in records}
    missing = [t for t in tile_ids if t not in found]
    if missing:
        raise NotFoundError(f"Tile {missing[0]} is not in the cache {cache.path}.")
    prep = _preprocessing(cache, eset)
    fill = {str(k): float(v) for k, v in dict(prep.get("fill") or {}).items()}
    resampling = prep.get("resampling", "nearest")
    catalog = catalog or open_catalog(cache.path)
    out: dict[str, NDArray[np.float32]] = {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_source.setdefault(str(r["source_id"]), []).append(r)
    for source_id, recs in by_source.items():
        source = catalog.get(source_id)
        for i in range(0, len(recs), engine.batch_size):
            chunk = recs[i : i + engine.batch_size]
            raw = np.empty(
                (len(chunk), meta.in_chans, chunk[0]["height"], chunk[0]["width"]), np.float32
            )
            with SceneReader(source, resampling=resampling) as reader:
                for j, r in enumerate(chunk):
                    window = PixelWindow(r["col_off"], r["row_off"], r["width"], r["height"])
                    reader.read(window, meta.bands, fill=fill, out=raw[j])
            _, tokens = engine.forward(torch.from_numpy(raw), return_tokens=True)
            assert tokens is not None
            for r, tok in zip(chunk, tokens, strict=True):
                out[str(r["tile_id"])] = tok
    return out


def token_mean_query(tokens: NDArray[np.float32]) -> NDArray[np.float32]:
    """A query vector from a tile's patch tokens ``(g, g, D)``: their normalised mean."""
    return normalise(tokens.reshape(-1, tokens.shape[-1]).mean(axis=0))


def heatmap_from_tokens(
    tile_id: str,
    tokens: NDArray[np.float32],
    query: NDArray[np.float32],
    footprint: dict[str, Any] | None = None,
) -> MatchHeatmap:
    """Cosine of each token ``(g, g, D)`` with ``query`` ``(D,)``."""
    g1, g2, d = tokens.shape
    scores = (normalise(tokens.reshape(-1, d)) @ normalise(query)).reshape(g1, g2)
    best = int(np.argmax(scores))
    return MatchHeatmap(
        tile_id=tile_id,
        scores=scores.astype(np.float32),
        best_row=best // g2,
        best_col=best % g2,
        best_score=float(scores.flat[best]),
        footprint=footprint or {},
    )


def match_heatmaps(
    cache: EmbeddingCache,
    engine: EmbeddingEngine,
    eset: EmbeddingSet,
    tile_ids: Sequence[str],
    query: NDArray[np.float32],
    *,
    catalog: SourceCatalog | None = None,
) -> list[MatchHeatmap]:
    """Heatmaps of result tiles against a query vector (in ``tile_ids`` order).

    Args:
        cache: The cache holding the tiles.
        engine: An engine running the set's (ViT) model.
        eset: The embedding set the search ran in (its reading settings are reused).
        tile_ids: Result tiles.
        query: ``(D,)`` the search's query vector (``SearchQuery.vector``) or
            :func:`token_mean_query` of a query tile.
        catalog: Where tile sources are looked up (default: the cache's catalogue).
    """
    tokens = tile_tokens(cache, engine, eset, tile_ids, catalog=catalog)
    feet = {r["tile_id"]: json.loads(r["footprint"]) for r in cache.tiles(list(tile_ids))}
    return [heatmap_from_tokens(t, tokens[t], query, feet.get(t)) for t in tile_ids]
