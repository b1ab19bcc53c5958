"""Find places like this: tiles, a point, or positive/negative examples, within a scope."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from backend.search.query import Scope, ScopeKind, SearchResponse, search
from backend.service.workspace import RegionSpec, Request, Workspace

SearchEngine = Literal["auto", "exact", "hnsw"]


class SearchRequest(Request):
    """A similarity search (``softmap search``).

    The scope defaults to the region when one is given, else the source when one is given,
    else everything cached for the model.
    """

    model: str = Field(description="model id whose embeddings are searched")
    source: str | None = None
    region: RegionSpec | None = None
    tiles: tuple[str, ...] = Field(default=(), description="query tile ids")
    point: tuple[float, float] | None = Field(default=None, description="(lon, lat) query")
    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    k: int = Field(default=10, description="results wanted")
    threshold: float | None = Field(default=None, description="drop results scoring below")
    scope: ScopeKind | None = None
    suppress: bool = Field(default=True, description="drop results touching a better one")
    engine: SearchEngine = "auto"
    preprocessing: str | None = Field(default=None, description="embedding set, if several")


def search_scope(req: SearchRequest) -> Scope:
    """The scope a request names (its defaults spelled out).

    Raises:
        SoftMapError: a source scope without a source, a region scope without a region.
    """
    region = req.region.resolve() if req.region else None
    kind: ScopeKind = req.scope or ("region" if region else "source" if req.source else "all")
    return Scope(kind, req.source if kind != "all" else None, region if kind == "region" else None)


def find_similar(ws: Workspace, req: SearchRequest) -> SearchResponse:
    """The ``k`` tiles most like the query within the scope, best first.

    Raises:
        NoEmbeddingsError, NotFoundError, EmptyScopeError, SoftMapError: see
        :func:`backend.search.query.search`.
    """
    scope = search_scope(req)
    with ws.cache(read_only=True) as cache:
        return search(
            cache,
            req.model,
            tiles=req.tiles,
            point=req.point,
            positives=req.positives,
            negatives=req.negatives,
            scope=scope,
            k=req.k,
            threshold=req.threshold,
            suppress=req.suppress,
            engine=req.engine,
            preprocessing_hash=req.preprocessing,
        )
