"""Batched embedding of tiles with raster reading overlapped with compute.

A producer thread reads chips into a small pool of (pinned, on CUDA) buffers and hands full batches
over a bounded queue; the caller's thread copies each batch to the device (non-blocking on CUDA),
normalises it there, runs the model under ``torch.inference_mode`` (bf16 autocast on CUDA) and
passes the embeddings on. Buffers go back to the pool only after the forward pass has consumed
them, so memory stays bounded by ``prefetch_batches + 2`` batches whatever the region size.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from backend.errors import DeviceError
from backend.models import EmbeddingModel
from backend.reader import ResamplingName, SceneReader
from backend.sources import SceneSource
from backend.tiling import Tile

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Progress:
    """Where an embedding job stands."""

    done: int
    total: int
    elapsed_s: float

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


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class EmbeddingEngine:
    """Runs one model over tiles in batches; reusable across jobs."""

    def __init__(
        self,
        model: EmbeddingModel,
        *,
        device: torch.device | str = "auto",
        batch_size: int = 32,
        prefetch_batches: int = 2,
        precision: Precision = "auto",
    ) -> None:
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.model = model.to(self.device)
        self.batch_size = batch_size
        self.prefetch_batches = prefetch_batches
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.precision: Precision = precision

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

        Errors from reading (e.g. :class:`~backend.errors.RasterReadError`) surface here; batches
        already handed to ``on_batch`` stay done.
        """
        total = len(tiles)
        start = time.perf_counter()
        if total == 0:
            return Progress(0, 0, 0.0)
        bands = self.model.meta.bands
        chip = tiles[0].chip
        pool: queue.Queue[torch.Tensor] = queue.Queue()
        pin = self.device.type == "cuda"
        for _ in range(self.prefetch_batches + 2):
            shape = (self.batch_size, len(bands), chip, chip)
            pool.put(torch.empty(shape, dtype=torch.float32, pin_memory=pin))
        ready: queue.Queue[object] = queue.Queue(maxsize=self.prefetch_batches)
        stop = threading.Event()

        def produce() -> None:
            try:
                with SceneReader(source, resampling=resampling) as reader:
                    for i in range(0, total, self.batch_size):
                        chunk = list(tiles[i : i + self.batch_size])
                        buf = _take(pool, stop)
                        if buf is None:
                            return
                        view = buf.numpy()
                        for j, tile in enumerate(chunk):
                            reader.read(tile.window, bands, fill=fill, out=view[j])
                        if not _put(ready, _Batch(chunk, buf), stop):
                            return
                _put(ready, _DONE, stop)
            except BaseException as e:  # handed to the consumer, which re-raises it
                _put(ready, _Failure(e), stop)

        thread = threading.Thread(target=produce, name="softmap-reader", daemon=True)
        thread.start()
        done = 0
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                assert isinstance(item, _Batch)
                n = len(item.tiles)
                cls, tokens = self.forward(item.buffer[:n], return_tokens=return_tokens)
                pool.put(item.buffer)  # the forward pass has finished with it (outputs on CPU)
                on_batch([t.tile_id for t in item.tiles], cls, tokens)
                done += n
                if progress is not None:
                    progress(Progress(done, total, time.perf_counter() - start))
        finally:
            stop.set()
            thread.join(timeout=30)
        return Progress(done, total, time.perf_counter() - start)


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
