"""A typed client of the SoftMap HTTP service (``softmap serve``), over httpx.

Methods mirror the application layer: they take the same typed requests (``backend.service``)
and, where the service layer returns a backend result (:class:`EmbedResult`,
:class:`SearchResponse`, :class:`RunsReport`), return that same type, so a caller (the CLI, the
app) can switch between in-process and remote without changing what it does with the result.
Long work follows the job's event stream and feeds the usual progress callback.

Errors come back as the SoftMap error the service raised (same class where the title names
one, same title and message), so callers present them exactly as in-process errors.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel

from backend import errors
from backend.analysis.projection import Projection
from backend.classes.active_learning import Suggestion, Suggestions
from backend.classes.classifier import Classification, ClassifierReport
from backend.classes.user_classes import Label, UserClass
from backend.embedding.pipeline import EmbedResult
from backend.errors import SoftMapError
from backend.imagery.sources import SceneSource
from backend.landcover.areas import ClassArea
from backend.landcover.maps import LandCoverResult
from backend.models.inference import Progress, ProgressCallback
from backend.search.heatmap import MatchHeatmap
from backend.search.query import SearchQuery, SearchResponse, SearchResult
from backend.server.change_map import unpack as unpack_change
from backend.server.landcover_arrays import unpack as unpack_landcover
from backend.server.locator import TOKEN_ENV, URL_ENV
from backend.server.schemas import (
    ErrorBody,
    FileInfo,
    Health,
    JobInfo,
    JobKind,
    JobList,
    LabelRequest,
    ModelList,
    Payload,
    RunList,
    SearchOut,
    SourceList,
)
from backend.service import (
    ChangeMap,
    ChangeRequest,
    ClassifyRequest,
    EmbedRequest,
    ExportRequest,
    LandCoverExportKind,
    LandCoverRequest,
    ProjectOutcome,
    ProjectRequest,
    RegionSpec,
    ReportRequest,
    RunsReport,
    SearchRequest,
    SuggestRequest,
)
from backend.store.cache import CacheStats, EmbeddingSet
from backend.store.scopes import Scope

M = TypeVar("M", bound=BaseModel)

#: Environment variables naming a service to use and its token.


class ServiceUnreachableError(SoftMapError):
    title = "SoftMap service unreachable"


class JobFailedError(SoftMapError):
    title = "Job failed"


def _error_classes() -> dict[str, type[SoftMapError]]:
    out: dict[str, type[SoftMapError]] = {}
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, SoftMapError):
            out.setdefault(value.title, value)
    return out


_BY_TITLE = _error_classes()


def error_from(body: ErrorBody) -> SoftMapError:
    """The SoftMap error a ``{"title", "message"}`` body stands for."""
    cls = _BY_TITLE.get(body.title, SoftMapError)
    return cls(body.message, title=body.title)


class SoftMapClient:
    """A connection to one SoftMap service; use as a context manager (or call :meth:`close`).

    Args:
        url: e.g. ``http://127.0.0.1:8600``.
        token: the service's bearer token, if it has one.
        timeout: seconds for a request (long work runs as jobs, so requests stay short).
        transport: an httpx transport (tests pass FastAPI's ASGI one).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(cls) -> SoftMapClient | None:
        """The service named by ``SOFTMAP_BACKEND_URL`` (and ``SOFTMAP_BACKEND_TOKEN``), if set."""
        url = os.environ.get(URL_ENV, "").strip()
        return cls(url, token=os.environ.get(TOKEN_ENV) or None) if url else None

    def __enter__(self) -> SoftMapClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing --------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise ServiceUnreachableError(
                f"The service at {self.url} did not answer {method} {path} in time."
            ) from e
        except httpx.TransportError as e:
            raise ServiceUnreachableError(
                f"Cannot reach the service at {self.url} ({type(e).__name__}): is "
                "`softmap serve` running there?"
            ) from e
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def _get(self, path: str, model: type[M], **params: Any) -> M:
        return model.model_validate(self._request("GET", path, params=params).json())

    def _post(self, path: str, body: BaseModel | dict[str, Any] | None, model: type[M]) -> M:
        payload = (
            body.model_dump(mode="json", by_alias=True) if isinstance(body, BaseModel) else body
        )
        return model.model_validate(self._request("POST", path, json=payload).json())

    # --- system ----------------------------------------------------------------------------
    def health(self) -> Health:
        return self._get("/health", Health)

    def sources(self) -> SourceList:
        return self._get("/sources", SourceList)

    def models(self) -> ModelList:
        return self._get("/models", ModelList)

    def recent_runs(self, limit: int = 10) -> RunsReport:
        """As :func:`backend.service.recent_runs`."""
        found = self._get("/runs", RunList, limit=limit)
        runs = [r.model_dump() for r in found.runs]
        return RunsReport(CacheStats(**found.cache.model_dump()), runs)

    # --- jobs ------------------------------------------------------------------------------
    def submit(self, kind: JobKind, request: BaseModel) -> JobInfo:
        """Queue long work; returns the job at once (state ``queued``)."""
        return self._post(f"/{kind}", request, JobInfo)

    def job(self, job_id: str) -> JobInfo:
        return self._get(f"/jobs/{job_id}", JobInfo)

    def jobs(self, state: str | None = None, limit: int = 50) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["status"] = state
        return self._get("/jobs", JobList, **params).jobs

    def cancel(self, job_id: str) -> JobInfo:
        return self._post(f"/jobs/{job_id}/cancel", None, JobInfo)

    def resume(self, job_id: str) -> JobInfo:
        return self._post(f"/jobs/{job_id}/resume", None, JobInfo)

    def events(self, job_id: str) -> Iterator[JobInfo]:
        """The job as it changes (server-sent events), until it finishes."""
        try:
            with self._http.stream("GET", f"/jobs/{job_id}/events", timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        yield JobInfo.model_validate(json.loads(line[5:].strip()))
        except httpx.TransportError as e:
            raise ServiceUnreachableError(
                f"Lost the service at {self.url} while following job {job_id}."
            ) from e

    def wait(
        self,
        job_id: str,
        progress: ProgressCallback | None = None,
        *,
        reconnect_s: float = 120.0,
    ) -> JobInfo:
        """Follow a job to its end, feeding ``progress``; raise its error if it did not complete.

        If the service goes away meanwhile (a restart), keep asking for up to ``reconnect_s``:
        a restarted service resumes the job, and this returns its result.

        Raises:
            SoftMapError: the job's own error (as in-process), or JobFailedError.
            ServiceUnreachableError: the service stayed away longer than ``reconnect_s``.
        """
        last: JobInfo | None = None
        try:
            for info in self.events(job_id):
                last = info
                running = info.state in ("running", "completed")
                if progress is not None and running and info.progress.total:
                    p = info.progress
                    progress(Progress(p.done, p.total, p.elapsed_s))
                if info.finished:
                    break
        except ServiceUnreachableError:
            last = None
        if last is None or not last.finished:
            # The stream ended early (the service restarted): poll until the job settles.
            last = self._poll(job_id, reconnect_s=reconnect_s)
        if last.state != "completed":
            if last.error is not None:
                raise error_from(last.error)
            raise JobFailedError(f"Job {job_id} ended {last.state}.")
        return last

    def _poll(self, job_id: str, *, reconnect_s: float, interval: float = 0.5) -> JobInfo:
        away_since: float | None = None
        while True:
            try:
                info = self.job(job_id)
            except ServiceUnreachableError:
                now = time.monotonic()
                away_since = away_since or now
                if now - away_since > reconnect_s:
                    raise
            else:
                away_since = None
                if info.finished:
                    return info
            time.sleep(interval)

    def run(
        self, kind: JobKind, request: BaseModel, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        """Submit long work and wait for its result (its JSON form)."""
        job = self.submit(kind, request)
        done = self.wait(job.id, progress)
        assert done.result is not None
        return done.result

    # --- long work, as the application layer -----------------------------------------------
    def embed(self, req: EmbedRequest, progress: ProgressCallback | None = None) -> EmbedResult:
        """As :func:`backend.service.embed`, on the service."""
        out = self.run("embed", req, progress)
        return EmbedResult(**{**out, "tile_ids": tuple(out["tile_ids"])})

    def map_landcover(
        self, req: LandCoverRequest, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        return self.run("landcover", req, progress)

    def map_landcover_result(
        self,
        req: LandCoverRequest,
        source: SceneSource,
        progress: ProgressCallback | None = None,
    ) -> LandCoverResult:
        """As :func:`backend.service.map_landcover`, on the service: the job, then its map with
        the probabilities (``GET /jobs/{id}/landcover.npz``) on the caller's ``source``."""
        job = self.submit("landcover", req)
        self.wait(job.id, progress)
        return self.landcover_arrays(job.id, source)

    def compare_dates(
        self,
        req: ChangeRequest,
        before: SceneSource,
        after: SceneSource,
        progress: ProgressCallback | None = None,
    ) -> ChangeMap:
        """As :func:`backend.service.compare_dates`, on the service (``POST /compare``): both
        dates embedded there, the whole comparison rebuilt here on these two sources."""
        return unpack_change(self.run("compare", req, progress), before, after)

    def landcover_arrays(self, job_id: str, source: SceneSource) -> LandCoverResult:
        """A finished land-cover job's map with its probabilities, on the caller's ``source``."""
        data = self._request("GET", f"/jobs/{job_id}/landcover.npz").content
        return unpack_landcover(data, source)

    def landcover_export(self, job_id: str, kind: LandCoverExportKind) -> bytes:
        """One download of a finished land-cover job's map (as the app's Report page offers)."""
        return self._request("GET", f"/jobs/{job_id}/landcover/{kind}").content

    def report_html(self, req: ReportRequest, progress: ProgressCallback | None = None) -> str:
        """The report page's HTML: the job writes it under ``outputs/``; this fetches it."""
        name = f"reports/{uuid.uuid4().hex}.html"
        self.run("report", req.model_copy(update={"out": Path(name)}), progress)
        return self._request("GET", f"/files/outputs/{name}").text

    def landcover_heads(self, model: str | None = None) -> list[dict[str, Any]]:
        """The heads' ``info()``, as :func:`backend.service.landcover_heads`."""
        params = {"model": model} if model else {}
        found = self._request("GET", "/landcover/heads", params=params).json()
        return list(Payload.model_validate(found).model_dump()["heads"])

    def tile_records(self, tile_ids: list[str] | tuple[str, ...]) -> list[dict[str, Any]]:
        """As :func:`backend.service.tile_records` (footprints as GeoJSON text, as stored)."""
        if not tile_ids:
            return []
        found = self._get("/tiles", Payload, id=list(tile_ids)).model_dump()["tiles"]
        return [
            {**r, "footprint": json.dumps(r["footprint"])}
            if isinstance(r.get("footprint"), dict)
            else r
            for r in found
        ]

    def region_tiles(
        self, model: str, source: str, region: RegionSpec, limit: int = 5000
    ) -> list[dict[str, Any]]:
        """As :func:`backend.service.region_tiles`: the model's cached tiles over a region."""
        body = {
            "model": model,
            "source": source,
            "region": region.model_dump(mode="json", exclude_none=True),
            "limit": limit,
        }
        found = self._post("/tiles/region", body, Payload).model_dump()["tiles"]
        return [
            {**r, "footprint": json.dumps(r["footprint"])}
            if isinstance(r.get("footprint"), dict)
            else r
            for r in found
        ]

    def tile_under(self, model: str, lon: float, lat: float) -> str | None:
        """As :func:`backend.service.tile_under`: the model's cached tile at a point."""
        found = self._request("GET", "/tiles/at", params={"model": model, "lon": lon, "lat": lat})
        tile_id = Payload.model_validate(found.json()).model_dump()["tile_id"]
        return None if tile_id is None else str(tile_id)

    def result_heatmap(
        self, model: str, preprocessing_hash: str, tile_id: str, query: NDArray[np.float32]
    ) -> MatchHeatmap | None:
        """As :func:`backend.service.result_heatmap`, on the service (which holds the model)."""
        body = {
            "model": model,
            "preprocessing_hash": preprocessing_hash,
            "tile_id": tile_id,
            "query": np.asarray(query, dtype=np.float32).ravel().tolist(),
        }
        found = self._post("/search/heatmap", body, Payload).model_dump()["heatmap"]
        if found is None:
            return None
        return MatchHeatmap(
            tile_id=str(found["tile_id"]),
            scores=np.asarray(found["scores"], dtype=np.float32),
            best_row=int(found["best_row"]),
            best_col=int(found["best_col"]),
            best_score=float(found["best_score"]),
            footprint=dict(found["footprint"]),
        )

    def cache_stats(self) -> CacheStats:
        """Size and counts of the service's cache."""
        return self.recent_runs(limit=1).stats

    def detect_change(self, req: ChangeRequest) -> dict[str, Any]:
        return self.run("change", req)

    def report(
        self, req: ReportRequest, progress: ProgressCallback | None = None
    ) -> dict[str, Any]:
        return self.run("report", req, progress)

    # --- reads and small writes ------------------------------------------------------------
    def search(self, req: SearchRequest) -> SearchOut:
        return self._post("/search", req, SearchOut)

    def find_similar(self, req: SearchRequest) -> SearchResponse:
        """As :func:`backend.service.find_similar`, on the service."""
        out = self.search(req).model_dump()
        hits = tuple(SearchResult(**h) for h in out.pop("results"))
        vector = out.pop("query_vector", None)
        out["query_tile_ids"] = tuple(out["query_tile_ids"])
        out["negative_tile_ids"] = tuple(out["negative_tile_ids"])
        query = None
        if vector is not None:
            query = SearchQuery(
                vector=np.asarray(vector, dtype=np.float32),
                positive_ids=out["query_tile_ids"],
                negative_ids=out["negative_tile_ids"],
                method=out["method"],
            )
        return SearchResponse(**out, results=hits, query=query)

    def project(self, req: ProjectRequest) -> dict[str, Any]:
        return self._post("/projection", req, Payload).model_dump()

    def project_scope(self, req: ProjectRequest) -> ProjectOutcome:
        """``POST /projection`` as the application layer's :class:`ProjectOutcome`: the scope
        (its tiles are the projection's; the embedding set is named by model and preprocessing
        only, its table stays on the service) and the projection with its coordinates."""
        out = self.project(req)
        points = out["points"]
        ids = tuple(str(p["tile_id"]) for p in points)
        xy = np.array([[p["x"], p["y"]] for p in points], dtype=np.float32).reshape(-1, 2)
        meta = out["scope"]
        eset = EmbeddingSet(
            set_id=-1,
            model_id=str(meta["model"]),
            preprocessing_hash=str(meta["preprocessing_hash"]),
            dim=0,
            table_name="",
        )
        region = req.scope.region.resolve() if req.scope.region is not None else None
        scope = Scope(meta["kind"], eset, tuple(sorted(ids)), meta["source"], region)
        projection = Projection(
            tile_ids=ids,
            xy=xy,
            method=out["method"],
            params=dict(out["params"]),
            cached=bool(out["cached"]),
            transformed=int(out["transformed"]),
            fitted=int(out["fitted"]),
            data_version=str(out["data_version"]),
            projection_id=str(out["projection_id"]),
            seconds=float(out["seconds"]),
        )
        return ProjectOutcome(scope, projection, None)

    def classes(self) -> list[dict[str, Any]]:
        return list(self._get("/classes", Payload).model_dump()["classes"])

    # --- your classes, as the application layer's types -----------------------------------
    def list_classes(self) -> list[UserClass]:
        return [_user_class(c) for c in self.classes()]

    def create_class(self, name: str) -> UserClass:
        return _user_class(self._post("/classes", {"name": name}, Payload).model_dump()["class"])

    def rename_class(self, old: str, new: str) -> UserClass:
        response = self._request("PATCH", f"/classes/{_seg(old)}", json={"name": new})
        return _user_class(response.json()["class"])

    def delete_class(self, name: str) -> int:
        """Delete a class with its labels and predictions; returns the labels removed."""
        return int(self._request("DELETE", f"/classes/{_seg(name)}").json()["labels"])

    def class_labels(self, name: str) -> list[Label]:
        out = self._get(f"/classes/{_seg(name)}/labels", Payload).model_dump()["labels"]
        return [
            Label(
                class_name=str(lb["class_name"]),
                tile_id=str(lb["tile_id"]),
                positive=bool(lb["positive"]),
                origin=str(lb["origin"]),
                labelled_at=_when(lb.get("labelled_at")),
            )
            for lb in out
        ]

    def labels_geojson(self, name: str) -> dict[str, Any]:
        return self._get(f"/classes/{_seg(name)}/labels.geojson", Payload).model_dump()

    def remove_labels(self, name: str, req: LabelRequest) -> dict[str, Any]:
        return self._post(f"/classes/{_seg(name)}/labels/remove", req, Payload).model_dump()

    def classify_scope(self, req: ClassifyRequest) -> tuple[Classification, list[ClassArea]]:
        """``POST /classify?points=true`` as the application layer's ``classify_in`` answer:
        the classification (every tile's probability) and the class's areas."""
        body = req.model_dump(mode="json", by_alias=True)
        out = self._request("POST", "/classify", json=body, params={"points": "true"}).json()
        points = out["points"]
        classification = Classification(
            report=ClassifierReport(**out["classifier"]),
            tile_ids=tuple(str(p["tile_id"]) for p in points),
            probabilities=np.array([p["probability"] for p in points], dtype=np.float64),
            seconds=float(out["seconds"]),
        )
        return classification, [ClassArea(**a) for a in out["areas"]]

    def suggest_labels(self, req: SuggestRequest) -> Suggestions:
        """``POST /suggest`` as the application layer's :class:`Suggestions`."""
        out = self.suggest(req)
        return Suggestions(
            suggestions=tuple(Suggestion(**s) for s in out["suggestions"]),
            report=ClassifierReport(**out["classifier"]),
            candidates=int(out["candidates"]),
        )

    def add_labels(self, name: str, req: LabelRequest) -> dict[str, Any]:
        return self._post(f"/classes/{_seg(name)}/labels", req, Payload).model_dump()

    def classify(self, req: ClassifyRequest) -> dict[str, Any]:
        return self._post("/classify", req, Payload).model_dump()

    def suggest(self, req: SuggestRequest) -> dict[str, Any]:
        return self._post("/suggest", req, Payload).model_dump()

    def export(self, req: ExportRequest) -> dict[str, Any]:
        return self._post("/exports", req, Payload).model_dump()

    def upload(self, local: str | Path, name: str) -> FileInfo:
        """Send a local file to ``uploads/<name>`` in the service's data folder."""
        data = Path(local).read_bytes()
        response = self._request("PUT", f"/files/uploads/{name}", content=data)
        return FileInfo.model_validate(response.json())

    def download(self, name: str, dest: str | Path) -> Path:
        """Fetch a file of the data folder (e.g. ``outputs/map.tif``) to ``dest``."""
        response = self._request("GET", f"/files/{name}")
        out = Path(dest)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(response.content)
        return out


def _seg(name: str) -> str:
    """A class name as one URL path segment."""
    return quote(name, safe="")


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _user_class(c: dict[str, Any]) -> UserClass:
    return UserClass(
        class_id=int(c["class_id"]),
        name=str(c["name"]),
        positives=int(c["positives"]),
        negatives=int(c["negatives"]),
        created_at=_when(c.get("created_at")),
    )


def _error_of(response: httpx.Response) -> SoftMapError:
    try:
        body = ErrorBody.model_validate(response.json())
    except (ValueError, TypeError):
        return SoftMapError(
            f"The service answered {response.status_code} without a SoftMap error body.",
            title="Unexpected answer",
        )
    return error_from(body)
