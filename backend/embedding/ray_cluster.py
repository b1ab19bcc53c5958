"""Ray plumbing for cluster embedding: join the cluster, size the pool, run one Ray Data job.

    from_arrow(tiles) → map_batches(read tasks) → map_batches(model replicas, ActorPoolStrategy)

Read tasks open the scenes where they run (paths every node can see, or URLs read by HTTP range
requests) and read chips exactly as the local engine does. Each replica holds the model (shipped
through the object store, so nodes need no weight files) on one GPU with bf16 autocast where the
cluster has GPUs, on CPU threads otherwise, and embeds with the local engine's own ``forward``.
Embeddings stream back to the driver batch by batch. Ray restarts a lost actor and retries its
batch; a batch that comes back twice is handed on once. ``ray`` is imported only when a job runs
(it is an optional extra).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from numpy.typing import NDArray

from backend.errors import ClusterError, RayUnavailableError, SoftMapError
from backend.imagery.reader import PixelWindow, ResamplingName, SceneReader
from backend.imagery.sources import SceneSource
from backend.imagery.stac_items import configure_remote_gdal
from backend.imagery.tiling import Tile
from backend.models import EmbeddingModel
from backend.models.inference import (
    EmbeddingEngine,
    Precision,
    Progress,
    ProgressCallback,
    read_chip,
)

#: What ``--ray`` tells a user whose environment lacks Ray.
RAY_INSTALL_HINT = "pip install 'softmap[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How to use the cluster; None picks from the cluster's resources.

    Args:
        address: ``host:port``, ``ray://host:10001`` or ``auto``; None connects to
            ``RAY_ADDRESS`` or a cluster already running on this machine, else starts one.
        actors: Model replicas (default: one per GPU; on CPUs one per ~4 cores).
        gpus_per_actor: GPUs per replica (default: 1 where the cluster has GPUs, else 0).
        cpus_per_actor: CPUs per replica; its PyTorch threads follow (default: by the above).
        readers: Read tasks in flight (default: 4 per GPU replica, 1 per CPU replica).
        read_cpus: CPUs each read task reserves (default: 1 next to GPUs, 0.25 on CPUs).
        batch_size: Tiles per read task and per forward pass.
        precision: ``auto`` is bf16 autocast on GPU replicas and fp32 on CPU ones.
        num_cpus: CPUs of a cluster started here (default: all).
        object_store_memory: Bytes of a cluster started here (default: Ray's).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float | None = None
    readers: int | None = None
    read_cpus: float | None = None
    batch_size: int = 32
    precision: Precision = "auto"
    num_cpus: int | None = None
    object_store_memory: int | None = None


@dataclass(frozen=True)
class ClusterPlan:
    """The pool a job runs on, decided from the options and the cluster's resources."""

    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    threads_per_actor: int
    readers: int
    read_cpus: float
    cluster_cpus: float
    cluster_gpus: float

    def describe(self) -> str:
        kind = (
            f"{self.gpus_per_actor:g} GPU"
            if self.gpus_per_actor
            else (f"{self.threads_per_actor} CPU thread{'s' if self.threads_per_actor > 1 else ''}")
        )
        return f"ray ({self.actors} x {kind})"


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as e:
        raise RayUnavailableError(
            f"--ray needs Ray Data, which is not installed here: {RAY_INSTALL_HINT}."
        ) from e
    return ray


