"""``/jobs``: long work's state and progress, a server-sent-events stream, cancel and resume.

``POST /embed``, ``/landcover``, ``/change`` and ``/report`` answer ``202`` with the job at once;
``GET /jobs/{id}`` gives its state and progress (done/total, tiles/s, ETA) and, when it has
finished, its result or its error (the same ``{"title", "message"}`` as any error response).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from backend import service
from backend.errors import NotFoundError
from backend.landcover.maps import LandCoverResult
from backend.server.deps import State
from backend.server.landcover_arrays import pack
from backend.server.schemas import (
    ChangeRequest,
    EmbedRequest,
    JobInfo,
    JobKind,
    JobList,
    JobState,
    LandCoverRequest,
    ReportRequest,
)
from backend.server.state import ServiceState
from backend.server.work import prepare

router = APIRouter(tags=["jobs"])

#: How often an idle event stream sends a comment, so proxies keep it open.
HEARTBEAT_S = 10.0


def _submit(state: ServiceState, kind: JobKind, request: BaseModel) -> JobInfo:
    return state.jobs.submit(kind, prepare(state, request))


@router.post("/embed", response_model=JobInfo, status_code=202)
def embed(body: EmbedRequest, state: State) -> JobInfo:
    """Embed a region (only tiles the cache lacks) as a job."""
    return _submit(state, "embed", body)


@router.post("/landcover", response_model=JobInfo, status_code=202)
def landcover(body: LandCoverRequest, state: State) -> JobInfo:
    """Map a region's land cover (embedding what is missing) as a job."""
    return _submit(state, "landcover", body)


@router.post("/change", response_model=JobInfo, status_code=202)
def change(body: ChangeRequest, state: State) -> JobInfo:
    """Rank a region's tiles by embedding change between two sources, as a job."""
    return _submit(state, "change", body)


@router.post("/compare", response_model=JobInfo, status_code=202)
def compare(body: ChangeRequest, state: State) -> JobInfo:
    """The app's comparison as a job: both dates embedded first, every matched pair with its
    footprint and the distance raster in the result (``backend.server.change_map``)."""
    return _submit(state, "compare", body)


@router.post("/report", response_model=JobInfo, status_code=202)
def report(body: ReportRequest, state: State) -> JobInfo:
    """Write a region's HTML land-cover report under outputs/, as a job."""
    return _submit(state, "report", body)


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    state: State, status: JobState | None = None, limit: int = Query(50, ge=1, le=1000)
) -> JobList:
    return JobList(jobs=state.jobs.list(state=status, limit=limit))


@router.get("/jobs/{job_id}", response_model=JobInfo)
async def get_job(job_id: str, state: State) -> JobInfo:
    return state.jobs.get(job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobInfo)
def cancel_job(job_id: str, state: State) -> JobInfo:
    """Cancel: a queued job at once, a running one after the batch in flight (kept)."""
    return state.jobs.cancel(job_id)


@router.post("/jobs/{job_id}/resume", response_model=JobInfo, status_code=202)
def resume_job(job_id: str, state: State) -> JobInfo:
    """Queue an interrupted, failed or cancelled job again; it computes only what is missing."""
    return state.jobs.resume(job_id)


@router.get(
    "/jobs/{job_id}/landcover.npz",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def landcover_arrays(job_id: str, state: State) -> Response:
    """A finished land-cover job's map with its probabilities (NumPy ``.npz``), kept for the
    service's last few maps: what a client draws the map layers from."""
    return Response(pack(_shelved(state, job_id)), media_type="application/octet-stream")


@router.get("/jobs/{job_id}/landcover/{kind}", response_class=Response)
def landcover_export(job_id: str, kind: service.LandCoverExportKind, state: State) -> Response:
    """One of the files offered next to a land-cover job's map (tiles, COG, areas CSV,
    embeddings), as ``softmap report``'s downloads."""
    found = _shelved(state, job_id)
    with tempfile.TemporaryDirectory(prefix="softmap-export-") as tmp:
        path = Path(tmp) / service.landcover_export_name(kind, found)
        service.landcover_download(state.workspace, kind, found, path)
        data = path.read_bytes()
    return Response(
        data,
        media_type=service.LANDCOVER_EXPORTS[kind].mime,
        headers={"Content-Disposition": f'attachment; filename="{path.name}"'},
    )


def _shelved(state: ServiceState, job_id: str) -> LandCoverResult:
    state.jobs.get(job_id)  # 404 for an unknown job
    found = state.landcover_maps.get(job_id)
    if found is None:
        raise NotFoundError(
            f"Job {job_id} has no land-cover map in memory (not a finished land-cover job, or "
            "one of the service's older maps): submit POST /landcover again.",
        )
    return found


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request, state: State) -> StreamingResponse:
    """Server-sent events: one ``job`` event per change (state or progress) until it finishes."""
    state.jobs.get(job_id)  # 404 before the stream starts

    async def stream() -> AsyncIterator[str]:
        seen = -1
        idle = 0.0
        while True:
            version = state.jobs.version(job_id)
            if version != seen:
                seen = version
                info = state.jobs.get(job_id)
                yield f"event: job\nid: {version}\ndata: {info.model_dump_json()}\n\n"
                idle = 0.0
                if info.finished:
                    return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.2)
            idle += 0.2
            if idle >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                idle = 0.0

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def sse_data(line: str) -> JobInfo | None:
    """Parse one ``data:`` line of the stream (used by the client)."""
    if not line.startswith("data:"):
        return None
    return JobInfo.model_validate(json.loads(line[5:].strip()))
