"""``/sources``: the catalogue; register imagery uploaded to the data folder; remove it."""

from __future__ import annotations

from fastapi import APIRouter

from backend import service
from backend.imagery.sources import BUNDLED_PREFIX, source_manifest
from backend.server.deps import State
from backend.server.schemas import AddSourceRequest, SourceInfo, SourceList, SourceRemoved

router = APIRouter(prefix="/sources", tags=["sources"])


@router.get("", response_model=SourceList)
def list_sources(state: State) -> SourceList:
    """Every source; a registered one with its ``manifest`` too (its description with the
    absolute folder, so a client on the same disk can read its pixels)."""
    infos = [i.to_json() for i in service.list_sources(state.workspace)]
    for info in infos:
        if info.get("registered"):
            info["manifest"] = source_manifest(state.source(str(info["id"])))
    return SourceList(sources=[SourceInfo.model_validate(i) for i in infos])


@router.get("/{source_id:path}", response_model=SourceInfo)
def get_source(source_id: str, state: State) -> SourceInfo:
    s = state.source(source_id)
    return SourceInfo.model_validate(
        {**s.summary(), "registered": not s.id.startswith(BUNDLED_PREFIX)}
    )


@router.post("", response_model=SourceInfo, status_code=201)
def add_source(body: AddSourceRequest, state: State) -> SourceInfo:
    """Register imagery that lies in the data folder, checked as ``softmap sources add``."""
    req = state.confine_request(body)
    with state.write_lock:
        source = service.add_source(state.workspace, req)
    return SourceInfo.model_validate(state.public({**source.summary(), "registered": True}))


@router.delete("/{source_id:path}", response_model=SourceRemoved)
def remove_source(source_id: str, state: State) -> SourceRemoved:
    with state.write_lock:
        dropped = service.remove_source(state.workspace, source_id)
    return SourceRemoved(removed=source_id, tiles_dropped=dropped)
