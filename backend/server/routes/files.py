"""``/files`` (upload inputs, download results, all inside the data folder) and ``/exports``."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from backend import service
from backend.errors import NotFoundError
from backend.server.deps import State
from backend.server.schemas import ExportRequest, FileInfo, FileList, Payload
from backend.server.security import PathNotAllowedError, confine
from backend.server.state import OUTPUTS, UPLOADS

router = APIRouter(tags=["files"])


@router.get("/files", response_model=FileList)
def list_files(state: State) -> FileList:
    out = []
    for sub in (UPLOADS, OUTPUTS):
        root = state.data_dir / sub
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.endswith(".part"):
                out.append(FileInfo(path=state.relative(path), bytes=path.stat().st_size))
    return FileList(files=out)


@router.get("/files/{name:path}", response_class=FileResponse)
def download(name: str, state: State) -> FileResponse:
    path = confine(state.data_dir, name, what="file")
    if not path.is_file():
        raise NotFoundError(
            f"No file '{name}' in the service's data folder.", title="File not found"
        )
    return FileResponse(path, filename=path.name)


@router.put("/files/{name:path}", response_model=FileInfo, status_code=201)
async def upload(name: str, request: Request, state: State) -> FileInfo:
    """Store the request body as ``uploads/…`` (GeoJSON is checked as the CLI checks an AOI)."""
    if not name.startswith(f"{UPLOADS}/"):
        raise PathNotAllowedError(f"Uploads go under {UPLOADS}/ (e.g. {UPLOADS}/aoi.geojson).")
    path = confine(state.data_dir, name, what="upload path")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        with part.open("wb") as f:
            async for chunk in request.stream():
                f.write(chunk)
        if path.suffix.lower() in (".geojson", ".json"):
            _check_geojson(part)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
    return FileInfo(path=state.relative(path), bytes=path.stat().st_size)


def _check_geojson(path: Path) -> None:
    from backend.imagery.regions import parse_geojson

    parse_geojson(path.read_bytes())


@router.post("/exports", response_model=Payload)
def export(body: ExportRequest, state: State) -> Payload:
    """Predictions, a probability map, an area table or embeddings as a file under outputs/."""
    req = state.confine_request(body)
    with state.write_lock:
        outcome = service.export(state.workspace, req)
    payload = {
        "kind": outcome.kind,
        "scope": service.scope_json(outcome.scope),
        **outcome.written.to_json(),
    }
    return Payload.model_validate(state.public(payload))
