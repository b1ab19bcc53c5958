"""``/search``: tiles like the query tiles (``GET`` with query parameters, or ``POST`` a body)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from backend import service
from backend.errors import SoftMapError
from backend.server.deps import State
from backend.server.schemas import Payload, SearchOut, SearchRequest
from backend.server.state import ServiceState

router = APIRouter(tags=["search"])

#: Tile records one ``GET /tiles`` returns at most.
MAX_TILES = 5000


def run_search(state: ServiceState, body: SearchRequest) -> SearchOut:
    """The same checks and call as ``softmap search``."""
    req = state.confine_request(body)
    if not (req.tiles or req.point or req.positives):
        raise SoftMapError(
            "Give a query: tiles, point (lon, lat) or positives.", title="Invalid query"
        )
    if req.point is not None:
        lon, lat = req.point
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise SoftMapError(
                f"point {lon},{lat} is not a lon/lat position.", title="Invalid query"
            )
    if req.scope == "source" and not req.source:
        raise SoftMapError("scope 'source' needs a source.", title="Invalid query")
    if req.scope == "region" and req.region is None:
        raise SoftMapError("scope 'region' needs a region.", title="Invalid query")
    found = service.find_similar(state.workspace, req)
    vector = found.query.vector.astype(float).round(6).tolist() if found.query else None
    return SearchOut.model_validate({**found.to_json(), "query_vector": vector})


@router.get("/tiles", response_model=Payload)
def tiles(
    state: State, id: Annotated[list[str] | None, Query(description="tile id")] = None
) -> Payload:
    """Cached tiles' records (source, grid position, lon/lat footprint, quality), as asked."""
    ids = id or []
    if not ids or len(ids) > MAX_TILES:
        raise SoftMapError(
            f"Ask for 1 to {MAX_TILES} tiles (id=…, repeated).", title="Invalid query"
        )
    records = service.tile_records(state.workspace, ids)
    # The footprint is stored as GeoJSON text; clients get the object.
    out = [
        {**r, "footprint": json.loads(r["footprint"])} if isinstance(r.get("footprint"), str) else r
        for r in records
    ]
    return Payload(tiles=out)


@router.get("/tiles/at", response_model=Payload)
def tile_at(state: State, model: str, lon: float, lat: float) -> Payload:
    """The model's cached tile under a lon/lat point (``tile_id`` null: none there)."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise SoftMapError(f"point {lon},{lat} is not a lon/lat position.", title="Invalid query")
    return Payload(tile_id=service.tile_under(state.workspace, model, lon, lat))


class RegionTilesRequest(BaseModel):
    """The model's cached tiles over a region of one source (the app's tile grid)."""

    model: str
    source: str
    region: service.RegionSpec
    limit: int = Field(default=MAX_TILES, ge=1, le=MAX_TILES)


@router.post("/tiles/region", response_model=Payload)
def region_tiles(body: RegionTilesRequest, state: State) -> Payload:
    """Records of the model's cached tiles over a region of one source (at most ``limit``)."""
    req = state.confine_request(body)
    region = state.region(req.region)
    found = service.region_tiles(state.workspace, req.model, req.source, region, req.limit)
    return Payload(tiles=found)


class HeatmapRequest(BaseModel):
    """Where inside a result tile the match is: its patch tokens against the query vector."""

    model: str
    preprocessing_hash: str
    tile_id: str
    query: list[float] = Field(min_length=1, max_length=8192)


@router.post("/search/heatmap", response_model=Payload)
def heatmap(body: HeatmapRequest, state: State) -> Payload:
    """The result tile's patch-token cosines with the query (``heatmap`` null: none stored)."""
    query = np.asarray(body.query, dtype=np.float32)
    found = service.result_heatmap(
        state.workspace, body.model, body.preprocessing_hash, body.tile_id, query
    )
    if found is None:
        return Payload(heatmap=None)
    return Payload(heatmap={**found.to_json(), "footprint": found.footprint})


@router.post("/search", response_model=SearchOut)
def search_post(body: SearchRequest, state: State) -> SearchOut:
    return run_search(state, body)


@router.get("/search", response_model=SearchOut)
def search_get(
    state: State,
    model: str,
    tile: Annotated[list[str] | None, Query(description="query tile id")] = None,
    point: Annotated[str | None, Query(description="LON,LAT")] = None,
    positive: Annotated[list[str] | None, Query(description="positive example")] = None,
    negative: Annotated[list[str] | None, Query(description="negative example")] = None,
    source: str | None = None,
    bbox: Annotated[str | None, Query(description="W,S,E,N (a region scope)")] = None,
    k: Annotated[int, Query(ge=1)] = 10,
    threshold: float | None = None,
    scope: Literal["region", "source", "all"] | None = None,
    suppress: bool = True,
    engine: Literal["auto", "exact", "hnsw"] = "auto",
    preprocessing: str | None = None,
) -> SearchOut:
    lonlat = None
    if point is not None:
        try:
            lon, lat = (float(v) for v in point.split(","))
        except ValueError:
            raise SoftMapError(
                f"point takes LON,LAT (two numbers), not '{point}'.", title="Invalid query"
            ) from None
        lonlat = (lon, lat)
    req = SearchRequest(
        model=model,
        tiles=tuple(tile or ()),
        point=lonlat,
        positives=tuple(positive or ()),
        negatives=tuple(negative or ()),
        source=source,
        region=service.RegionSpec(bbox=bbox) if bbox else None,
        k=k,
        threshold=threshold,
        scope=scope,
        suppress=suppress,
        engine=engine,
        preprocessing=preprocessing,
    )
    return run_search(state, req)
