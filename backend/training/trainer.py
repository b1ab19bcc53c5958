"""SoftCon pretraining: from scratch or continued from a checkpoint, deterministic with a seed.

Next to the checkpoint ``<out>/<name>.pt`` (the backbone's state dict with DINOv2/SoftCon key
names, so :func:`backend.models.create_model` loads it with ``--checkpoint``) the run writes
``<name>.config.json`` (the recipe, hardware and timings), ``<name>.data.json`` (every chip id and
which ones had labels) and ``<name>.loss.json`` (the loss curve, per step and per epoch).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from backend.errors import ConfigurationError
from backend.imagery.sources import SourceCatalog, demo_catalog
from backend.models.api import create_model
from backend.models.inference import describe_device, select_device
from backend.models.registry import ModelRegistry, default_registry
from backend.models.vit import DinoVisionTransformer
from backend.training.augment import AugmentConfig, random_token_masks, two_views
from backend.training.chips import ChipSet, load_chips
from backend.training.config import TrainConfig
from backend.training.softcon_loss import SoftConModel, lr_at, momentum_at


@dataclass(frozen=True)
class StepInfo:
    """Progress of a run, passed to the callback after every step."""

    step: int
    total: int
    epoch: int
    loss: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What a run produced and how fast it went."""

    checkpoint: str
    config: str
    data: str
    loss_curve: str
    model: str
    soft: bool
    chips: int
    labelled_chips: int
    steps: int
    epochs: float
    first_loss: float
    last_loss: float
    seconds: float
    steps_per_s: float
    chips_per_s: float
    device: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def build_encoder(cfg: TrainConfig, registry: ModelRegistry) -> DinoVisionTransformer:
    """The backbone to train: seeded random init, a checkpoint file, or a registered model.

    Raises:
        ConfigurationError: the model is not a ViT.
        SoftMapError: unknown model, missing or mismatched weights.
    """
    meta = registry.get(cfg.model)
    if cfg.init == "scratch":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            module = registry.builder(meta.id)(meta)
    elif cfg.init.startswith("model:"):
        source_id = cfg.init.removeprefix("model:")
        if registry.get(source_id).vit != meta.vit or registry.get(source_id).bands != meta.bands:
            raise ConfigurationError(
                f"--init {cfg.init}: {source_id} does not have {cfg.model}'s architecture; "
                f"train --model {source_id} to continue its pretraining."
            )
        module = create_model(source_id, registry=registry).module
    else:
        module = create_model(meta.id, checkpoint=cfg.init, registry=registry).module
    if not isinstance(module, DinoVisionTransformer):
        raise ConfigurationError(
            f"SoftCon pretraining here needs a ViT (Siamese masking of patch tokens); "
            f"{meta.id} is a {meta.architecture}."
        )
    return module.float().train()


