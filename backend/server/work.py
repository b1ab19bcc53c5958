"""The long operations the job queue runs: embed, land cover, change (and the app's
compare, the same with every pair kept) and report.

Each request is confined and checked up front (:func:`prepare`, in the request thread), so a
user mistake (unknown source or model, a bad region, a path outside the data folder) is answered
at once with a 4xx instead of becoming a failed job. The job then calls the application layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from backend import service
from backend.errors import ChangeError, SoftMapError
from backend.models.registry import get_model_meta
from backend.server.jobs import JobContext, JobType
from backend.server.state import ServiceState

R = TypeVar("R", bound=BaseModel)


def prepare(state: ServiceState, request: R) -> R:
    """The request confined to the data folder and validated as the CLI validates it."""
    req = state.confine_request(request)
    if isinstance(req, service.EmbedRequest | service.LandCoverRequest | service.ReportRequest):
        state.checked_region(req.region, state.source(req.source))
        get_model_meta(req.model)
    if isinstance(req, service.ChangeRequest):
        if req.before == req.after:
            raise ChangeError(f"before and after are both {req.before}; pick two acquisitions.")
        region = state.region(req.region)
        for source_id in (req.before, req.after):
            state.checked_region(service.RegionSpec.of(region), state.source(source_id))
        get_model_meta(req.model)
    if isinstance(req, service.LandCoverRequest | service.ChangeRequest) and req.out:
        _suffix(req.out, (".tif", ".tiff"))
    if isinstance(req, service.ReportRequest) and req.out:
        _suffix(req.out, (".html", ".htm"))
    return req


def _suffix(path: Path, suffixes: tuple[str, ...]) -> None:
    if path.suffix.lower() not in suffixes:
        raise SoftMapError(
            f"The output '{path.name}' must end with {' or '.join(suffixes)}.",
            title="Invalid option",
        )


def job_types(state: ServiceState) -> dict[str, JobType]:
    """What each job kind takes and runs, bound to the service's workspace."""
    ws = state.workspace

    def embed(req: service.EmbedRequest, ctx: JobContext) -> dict[str, Any]:
        return dict(state.public(service.embed(ws, req, progress=ctx.progress).to_json()))

    def landcover(req: service.LandCoverRequest, ctx: JobContext) -> dict[str, Any]:
        result = service.map_landcover(ws, req, progress=ctx.progress)
        state.landcover_maps.put(ctx.job_id, result)
        return dict(state.public({**result.to_json(), "out": req.out}))

    def change(req: service.ChangeRequest, ctx: JobContext) -> dict[str, Any]:
        ctx.check()
        return dict(state.public(service.detect_region_change(ws, req).to_json()))

    def compare(req: service.ChangeRequest, ctx: JobContext) -> dict[str, Any]:
        """The app's comparison: both dates embedded, every pair ranked, the raster kept."""
        from backend.server.change_map import pack

        change = service.compare_dates(ws, req, progress=lambda _source: ctx.progress)
        return dict(state.public(pack(change)))

    def report(req: service.ReportRequest, ctx: JobContext) -> dict[str, Any]:
        page = service.report(ws, req, progress=ctx.progress)
        out = {**page.to_json(), "out": req.out}
        if req.out is not None:
            out["bytes"] = req.out.stat().st_size
        return dict(state.public(out))

    return {
        "embed": JobType(service.EmbedRequest, embed),
        "landcover": JobType(service.LandCoverRequest, landcover),
        "change": JobType(service.ChangeRequest, change),
        "compare": JobType(service.ChangeRequest, compare),
        "report": JobType(service.ReportRequest, report),
    }