def connect(options: RayOptions) -> Any:
    """Connect to (or start) the cluster once per process; returns the ``ray`` module.

    Raises:
        RayUnavailableError: Ray is not installed.
        ClusterError: the address cannot be reached.
    """
    ray = require_ray()
    if not ray.is_initialized():
        # Ray Data's actors trip a C++ notice about constructor arguments on every start (it
        # keeps them alive itself); set RAY_BACKEND_LOG_LEVEL=info to see Ray's own logs.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            # Worker tracebacks reach the user as one line through the exception instead.
            "log_to_driver": False,
        }
        if options.address is not None:
            _check_reachable(options.address)
        if options.address is None and options.num_cpus is not None:
            kwargs["num_cpus"] = options.num_cpus
        if options.address is None and options.object_store_memory is not None:
            kwargs["object_store_memory"] = options.object_store_memory
        try:
            ray.init(address=options.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            where = options.address or os.environ.get("RAY_ADDRESS") or "this machine"
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
            raise ClusterError(
                f"Cannot connect to the Ray cluster at {where}: {reason}. "
                "Start one with `ray start --head` or pass its address to --ray."
            ) from e
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # A worker's SoftMapError reaches the driver as itself, not as a UserCodeException.
    context.raise_original_map_exception = True
    # Ray Data's own progress bars and notices would garble the driver's bar on stderr.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line, at once, where nothing listens at ``HOST:PORT`` (Ray would retry for
    a minute and print its own warnings first)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(
            f"Cannot connect to the Ray cluster at {address}: nothing answers there "
            f"({e.strerror or e}). Start one with `ray start --head` or check the address."
        ) from e


