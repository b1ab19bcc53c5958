"""Build a model by name, load its weights, and embed batches of normalised chips."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from backend.errors import BandMismatchError, DeviceError
from backend.models.checkpoints import LoadReport, load_checkpoint
from backend.models.meta import ModelMeta
from backend.models.registry import ModelRegistry, default_registry
from backend.models.vit import DinoVisionTransformer
from backend.models.weights import resolve_weights
from backend.settings import Settings

#: Seed of ``pretrained=False`` models, so that benchmarks compare the same random weights.
RANDOM_INIT_SEED = 0


class EmbeddingModel:
    """A backbone in eval mode with the metadata that describes its inputs and outputs.

    Attributes:
        meta: The registry entry (bands, normalisation, chip size, embedding dim, licence).
        module: The PyTorch backbone.
        load_report: How the weights were loaded, or None for random weights.
        random_seed: The seed of random weights (None when weights were loaded).
        weights_digest: :func:`file_digest` of the weights file, taken when it was loaded
            (computed on first use when not given).
    """

    def __init__(
        self,
        meta: ModelMeta,
        module: nn.Module,
        load_report: LoadReport | None = None,
        *,
        random_seed: int | None = None,
        weights_digest: str | None = None,
    ) -> None:
        self.meta = meta
        self.module = module.eval()
        self.load_report = load_report
        self.random_seed = random_seed
        self._weights_digest = weights_digest

    @property
    def weights_id(self) -> str:
        """Which weights these are: ``sha256:<16 hex>`` of the file loaded, or ``random:<seed>``.

        Part of every embedding set's key, so that embeddings of retrained or other weights
        under the same model id (a new bundled ``softmap-default``, a ``--checkpoint``) never mix
        with cached ones, and heads fitted on other weights are refused. A file's digest is
        taken once, when the model is built from it, so replacing the file later does not
        change the id of the weights already in memory.
        """
        if self.load_report is None:
            return f"random:{self.random_seed if self.random_seed is not None else 'unknown'}"
        if self._weights_digest is None:
            self._weights_digest = file_digest(self.load_report.path)
        return f"sha256:{self._weights_digest}"

    def __repr__(self) -> str:
        weights = self.load_report.path.name if self.load_report else "random init"
        return f"EmbeddingModel({self.meta.id!r}, {weights}, device={self.device})"

    @property
    def device(self) -> torch.device:
        """The device the parameters live on."""
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> EmbeddingModel:
        """Move the backbone to ``device`` (in place) and return self.

        Raises:
            DeviceError: if the device does not exist or this PyTorch build cannot use it.
        """
        try:
            self.module.to(torch.device(device))
        # A CPU-only PyTorch build raises AssertionError("Torch not compiled with CUDA enabled").
        except (RuntimeError, AssertionError, ValueError) as err:
            raise DeviceError(
                f"Cannot move {self.meta.id} to '{device}': {err}. Use 'cpu' or set "
                "SOFTMAP_DEVICE=auto."
            ) from err
        return self

    def embed(self, batch: Tensor) -> tuple[Tensor, Tensor | None]:
        """Embed a batch of normalised chips.

        Args:
            batch: ``[B, C, H, W]`` with C = ``len(meta.bands)`` in ``meta.bands`` order, already
                normalised with ``meta.normalization``; moved to the model's device if needed.

        Returns:
            ``(pooled, tokens)``: the class token (ViT) or pooled feature (ResNet) ``[B, D]``, and
            the patch tokens ``[B, h, w, D]`` (ViT) or None (ResNet).

        Raises:
            BandMismatchError: if the batch does not have one channel per model band.
            ValueError: if the batch is not 4-D or its size does not fit the patch size.
        """
        if batch.ndim != 4:
            raise ValueError(f"expected a batch shaped [B, C, H, W], got {tuple(batch.shape)}")
        if batch.shape[1] != self.meta.in_chans:
            raise BandMismatchError(
                f"{self.meta.id} expects {self.meta.in_chans} bands "
                f"({', '.join(self.meta.bands)}) but the batch has {batch.shape[1]} channels."
            )
        param = next(self.module.parameters())
        batch = batch.to(device=param.device, dtype=param.dtype)
        with torch.inference_mode():
            if isinstance(self.module, DinoVisionTransformer):
                return self.module.forward_features(batch)
            pooled: Tensor = self.module(batch)
            return pooled, None


def file_digest(path: Path) -> str:
    """The first 16 hex digits of a file's SHA-256 (once per file version and process)."""
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a file rewritten in place is hashed again. Measured: 0.02 s
    # for the bundled 7.8 MB model, 0.26 s for 350 MB (the size of the ViT-B/14 release file).
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _build(meta: ModelMeta, registry: ModelRegistry, seed: int) -> nn.Module:
    # fork_rng restores the global CPU RNG afterwards: building a model must not change what
    # torch.rand returns elsewhere, and the same seed gives the same weights in every process.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return registry.builder(meta.id)(meta)


def create_model(
    name: str,
    checkpoint: str | Path | None = None,
    *,
    pretrained: bool = True,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
) -> EmbeddingModel:
    """Build the model ``name`` and load its weights.

    Args:
        name: A registered model id, e.g. ``"softcon-vits14-s2"``.
        checkpoint: An explicit weight file; always loaded when given.
        pretrained: Load the model's published weights (found by
            :func:`~backend.models.weights.resolve_weights`). False gives random weights seeded
            with 0, for benchmarks. Test models (``meta.random_init_seed``) never need weights.
        settings: Where to look for weights and whether to go online; defaults to the
            process settings.
        registry: Defaults to the built-in registry.

    Returns:
        An :class:`EmbeddingModel` on the CPU, in eval mode.

    Raises:
        UnknownModelError: if ``name`` is not registered (suggesting the closest id).
        WeightsNotFoundError: if the weights are needed but cannot be found.
        CheckpointMismatchError: if the file is unreadable or does not fit the model.
    """
    registry = registry or default_registry
    meta = registry.get(name)
    path: Path | None = None
    if checkpoint is not None:
        path = resolve_weights(meta, Path(checkpoint), settings)
    elif pretrained:
        path = resolve_weights(meta, None, settings)
    if path is None:
        seed = meta.random_init_seed if meta.random_init_seed is not None else RANDOM_INIT_SEED
        return EmbeddingModel(meta, _build(meta, registry, seed), random_seed=seed)
    # Weights will overwrite every parameter: build without allocating or initialising any.
    with torch.device("meta"):
        module = registry.builder(meta.id)(meta)
    report = load_checkpoint(module, path, meta)
    return EmbeddingModel(meta, module, report, weights_digest=file_digest(path))
