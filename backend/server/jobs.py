"""Long work as jobs: queued, run one at a time by the service's writer thread, persisted.

A job's request, state, progress and result live in the ``service_jobs`` table of the cache, so
they survive the service: a job that was running when the process died (``kill -9``, a crash) is
found ``running`` at the next start, marked ``interrupted`` and, by default, queued again. Its
work resumes where it stopped because every stage skips what the cache already holds (the
embedding pipeline commits each batch and computes only missing tiles).

Progress (done/total, tiles/s, ETA) is kept in memory and pushed to listeners; cancelling sets a
flag that the job sees at its next progress report (after the batch in flight).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel

from backend.errors import NotFoundError, SoftMapError
from backend.models.inference import Progress
from backend.server.schemas import TERMINAL_STATES, ErrorBody, JobInfo, JobKind, JobProgress
from backend.store.cache import EmbeddingCache

_log = logging.getLogger(__name__)

_DDL = """
CREATE TABLE IF NOT EXISTS service_jobs (
    job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, request JSON,
    result JSON, error JSON, created_at TIMESTAMPTZ, started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ, done INTEGER, total INTEGER, resumes INTEGER
);
"""


class JobCancelledError(SoftMapError):
    title = "Job cancelled"


class ServiceStoppedError(SoftMapError):
    title = "Service stopped"


class JobConflictError(SoftMapError):
    title = "Job not in that state"


class JobContext:
    """What a running job reports to: progress, and the cancel flag it must honour."""

    def __init__(self, job: _Job, notify: Callable[[], None]) -> None:
        self._job = job
        self._notify = notify
        self.started = datetime.now(timezone.utc)

    @property
    def job_id(self) -> str:
        return self._job.id

    def progress(self, p: Progress) -> None:
        """Record progress (the engine's callback); raises when the job was cancelled."""
        self._job.progress = JobProgress(
            done=p.done,
            total=p.total,
            tiles_per_s=round(p.tiles_per_s, 3),
            eta_s=None if p.eta_s is None else round(p.eta_s, 1),
            elapsed_s=round(p.elapsed_s, 3),
        )
        self._job.version += 1
        self._notify()
        self.check()

    def check(self) -> None:
        """Raise if the job was cancelled or the service is stopping."""
        if self._job.stop_reason == "cancel":
            raise JobCancelledError("Cancelled on request; finished batches are kept in the cache.")
        if self._job.stop_reason == "shutdown":
            raise ServiceStoppedError("The service stopped; the job resumes when it starts again.")


#: Runs one job: (its request, its context) → its result in JSON form.
Runner = Callable[[Any, JobContext], dict[str, Any]]


@dataclass(frozen=True)
class JobType:
    request: type[BaseModel]
    run: Runner


@dataclass
class _Job:
    id: str
    kind: JobKind
    request: dict[str, Any]
    state: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress = field(default_factory=JobProgress)
    resumes: int = 0
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None
    stop_reason: str | None = None
    version: int = 0

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            kind=self.kind,
            state=self.state,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            progress=self.progress,
            resumes=self.resumes,
            request=self.request,
            result=self.result,
            error=self.error,
        )


