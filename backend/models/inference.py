"""Batched embedding of tiles with raster reading overlapped with compute.

Reader threads fill a small pool of (pinned, on CUDA) buffers with raw chips and hand full
batches over a bounded queue; the caller's thread copies each batch to the device (non-blocking on
CUDA), normalises it there, runs the model under ``torch.inference_mode`` (bf16 autocast on CUDA)
and passes the embeddings on. Buffers go back to the pool only after the forward pass has consumed
them, so memory stays bounded by the pool size whatever the region size. Where no core is spare
for reading, chips are read in line between batches instead (see :func:`default_readers`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from backend.errors import DeviceError, RasterReadError
from backend.imagery.reader import PixelWindow, ResamplingName, SceneReader
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import Tile
from backend.models import EmbeddingModel
from backend.models.allocator import keep_freed_memory
from backend.settings import Settings, get_settings

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Progress:
    """Where an embedding job stands (``workers``: the pool size of a cluster run, else None)."""

    done: int
    total: int
    elapsed_s: float
    workers: int | None = None
    workers_busy: int | None = None

    @property
    def tiles_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.tiles_per_s
        return (self.total - self.done) / rate if rate > 0 else None


ProgressCallback = Callable[[Progress], None]
#: Receives (tile ids, pooled/CLS embeddings [B, D] float32, patch tokens [B, h, w, D] or None).
BatchCallback = Callable[[list[str], NDArray[np.float32], NDArray[np.float32] | None], None]


def select_device(choice: str = "auto") -> torch.device:
    """The device to run on: ``auto`` picks CUDA, then Apple MPS, then the CPU.

    Raises:
        DeviceError: an explicitly requested device is not available.
    """
    choice = choice.lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            "CUDA was requested but no CUDA GPU is visible. Use --device cpu or auto."
        )
    if choice == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("Apple MPS was requested but is not available. Use --device cpu or auto.")
    if not (choice == "cpu" or choice == "mps" or choice.startswith("cuda")):
        raise DeviceError(f"Unknown device '{choice}': use auto, cuda, cuda:N, mps or cpu.")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    """A human-readable device name (the GPU model on CUDA)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@dataclass
class _Batch:
    tiles: list[Tile]
    buffer: torch.Tensor
    release: Callable[[], object]


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def default_readers(device: torch.device) -> int:
    """How many threads read rasters ahead of the model.

    Reading overlaps with compute only when a core is free for it. On a GPU the CPU cores are
    free, and one thread cannot decode chips as fast as the GPU embeds them, so several read in
    parallel (GDAL releases the GIL while decoding). On a CPU where PyTorch already uses every
    core, a reader thread preempts the compute threads mid-operator and stalls them all: reading
    in line between batches is faster there (measured in bench/README.md).
    """
    cores = os.cpu_count() or 1
    if device.type != "cpu":
        return max(1, min(8, cores - 1))
    return 1 if cores > torch.get_num_threads() else 0