def _autocast(device: torch.device, precision: str) -> AbstractContextManager[object]:
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def train_softcon(
    cfg: TrainConfig,
    out_dir: Path,
    *,
    name: str | None = None,
    catalog: SourceCatalog | None = None,
    registry: ModelRegistry | None = None,
    augment: AugmentConfig | None = None,
    chips: ChipSet | None = None,
    save_half: bool = False,
    on_step: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Run SoftCon pretraining and save the checkpoint, config, data list and loss curve.

    Args:
        cfg: The recipe.
        out_dir: Folder for the outputs (created).
        name: File stem of the outputs (default: the model id).
        catalog: Where source ids are looked up (default: the bundled scenes).
        registry: Model registry (default: the built-in one).
        augment: Augmentation strengths (default: ``cfg.augment``).
        chips: Pre-loaded chips (tests reuse them); loaded from ``cfg.sources`` otherwise.
        save_half: Store the weights as float16 (half the size; loaded back as float32).
        on_step: Called after each optimiser step.

    Raises:
        SoftMapError: bad sources, model, weights, device or no training data.
    """
    registry = registry or default_registry
    catalog = catalog or demo_catalog()
    augment = augment or cfg.augment
    meta = registry.get(cfg.model)
    name = name or meta.id
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)

    encoder = build_encoder(cfg, registry)
    if chips is None:
        pairs = [(catalog.get(sid), mapping) for sid, mapping in cfg.sources.items()]
        strides = {sid: cfg.stride for sid in cfg.sources} if cfg.stride else None
        chips = load_chips(
            pairs,
            meta,
            strides=strides or _default_strides(cfg, meta.chip_size),
            holdout=cfg.holdout,
            max_nodata_fraction=cfg.max_nodata_fraction,
            min_labelled=cfg.min_labelled,
        )
    n = len(chips)
    per_epoch = n // cfg.batch_size
    if per_epoch == 0:
        raise ConfigurationError(
            f"Only {n} training chips for batches of {cfg.batch_size}: lower --batch-size."
        )
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warmup = round(total * cfg.warmup_fraction)

    model = SoftConModel(
        encoder,
        proj_hidden=cfg.proj_hidden,
        proj_dim=cfg.proj_dim,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        soft=cfg.soft,
    ).to(device)
    decay = [p for p in model.online_parameters() if p.ndim >= 2]
    no_decay = [p for p in model.online_parameters() if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay},
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        weight_decay=0.0,
    )
    data_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    tokens = (meta.chip_size // (meta.patch_size or 1)) ** 2

    losses: list[float] = []
    epoch_means: list[float] = []
    step = 0
    start = time.perf_counter()
    while step < total:
        order = torch.randperm(n, generator=data_gen)
        epoch_losses: list[float] = []
        for i in range(per_epoch):
            if step >= total:
                break
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            batch = chips.images[idx].to(device=device, dtype=torch.float32, non_blocking=True)
            fractions = chips.fractions[idx].to(device)
            has_label = chips.has_label[idx].to(device)
            lr = lr_at(step, total, cfg.lr, cfg.min_lr, warmup)
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.no_grad():
                view1, view2 = two_views(batch, augment, aug_gen)
                masks = random_token_masks(len(idx), tokens, cfg.mask_ratio, aug_gen, device)
            with _autocast(device, cfg.precision):
                out = model(view1, view2, fractions, has_label, masks)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.online_parameters(), 3.0)
            opt.step()
            model.update_momentum(momentum_at(step, total, cfg.ema_start, cfg.ema_end))
            value = float(out.loss.detach())
            losses.append(value)
            epoch_losses.append(value)
            step += 1
            if on_step is not None:
                on_step(
                    StepInfo(step, total, len(epoch_means), value, lr, time.perf_counter() - start)
                )
        epoch_means.append(sum(epoch_losses) / max(len(epoch_losses), 1))
    seconds = time.perf_counter() - start

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {k: out_dir / f"{name}{k}" for k in (".pt", ".config.json", ".data.json", ".loss.json")}
    state = {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()}
    if save_half:
        state = {k: v.half() for k, v in state.items()}
    torch.save(state, paths[".pt"])
    result = TrainResult(
        checkpoint=str(paths[".pt"]),
        config=str(paths[".config.json"]),
        data=str(paths[".data.json"]),
        loss_curve=str(paths[".loss.json"]),
        model=meta.id,
        soft=cfg.soft,
        chips=n,
        labelled_chips=int(chips.has_label.sum()),
        steps=step,
        epochs=round(step / per_epoch, 3),
        first_loss=round(losses[0], 4),
        last_loss=round(epoch_means[-1], 4),
        seconds=round(seconds, 1),
        steps_per_s=round(step / seconds, 3) if seconds else 0.0,
        chips_per_s=round(step * cfg.batch_size / seconds, 1) if seconds else 0.0,
        device=describe_device(device),
    )
    run_info = {
        "config": json.loads(cfg.model_dump_json()),
        "augment": json.loads(augment.model_dump_json()),
        "result": result.to_json(),
        "hardware": {
            "device": result.device,
            "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "torch": torch.__version__,
        },
    }
    paths[".config.json"].write_text(json.dumps(run_info, indent=2) + "\n")
    paths[".data.json"].write_text(json.dumps(chips.manifest(), indent=1) + "\n")
    curve = {"step_loss": [round(v, 5) for v in losses], "epoch_loss": epoch_means}
    paths[".loss.json"].write_text(json.dumps(curve) + "\n")
    return result


def _default_strides(cfg: TrainConfig, chip: int) -> dict[str, int]:
    # Labelled scenes at half a chip (more label-guided pairs), unlabelled ones at a whole chip,
    # so the unlabelled scene does not drown the labels.
    return {sid: chip // 2 if mapping else chip for sid, mapping in cfg.sources.items()}
