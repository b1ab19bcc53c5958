"""``/classes`` (your own classes and their labels), ``/classify`` and ``/suggest``."""

from __future__ import annotations

from fastapi import APIRouter

from backend import service
from backend.server.deps import State
from backend.server.schemas import (
    ClassifyRequest,
    LabelRequest,
    Payload,
    RenameRequest,
    SuggestRequest,
)

router = APIRouter(tags=["classes"])


@router.get("/classes", response_model=Payload)
def list_classes(state: State) -> Payload:
    return Payload(classes=[c.to_json() for c in service.list_classes(state.workspace)])


@router.post("/classes", response_model=Payload, status_code=201)
def create(body: RenameRequest, state: State) -> Payload:
    """A new, empty class (``{"name": ...}``)."""
    with state.write_lock:
        cls = service.create_class(state.workspace, body.name)
    return Payload.model_validate({"class": cls.to_json()})


@router.get("/classes/{name}/labels", response_model=Payload)
def list_labels(name: str, state: State) -> Payload:
    labels = service.class_labels(state.workspace, name)
    return Payload.model_validate({"class": name, "labels": [lb.to_json() for lb in labels]})


@router.get("/classes/{name}/labels.geojson", response_model=Payload)
def labels_geojson(name: str, state: State) -> Payload:
    return Payload.model_validate(service.labels_geojson(state.workspace, name))


@router.post("/classes/{name}/labels", response_model=Payload)
def add_labels(name: str, body: LabelRequest, state: State) -> Payload:
    """Mark tiles positive (or ``negative``) for a class, created when new."""
    req = state.confine_request(body)
    with state.write_lock:
        change = service.add_labels(
            state.workspace, name, req.selection(), positive=not req.negative, origin=req.origin
        )
    return Payload.model_validate(change.to_json())


@router.post("/classes/{name}/labels/remove", response_model=Payload)
def remove_labels(name: str, body: LabelRequest, state: State) -> Payload:
    req = state.confine_request(body)
    with state.write_lock:
        change = service.remove_labels(state.workspace, name, req.selection())
    return Payload.model_validate(change.to_json())


@router.patch("/classes/{name}", response_model=Payload)
def rename(name: str, body: RenameRequest, state: State) -> Payload:
    with state.write_lock:
        cls = service.rename_class(state.workspace, name, body.name)
    return Payload.model_validate({"renamed": name, "class": cls.to_json()})


@router.delete("/classes/{name}", response_model=Payload)
def delete(name: str, state: State) -> Payload:
    with state.write_lock:
        removed = service.delete_class(state.workspace, name)
    return Payload(deleted=name, labels=removed)


@router.post("/classify", response_model=Payload)
def classify(body: ClassifyRequest, state: State, points: bool = False) -> Payload:
    """Train the class's classifier and predict (and store) it over the scope; with
    ``?points=true`` also every tile's probability."""
    req = state.confine_request(body)
    with state.write_lock:
        outcome = service.classify(state.workspace, req)
    payload = outcome.to_json()
    if points:
        c = outcome.classification
        payload["points"] = [
            {"tile_id": t, "probability": float(p)}
            for t, p in zip(c.tile_ids, c.probabilities.tolist(), strict=True)
        ]
    return Payload.model_validate(state.public(payload))


@router.post("/suggest", response_model=Payload)
def suggest(body: SuggestRequest, state: State) -> Payload:
    """The tiles to label next (uncertain and spread out)."""
    outcome = service.suggest_labels(state.workspace, state.confine_request(body))
    return Payload.model_validate(outcome.to_json())
