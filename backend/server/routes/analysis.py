"""``/projection`` (2-D UMAP/PCA of a scope, cached) and ``/landcover/heads``."""

from __future__ import annotations

from fastapi import APIRouter

from backend import service
from backend.server.deps import State
from backend.server.schemas import Payload, ProjectRequest

router = APIRouter(tags=["analysis"])


@router.post("/projection", response_model=Payload)
def projection(body: ProjectRequest, state: State) -> Payload:
    """Coordinates of every tile of the scope: cached, placed by transform, or fitted."""
    req = state.confine_request(body)
    with state.write_lock:
        outcome = service.project_scope(state.workspace, req)
    payload = {
        "scope": service.scope_json(outcome.scope),
        **outcome.projection.to_json(points=True),
        "file": outcome.written.to_json() if outcome.written else None,
    }
    return Payload.model_validate(state.public(payload))


@router.get("/landcover/heads", response_model=Payload)
def heads(state: State, model: str | None = None) -> Payload:
    return Payload(heads=[h.info() for h in service.landcover_heads(state.workspace, model)])
