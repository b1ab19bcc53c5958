"""``/health``, ``/models`` and ``/runs``: what the service is and what it has done."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Query

from backend import __version__, service
from backend.server.deps import State
from backend.server.schemas import Health, ModelInfo, ModelList, RunList

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
async def health(state: State) -> Health:
    """Cheap: no DuckDB query, no model; answers while jobs run."""
    counts = state.jobs.counts()
    return Health(
        version=__version__,
        pid=os.getpid(),
        db=str(state.db_path),
        data_dir=str(state.data_dir),
        device=state.device_label(),
        uptime_s=round(time.monotonic() - state.started, 3),
        jobs_running=counts.get("running", 0),
        jobs_queued=counts.get("queued", 0),
        auth=state.config.token is not None,
    )


@router.get("/models", response_model=ModelList)
def models(state: State) -> ModelList:
    out = []
    for info in service.list_model_infos():
        raw = info.to_json()
        # Where the weights lie on the server is not the client's business.
        raw["weights"] = (
            raw["weights"] if not info.available or "built-in" in raw["weights"] else "found"
        )
        out.append(ModelInfo.model_validate(raw))
    return ModelList(models=out)


@router.get("/runs", response_model=RunList)
def runs(state: State, limit: int = Query(10, ge=1, le=1000)) -> RunList:
    return RunList.model_validate(service.recent_runs(state.workspace, limit).to_json())