def plan_cluster(options: RayOptions, resources: dict[str, float]) -> ClusterPlan:
    """Size the replica pool and the read tasks to the cluster (a pure function, tested alone).

    Raises:
        ClusterError: the requested pool does not fit the cluster.
    """
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    gpa = options.gpus_per_actor
    if gpa is None:
        gpa = 1.0 if gpus >= 1 else 0.0
    if gpa > 0 and gpus < gpa:
        raise ClusterError(
            f"The cluster has {gpus:g} GPUs, fewer than the {gpa:g} per replica asked for."
        )
    if gpa > 0:
        actors = options.actors or max(1, int(gpus // gpa))
        read_cpus = 1.0 if options.read_cpus is None else options.read_cpus
        readers = options.readers or 4 * actors
        cpa = options.cpus_per_actor or 1.0
    else:
        read_cpus = 0.25 if options.read_cpus is None else options.read_cpus
        actors = options.actors or max(1, int(cpus // 4))
        readers = options.readers or actors
        cpa = options.cpus_per_actor or max(0.5, (cpus - readers * read_cpus) / actors)
    if actors < 1:
        raise ClusterError("A cluster run needs at least one model replica.")
    if actors * gpa > gpus + 1e-9:
        raise ClusterError(
            f"{actors} replicas × {gpa:g} GPU do not fit the cluster's {gpus:g} GPUs."
        )
    if actors * cpa + min(readers, 1) * read_cpus > cpus + 1e-9:
        raise ClusterError(
            f"{actors} replicas × {cpa:g} CPU and a read task ({read_cpus:g} CPU) do not fit "
            f"the cluster's {cpus:g} CPUs: ask for fewer replicas or CPUs per replica."
        )
    return ClusterPlan(
        actors=actors,
        gpus_per_actor=gpa,
        cpus_per_actor=round(cpa, 3),
        threads_per_actor=max(1, round(cpa)),
        readers=readers,
        read_cpus=read_cpus,
        cluster_cpus=cpus,
        cluster_gpus=gpus,
    )


@dataclass(frozen=True)
class TileJob:
    """Tiles of one source to embed, with the band fill the local path would use."""

    source: SceneSource
    tiles: tuple[Tile, ...]
    fill: Mapping[str, float]


#: Receives (index of the job, tile ids, embeddings ``[B, D]`` float32) for each returned batch.
ClusterBatchCallback = Callable[[int, list[str], NDArray[np.float32]], None]


def run_cluster_job(
    ray: Any,
    jobs: Sequence[TileJob],
    model: EmbeddingModel,
    cluster: ClusterPlan,
    *,
    batch_size: int,
    precision: Precision,
    resampling: ResamplingName,
    on_batch: ClusterBatchCallback,
    progress: ProgressCallback | None = None,
) -> None:
    """Read and embed the tiles of ``jobs`` on the cluster; ``on_batch`` once per tile, here.

    A batch Ray retries after losing its actor may come back twice: only its first copy is
    handed on. A SoftMap error raised on a worker is re-raised here as itself, out of Ray's
    wrappers (see :func:`user_error`); any other Ray failure becomes a one-line ClusterError.
    """
    # Columns, not one dict per tile: a country's million tiles stay a few tens of MB.
    tiles = [(i, t) for i, job in enumerate(jobs) for t in job.tiles]
    table = pa.table(
        {
            "job": pa.array([i for i, _ in tiles], type=pa.int32()),
            "tile_id": [t.tile_id for _, t in tiles],
            "col_off": pa.array([t.window.col_off for _, t in tiles], type=pa.int64()),
            "row_off": pa.array([t.window.row_off for _, t in tiles], type=pa.int64()),
            "size": pa.array([t.window.width for _, t in tiles], type=pa.int32()),
        }
    )
    total = table.num_rows
    pending = [{t.tile_id for t in job.tiles} for job in jobs]
    spec = _ReadSpec(
        sources=[j.source.model_copy(update={"root": Path(j.source.root).resolve()}) for j in jobs],
        fills=[dict(j.fill) for j in jobs],
        bands=tuple(model.meta.bands),
        resampling=resampling,
    )
    tally = ray.remote(num_cpus=0)(_tally_class()).remote()
    model_ref = ray.put(model.to("cpu"))
    data = ray.data
    # One block per batch, so read tasks run in parallel from the first batch on.
    ds = data.from_arrow([table.slice(i, batch_size) for i in range(0, total, batch_size)])
    ds = ds.map_batches(
        _read_batch,
        fn_kwargs={"spec": spec},
        batch_size=batch_size,
        num_cpus=cluster.read_cpus,
        compute=data.TaskPoolStrategy(size=cluster.readers),
    )
    ds = ds.map_batches(
        _EmbedReplica,
        fn_constructor_kwargs={
            "model_ref": [model_ref],
            "gpu": cluster.gpus_per_actor > 0,
            "precision": precision,
            "threads": cluster.threads_per_actor,
            "tally": tally,
        },
        batch_size=batch_size,
        num_cpus=cluster.cpus_per_actor,
        num_gpus=cluster.gpus_per_actor,
        compute=data.ActorPoolStrategy(size=cluster.actors),
    )
    start = time.perf_counter()
    done = 0
    try:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            job_of, ids_of, vectors = out["job"], out["tile_id"], out["vector"]
            for i in np.unique(job_of):
                keep = [j for j in np.flatnonzero(job_of == i) if str(ids_of[j]) in pending[i]]
                if not keep:
                    continue
                ids = [str(ids_of[j]) for j in keep]
                pending[int(i)].difference_update(ids)
                on_batch(int(i), ids, np.ascontiguousarray(vectors[keep], dtype=np.float32))
                done += len(ids)
            if progress is not None:
                busy = min(int(ray.get(tally.busy.remote())), cluster.actors)
                elapsed = time.perf_counter() - start
                progress(Progress(done, total, elapsed, cluster.actors, busy))
    except BaseException as e:
        error = user_error(e)
        if error is e:
            raise
        raise error from None
    finally:
        ray.kill(tally)
    if done < total:
        raise ClusterError(
            f"The cluster returned no embedding for {total - done} tiles; run again to finish."
        )


@dataclass(frozen=True)
class _ReadSpec:
    sources: list[SceneSource]
    fills: list[dict[str, float]]
    bands: tuple[str, ...]
    resampling: ResamplingName


def _read_batch(batch: dict[str, NDArray[Any]], spec: _ReadSpec) -> dict[str, NDArray[Any]]:
    """A read task: raw chips ``[B, C, chip, chip]`` of a batch of tiles, as the engine reads."""
    if any("://" in b.file for src in spec.sources for b in src.bands):
        # A worker process starts with Ray's environment, not the driver's GDAL settings.
        configure_remote_gdal()
    n = len(batch["tile_id"])
    size = int(batch["size"][0]) if n else 0
    chips = np.empty((n, len(spec.bands), size, size), dtype=np.float32)
    readers: dict[int, SceneReader] = {}
    try:
        for j in range(n):
            i = int(batch["job"][j])
            reader = readers.get(i)
            if reader is None:
                reader = readers[i] = SceneReader(spec.sources[i], resampling=spec.resampling)
            window = PixelWindow(int(batch["col_off"][j]), int(batch["row_off"][j]), size, size)
            read_chip(reader, str(batch["tile_id"][j]), window, spec.bands,
                      fill=spec.fills[i], out=chips[j])  # fmt: skip
    finally:
        for reader in readers.values():
            reader.close()
    return {"job": batch["job"], "tile_id": batch["tile_id"], "chip": chips}


def _tally_class() -> type:
    """The tally's class, made here so that Ray ships it by value.

    Its actor then starts without importing SoftMap (PyTorch, GDAL): measured 155 MB resident
    (a bare Ray worker) against 440 MB when the class came from this module.
    """

    class Tally:
        """Which replicas are inside a forward pass right now (for the driver's progress bar)."""

        def __init__(self) -> None:
            self._since: dict[str, float] = {}

        def begin(self, worker: str) -> None:
            self._since[worker] = time.monotonic()

        def end(self, worker: str) -> None:
            self._since.pop(worker, None)

        def busy(self) -> int:
            # A replica killed mid-batch never says `end`: forget it after ten minutes.
            now = time.monotonic()
            self._since = {w: t for w, t in self._since.items() if now - t < 600}
            return len(self._since)

    return Tally


class _EmbedReplica:
    """One model replica on a Ray actor: the local engine's ``forward`` on its own device."""

    def __init__(
        self, model_ref: list[Any], gpu: bool, precision: Precision, threads: int, tally: Any
    ) -> None:
        ray = importlib.import_module("ray")
        if not gpu:
            torch.set_num_threads(threads)
        model: EmbeddingModel = ray.get(model_ref[0])
        self.engine = EmbeddingEngine(
            model, device="cuda" if gpu else "cpu", readers=0, precision=precision
        )
        self.tally = tally
        self.worker = f"{os.uname().nodename}:{os.getpid()}"

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        self.tally.begin.remote(self.worker)
        try:
            raw = torch.from_numpy(
                np.require(batch["chip"], dtype=np.float32, requirements=("C", "W"))
            )
            vectors, _ = self.engine.forward(raw)
        finally:
            self.tally.end.remote(self.worker)
        return {"job": batch["job"], "tile_id": batch["tile_id"], "vector": vectors}


def user_error(error: BaseException) -> BaseException:
    """The SoftMap error a worker raised, found under Ray's wrappers; else ``error`` itself.

    Ray re-raises a worker's exception as a ``RayTaskError`` that is also an instance of the
    original class but prints the remote traceback; its ``cause`` is the original, clean one.
    """
    ray_errors = _ray_error_types()
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if ray_errors and isinstance(e, ray_errors):
            stack.extend([e.__context__, e.__cause__, getattr(e, "cause", None)])
            continue
        if isinstance(e, SoftMapError):
            return e
        stack.extend([e.__context__, e.__cause__])
    if ray_errors and isinstance(error, ray_errors):
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        return ClusterError(f"The Ray job failed: {first}")
    return error


def _ray_error_types() -> tuple[type[BaseException], ...]:
    try:
        exceptions = importlib.import_module("ray.exceptions")
    except ImportError:
        return ()
    return (exceptions.RayError,)


__all__ = [
    "RAY_INSTALL_HINT",
    "ClusterBatchCallback",
    "ClusterPlan",
    "RayOptions",
    "TileJob",
    "connect",
    "plan_cluster",
    "require_ray",
    "run_cluster_job",
    "user_error",
]