class JobManager:
    """The job queue and its one worker thread (the service's single writer of long work).

    Args:
        cache: the service's shared cache connection (each call takes its own cursor).
        types: what each job kind takes and how it runs.
        keep: finished jobs kept in memory and in the table.
    """

    def __init__(self, cache: EmbeddingCache, types: dict[str, JobType], *, keep: int = 500):
        self._cache = cache
        self._types = types
        self._keep = keep
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._changed = threading.Condition()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._current: _Job | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, *, resume: bool = True) -> list[str]:
        """Load stored jobs, mark those a crash interrupted, queue them again; start the worker.

        Returns the ids of the jobs queued again.
        """
        self._cache.ensure_schema("service_jobs", _DDL)
        with self._cache.cursor() as cur:
            rows = (
                cur.execute(
                    "SELECT * FROM service_jobs ORDER BY created_at DESC LIMIT ?", [self._keep]
                )
                .to_arrow_table()
                .to_pylist()
            )
        requeued: list[str] = []
        for row in reversed(rows):
            job = _Job(
                id=row["job_id"],
                kind=row["kind"],
                request=json.loads(row["request"] or "{}"),
                state=row["state"],
                created_at=row["created_at"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                progress=JobProgress(done=row["done"] or 0, total=row["total"] or 0),
                resumes=row["resumes"] or 0,
                result=json.loads(row["result"]) if row["result"] else None,
                error=ErrorBody(**json.loads(row["error"])) if row["error"] else None,
            )
            if job.state == "running":
                # Nothing runs before start(): a stored 'running' job died with its process.
                job.state = "interrupted"
                job.error = ErrorBody(
                    title="Job interrupted",
                    message="The service stopped while the job ran (crash or kill); the "
                    "batches it finished are in the cache.",
                )
                self._persist(job)
            self._jobs[job.id] = job
            if job.state == "queued" or (resume and job.state == "interrupted"):
                self._requeue(job)
                requeued.append(job.id)
        self._worker = threading.Thread(target=self._work, name="softmap-jobs", daemon=True)
        self._worker.start()
        return requeued

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in flight; the running job is left ``interrupted`` (resumable)."""
        with self._lock:
            if self._current is not None:
                self._current.stop_reason = "shutdown"
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)

    # --- requests -------------------------------------------------------------------------
    def submit(self, kind: JobKind, request: BaseModel) -> JobInfo:
        job = _Job(id=uuid.uuid4().hex, kind=kind, request=request.model_dump(mode="json"))
        with self._lock:
            self._jobs[job.id] = job
        self._persist(job)
        self._queue.put(job.id)
        self._prune()
        return job.info()

    def get(self, job_id: str) -> JobInfo:
        return self._get(job_id).info()

    def version(self, job_id: str) -> int:
        return self._get(job_id).version

    def list(self, *, state: str | None = None, limit: int = 50) -> list[JobInfo]:
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)
        return [j.info() for j in jobs if state is None or j.state == state][:limit]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for j in self._jobs.values():
                out[j.state] = out.get(j.state, 0) + 1
        return out

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued job at once, a running one after its batch in flight.

        Raises:
            JobConflictError: the job has already finished.
        """
        job = self._get(job_id)
        with self._lock:
            if job.state in TERMINAL_STATES:
                raise JobConflictError(f"Job {job_id} is already {job.state}.")
            if job.state in ("queued", "interrupted"):
                job.state = "cancelled"
                job.finished_at = datetime.now(timezone.utc)
                job.error = ErrorBody(
                    title=JobCancelledError.title, message="Cancelled before it ran."
                )
            else:
                job.stop_reason = "cancel"
            job.version += 1
        self._persist(job)
        self._notify()
        return job.info()

    def resume(self, job_id: str) -> JobInfo:
        """Queue an interrupted, failed or cancelled job again (it computes only what is missing).

        Raises:
            JobConflictError: the job is queued, running or completed.
        """
        job = self._get(job_id)
        with self._lock:
            if job.state not in ("interrupted", "failed", "cancelled"):
                raise JobConflictError(
                    f"Job {job_id} is {job.state}: only interrupted, failed or cancelled jobs "
                    "can be resumed."
                )
        self._requeue(job)
        return job.info()

    def wait(self, timeout: float) -> None:
        """Block until some job changes (or ``timeout``), for server-sent events."""
        with self._changed:
            self._changed.wait(timeout)

    # --- internals ------------------------------------------------------------------------
    def _get(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"No job {job_id} (see GET /jobs).", title="Unknown job")
        return job

    def _requeue(self, job: _Job) -> None:
        with self._lock:
            if job.state != "queued":
                job.resumes += 1
            job.state = "queued"
            job.stop_reason = None
            job.finished_at = None
            job.error = None
            job.version += 1
        self._persist(job)
        self._queue.put(job.id)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._work_on(job_id)
            except Exception:  # the queue must outlive any one job (a cache error persisting it)
                _log.exception("Job %s could not be run or recorded", job_id)

    def _work_on(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != "queued":
                return
            job.state = "running"
            job.started_at = datetime.now(timezone.utc)
            job.progress = JobProgress()
            job.version += 1
            self._current = job
        try:
            self._persist(job)
            self._notify()
            self._run(job)
        finally:
            with self._lock:
                self._current = None
            self._persist(job)
            self._notify()

    def _run(self, job: _Job) -> None:
        ctx = JobContext(job, self._notify)
        jtype = self._types[job.kind]
        start = time.perf_counter()
        try:
            request = jtype.request.model_validate(job.request)
            result = jtype.run(request, ctx)
        except (JobCancelledError, ServiceStoppedError) as e:
            cancelled = isinstance(e, JobCancelledError)
            self._mark_runs(ctx, e, "cancelled" if cancelled else "interrupted")
            self._finish(job, "cancelled" if cancelled else "interrupted", error=e)
        except SoftMapError as e:
            self._finish(job, "failed", error=e)
        except Exception as e:
            _log.exception("Job %s (%s) failed", job.id, job.kind)
            self._finish(
                job,
                "failed",
                error=SoftMapError(
                    f"The {job.kind} job failed unexpectedly ({type(e).__name__}); see the "
                    "service's log.",
                    title="Internal error",
                ),
            )
        else:
            job.result = result
            self._finish(job, "completed")
        _log.info(
            "Job %s (%s) %s in %.1f s", job.id, job.kind, job.state, time.perf_counter() - start
        )

    def _finish(self, job: _Job, state: str, *, error: SoftMapError | None = None) -> None:
        with self._lock:
            job.state = state
            job.finished_at = datetime.now(timezone.utc)
            job.error = ErrorBody(title=error.title, message=error.message) if error else None
            job.stop_reason = None
            job.version += 1

    def _mark_runs(self, ctx: JobContext, error: SoftMapError, status: str) -> None:
        """Embedding runs the pipeline recorded as failed by our stop say what happened."""
        with self._db_lock, self._cache.cursor() as cur:
            cur.execute(
                "UPDATE runs SET status = ? WHERE status = 'failed' AND started_at >= ? "
                "AND starts_with(error, ?)",
                [status, ctx.started, error.title],
            )

    def _persist(self, job: _Job) -> None:
        with self._lock:
            row = [
                job.id,
                job.kind,
                job.state,
                json.dumps(job.request),
                json.dumps(job.result, default=str) if job.result is not None else None,
                json.dumps(job.error.model_dump()) if job.error else None,
                job.created_at,
                job.started_at,
                job.finished_at,
                job.progress.done,
                job.progress.total,
                job.resumes,
            ]
        with self._db_lock, self._cache.cursor() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO service_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

    def _prune(self) -> None:
        with self._lock:
            done = sorted(
                (j for j in self._jobs.values() if j.state in TERMINAL_STATES),
                key=lambda j: j.created_at,
            )
            drop = done[: max(0, len(self._jobs) - self._keep)]
            for j in drop:
                del self._jobs[j.id]
        if drop:
            with self._db_lock, self._cache.cursor() as cur:
                cur.execute(
                    "DELETE FROM service_jobs WHERE job_id IN (SELECT unnest(?::VARCHAR[]))",
                    [[j.id for j in drop]],
                )