class EmbeddingEngine:
    """Runs one model over tiles in batches; reusable across jobs.

    Args:
        model: The model; moved to ``device``.
        device: A device or ``auto`` (CUDA, then MPS, then CPU).
        batch_size: Tiles per forward pass.
        prefetch_batches: Batches read ahead and waiting (memory: ``prefetch + readers + 1``
            batches of raw chips, whatever the region size).
        readers: Reader threads; 0 reads in line between batches; None picks by device.
        precision: ``auto`` is bf16 autocast on CUDA and fp32 elsewhere.
    """

    def __init__(
        self,
        model: EmbeddingModel,
        *,
        device: torch.device | str = "auto",
        batch_size: int = 32,
        prefetch_batches: int = 2,
        readers: int | None = None,
        precision: Precision = "auto",
    ) -> None:
        self.device = device if isinstance(device, torch.device) else select_device(device)
        if self.device.type == "cpu" and get_settings().tune_malloc:
            keep_freed_memory()
        self.model = model.to(self.device)
        self.batch_size = batch_size
        self.prefetch_batches = prefetch_batches
        self.readers = default_readers(self.device) if readers is None else readers
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision: Precision = precision

    @classmethod
    def from_settings(
        cls,
        model: EmbeddingModel,
        settings: Settings | None = None,
        *,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        readers: int | None = None,
        precision: Precision = "auto",
    ) -> EmbeddingEngine:
        """An engine configured from ``SOFTMAP_*`` settings; explicit arguments win."""
        s = settings or get_settings()
        return cls(
            model,
            device=device or s.device,
            batch_size=batch_size or s.batch_size,
            prefetch_batches=s.prefetch_batches,
            readers=s.readers if readers is None else readers,
            precision=precision,
        )

    def describe(self) -> str:
        """Where the model runs, as recorded with each run (the GPU model on CUDA)."""
        return describe_device(self.device)

    @contextlib.contextmanager
    def _compute_context(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    yield
            else:
                yield

    def forward(
        self, raw: torch.Tensor, *, return_tokens: bool = False
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """Normalise and embed one batch of raw chips ``[B, C, H, W]``; float32 NumPy out."""
        x = raw.to(self.device, non_blocking=True)
        with self._compute_context():
            x = self.model.meta.normalization.apply(x)
            cls, tokens = self.model.embed(x)
        cls_np = cls.float().cpu().numpy()
        tok_np = tokens.float().cpu().numpy() if (return_tokens and tokens is not None) else None
        return cls_np, tok_np

    def embed_tiles(
        self,
        tiles: Sequence[Tile],
        source: SceneSource,
        *,
        on_batch: BatchCallback,
        progress: ProgressCallback | None = None,
        fill: Mapping[str, float] | None = None,
        resampling: ResamplingName = "nearest",
        return_tokens: bool = False,
    ) -> Progress:
        """Embed ``tiles`` of ``source``; ``on_batch`` gets each batch as soon as it is done.

        Batches may finish out of order when several readers run. Errors from reading (e.g.
        :class:`~backend.errors.RasterReadError`) surface here; batches already handed to
        ``on_batch`` stay done.
        """
        start = time.perf_counter()
        chunks = [
            list(tiles[i : i + self.batch_size]) for i in range(0, len(tiles), self.batch_size)
        ]
        if not chunks:
            return Progress(0, 0, 0.0)
        job = _ReadJob(source, self.model.meta.bands, fill or {}, resampling)
        done = 0
        for batch in self._batches(chunks, job):
            n = len(batch.tiles)
            cls, tokens = self.forward(batch.buffer[:n], return_tokens=return_tokens)
            batch.release()  # the forward pass has finished with it (outputs are on the CPU)
            on_batch([t.tile_id for t in batch.tiles], cls, tokens)
            done += n
            if progress is not None:
                progress(Progress(done, len(tiles), time.perf_counter() - start))
        return Progress(done, len(tiles), time.perf_counter() - start)

    def _new_buffer(self, chip: int) -> torch.Tensor:
        shape = (self.batch_size, len(self.model.meta.bands), chip, chip)
        return torch.empty(shape, dtype=torch.float32, pin_memory=self.device.type == "cuda")

    def _batches(self, chunks: list[list[Tile]], job: _ReadJob) -> Iterator[_Batch]:
        chip = chunks[0][0].chip
        if self.readers == 0:
            buffer = self._new_buffer(chip)
            with job.reader() as reader:
                for chunk in chunks:
                    job.fill_buffer(reader, chunk, buffer)
                    yield _Batch(chunk, buffer, lambda: None)
            return
        yield from self._read_ahead(chunks, job, chip)

    def _read_ahead(self, chunks: list[list[Tile]], job: _ReadJob, chip: int) -> Iterator[_Batch]:
        readers = min(self.readers, len(chunks))
        pool: queue.Queue[torch.Tensor] = queue.Queue()
        for _ in range(self.prefetch_batches + readers + 1):
            pool.put(self._new_buffer(chip))
        work: queue.Queue[list[Tile]] = queue.Queue()
        for chunk in chunks:
            work.put(chunk)
        ready: queue.Queue[object] = queue.Queue(maxsize=self.prefetch_batches + readers)
        stop = threading.Event()

        def read_loop() -> None:
            try:
                with job.reader() as reader:
                    while not stop.is_set():
                        try:
                            chunk = work.get_nowait()
                        except queue.Empty:
                            break
                        buffer = _take(pool, stop)
                        if buffer is None:
                            return
                        job.fill_buffer(reader, chunk, buffer)
                        if not _put(ready, _Batch(chunk, buffer, partial(pool.put, buffer)), stop):
                            return
                _put(ready, _DONE, stop)
            except BaseException as e:  # handed to the consumer, which re-raises it
                _put(ready, _Failure(e), stop)

        threads = [
            threading.Thread(target=read_loop, name=f"softmap-reader-{i}", daemon=True)
            for i in range(readers)
        ]
        for t in threads:
            t.start()
        finished = 0
        try:
            while finished < readers:
                item = ready.get()
                if item is _DONE:
                    finished += 1
                elif isinstance(item, _Failure):
                    raise item.error
                else:
                    assert isinstance(item, _Batch)
                    yield item
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)


@dataclass(frozen=True)
class _ReadJob:
    """What every reader thread needs to turn tiles into raw chips."""

    source: SceneSource
    bands: tuple[str, ...]
    fill: Mapping[str, float]
    resampling: ResamplingName

    def reader(self) -> SceneReader:
        return SceneReader(self.source, resampling=self.resampling)

    def fill_buffer(self, reader: SceneReader, chunk: list[Tile], buffer: torch.Tensor) -> None:
        view = buffer.numpy()
        for j, tile in enumerate(chunk):
            read_chip(reader, tile.tile_id, tile.window, self.bands, fill=self.fill, out=view[j])


def read_chip(
    reader: SceneReader,
    tile_id: str,
    window: PixelWindow,
    bands: Sequence[str],
    *,
    fill: Mapping[str, float],
    out: NDArray[np.float32],
) -> None:
    """Read one tile's raw chip into ``out``; a read error names the tile.

    Raises:
        RasterReadError: the raster cannot be read, with the tile id in front.
    """
    try:
        reader.read(window, bands, fill=fill, out=out)
    except RasterReadError as e:
        raise RasterReadError(f"Tile {tile_id}: {e.message}", title=e.title) from e


def _take(pool: queue.Queue[torch.Tensor], stop: threading.Event) -> torch.Tensor | None:
    while not stop.is_set():
        try:
            return pool.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
