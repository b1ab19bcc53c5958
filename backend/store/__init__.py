"""Store: the DuckDB cache of tiles, embedding sets, runs and registered sources.

It depends only on the imagery's small domain types; analyses add their own feature tables
through :meth:`EmbeddingCache.ensure_schema`.
"""

from backend.store.cache import CacheStats, EmbeddingCache, EmbeddingSet
from backend.store.catalog import open_catalog, register_source, registered_sources, remove_source
from backend.store.quality import TileQuality, filter_tile_ids, tile_quality
from backend.store.scopes import Scope, resolve_scope

__all__ = [
    "CacheStats",
    "EmbeddingCache",
    "EmbeddingSet",
    "Scope",
    "TileQuality",
    "filter_tile_ids",
    "open_catalog",
    "register_source",
    "registered_sources",
    "remove_source",
    "resolve_scope",
    "tile_quality",
]
