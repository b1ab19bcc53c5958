"""Search: "find places like this" over cached embeddings.

Queries from tiles, a point or positive/negative examples; exact or HNSW index; match heatmaps.
"""

from backend.search.index import VectorIndex
from backend.search.index_sync import get_index, sync_index
from backend.search.query import SearchQuery, SearchResponse, SearchResult, build_query, search

__all__ = [
    "SearchQuery",
    "SearchResponse",
    "SearchResult",
    "VectorIndex",
    "build_query",
    "get_index",
    "search",
    "sync_index",
]
