"""Load SoftCon checkpoints into SoftMap's backbones, safely and with errors that say why not.

Two published layouts are accepted:

``softcon-release``
    The authors' files (``B13_vits14_softcon.pth``, ``B2_rn50_softcon.pth``, ...): flat state dicts
    with DINOv2 or torchvision key names; the ViTs include ``mask_token``.
``torchgeo-enc``
    torchgeo's encoder exports (``*_enc.pth``): no ``mask_token`` (it is only used by masked
    pretraining, so it is filled with zeros) and possibly classifier keys (``head.*``, ``fc.*``,
    ``fc_norm.*``), which are dropped.

Training checkpoints wrapped in ``state_dict``/``model``/``teacher``/``student`` and keys prefixed
with ``module.``/``backbone.``/``encoder.``/``model.`` are unwrapped first. Files are always read
with ``torch.load(weights_only=True)``: a checkpoint can never execute code.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from backend.errors import CheckpointMismatchError
from backend.models.meta import ModelMeta
from backend.models.registry import default_registry

CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model", "teacher", "student")
KEY_PREFIXES: tuple[str, ...] = ("module.", "backbone.", "encoder.", "model.")
#: Top-level names of classifier/projection heads that encoder exports may carry.
HEAD_ROOTS: frozenset[str] = frozenset(
    {"head", "fc", "fc_norm", "dino_head", "ibot_head", "classifier"}
)

# torch.load on a damaged file fails in many ways (a truncated zip is a RuntimeError, random bytes
# can surface as a KeyError from the legacy unpickler), so every one of them is mapped here.
_LOAD_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    OSError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
)
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_VIT_NAMES = {384: "ViT-S/14", 768: "ViT-B/14", 1024: "ViT-L/14", 1536: "ViT-g/14"}
_SENSOR_NAMES = {
    2: "Sentinel-1 (2-band)",
    12: "Sentinel-2 L2A (12-band)",
    13: "Sentinel-2 (13-band)",
}
_LIST_LIMIT = 8
_UNREADABLE = "Cannot read checkpoint"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_checkpoint` did to make a file fit the model.

    Attributes:
        path: The file that was loaded.
        layout: ``"softcon-release"``, ``"torchgeo-enc"``, or for training checkpoints the
            unwrapping steps taken, e.g. ``"wrapped (unwrapped 'teacher', stripped 'backbone.')"``.
        dropped: Checkpoint keys that were ignored (classifier heads).
        filled: Model keys the checkpoint lacked and that were filled with zeros.
    """

    path: Path
    layout: str
    dropped: tuple[str, ...] = ()
    filled: tuple[str, ...] = ()


def read_checkpoint(path: Path) -> object:
    """``torch.load`` a file on the CPU with ``weights_only=True``.

    Raises:
        CheckpointMismatchError: if the file cannot be read, is damaged, or holds Python objects
            that a safe load refuses; raised from the original exception.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only names the class it refused; any other unpickling failure means bytes that
        # are not a checkpoint at all.
        match = _UNSAFE_GLOBAL.search(str(err))
        if match is None:
            raise CheckpointMismatchError(_unreadable(path, err), title=_UNREADABLE) from err
        raise CheckpointMismatchError(
            f"{path} holds Python objects that a safe load (torch.load weights_only=True) "
            f"refuses (it references {match.group(1)}). SoftMap only loads plain state dicts of "
            "tensors; re-save it with torch.save(model.state_dict(), path) from code you trust.",
            title="Unsafe checkpoint refused",
        ) from err
    except _LOAD_ERRORS as err:
        raise CheckpointMismatchError(_unreadable(path, err), title=_UNREADABLE) from err


def _unreadable(path: Path, err: Exception) -> str:
    text = str(err)
    # torch's weights_only failures open with boilerplate; the specific cause follows this marker.
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].split("Check the documentation", 1)[0]
    detail = " ".join(text.split()).split(". ", 1)[0].rstrip(".")[:200] or "no details"
    return (
        f"{path} cannot be read as a PyTorch checkpoint: the file is missing, truncated or "
        f"corrupt ({type(err).__name__}: {detail}). Download it again."
    )


def _is_head(key: str, model_keys: Mapping[str, Tensor]) -> bool:
    return key not in model_keys and key.split(".", 1)[0] in HEAD_ROOTS


def _unwrap(obj: object, path: Path, steps: list[str]) -> dict[str, Tensor]:
    while isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
        steps.append(f"unwrapped '{key}'")
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(
            f"{path} is not a state dict: it holds a {type(obj).__name__}, not a mapping of "
            "parameter names to tensors."
        )
    odd = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if odd or not obj:
        raise CheckpointMismatchError(
            f"{path} is not a state dict of tensors: "
            + (f"entries {_listing(odd)} are not tensors." if odd else "it is empty.")
        )
    return {str(k): v for k, v in obj.items()}


def _strip_prefixes(
    state: dict[str, Tensor], model_keys: Mapping[str, Tensor], steps: list[str]
) -> dict[str, Tensor]:
    while True:
        # Heads stay beside the prefixed backbone in training checkpoints ({backbone.*, head.*}).
        body = [k for k in state if not _is_head(k, model_keys)]
        prefix = next(
            (p for p in KEY_PREFIXES if body and all(k.startswith(p) for k in body)), None
        )
        if prefix is None:
            return state
        state = {k.removeprefix(prefix): v for k, v in state.items()}
        steps.append(f"stripped '{prefix}'")


def _fit(value: Tensor, ref: Tensor) -> Tensor:
    device = None if ref.device.type == "meta" else ref.device
    return value.to(dtype=ref.dtype, device=device)


def _is_fillable(key: str) -> bool:
    # Neither affects inference: mask_token is only used by masked pretraining, and BatchNorm's
    # num_batches_tracked only matters when training with momentum=None.
    return key == "mask_token" or key.endswith(".num_batches_tracked")


def load_checkpoint(module: nn.Module, path: Path, meta: ModelMeta) -> LoadReport:
    """Load a SoftCon checkpoint into ``module`` strictly, after adapting known layouts.

    Args:
        module: A freshly built backbone for ``meta`` (its keys define what must be present); it
            may live on the ``meta`` device, in which case it receives the loaded tensors.
        path: The checkpoint file.
        meta: The model entry, used to explain mismatches.

    Returns:
        A :class:`LoadReport` naming the layout and any dropped or zero-filled keys.

    Raises:
        CheckpointMismatchError: if the file is unreadable, unsafe or not a state dict, or if its
            keys or shapes do not fit the model: one error listing missing, unexpected and
            wrongly shaped keys with a hint at the likely cause.
    """
    path = Path(path)
    steps: list[str] = []
    model_sd = module.state_dict()
    state = _unwrap(read_checkpoint(path), path, steps)
    state = _strip_prefixes(state, model_sd, steps)

    dropped = tuple(sorted(k for k in state if _is_head(k, model_sd)))
    state = {k: v for k, v in state.items() if k not in dropped}
    filled: list[str] = []
    for key, ref in model_sd.items():
        if key not in state and _is_fillable(key):
            state[key] = torch.zeros(ref.shape, dtype=ref.dtype)
            filled.append(key)

    missing = [k for k in model_sd if k not in state]
    unexpected = [k for k in state if k not in model_sd]
    wrong = [k for k in model_sd if k in state and state[k].shape != model_sd[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointMismatchError(
            _mismatch_message(path, meta, state, model_sd, missing, unexpected, wrong)
        )
    try:
        # assign=True lets a module built on the meta device (no wasted random init) take the
        # checkpoint's tensors; they are first cast to the module's dtype and device.
        fitted = {k: _fit(v, model_sd[k]) for k, v in state.items()}
        module.load_state_dict(fitted, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointMismatchError(f"{path} does not load into '{meta.id}': {err}") from err

    if steps:
        layout = f"wrapped ({', '.join(steps)})"
    elif dropped or filled or path.stem.endswith("_enc"):
        layout = "torchgeo-enc"
    else:
        layout = "softcon-release"
    return LoadReport(path=path, layout=layout, dropped=dropped, filled=tuple(filled))


# --- explaining a mismatch ------------------------------------------------------------------
def _listing(items: Sequence[str], limit: int = _LIST_LIMIT) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown}, … and {len(items) - limit} more" if len(items) > limit else shown


def _shape(t: Tensor) -> str:
    return str(list(t.shape))


def _models_for(architecture: str, embed_dim: int | None, in_chans: int | None) -> list[str]:
    return [
        m.id
        for m in default_registry.list()
        if m.random_init_seed is None
        and m.architecture == architecture
        and (embed_dim is None or m.embed_dim == embed_dim)
        and (in_chans is None or m.in_chans == in_chans)
    ]


def _use(ids: Iterable[str], fallback: str) -> str:
    found = list(ids)
    return f"use {' or '.join(found)}" if found else fallback


def _block_count(keys: Iterable[str]) -> int:
    return len({k.split(".")[1] for k in keys if k.startswith("blocks.")})


def _hints(
    meta: ModelMeta, state: Mapping[str, Tensor], model_sd: Mapping[str, Tensor]
) -> list[str]:
    hints: list[str] = []
    ckpt_vit = "cls_token" in state or any(k.startswith("blocks.") for k in state)
    ckpt_cnn = "conv1.weight" in state and any(k.startswith("layer1.") for k in state)
    if meta.architecture == "vit" and ckpt_cnn and not ckpt_vit:
        cnn_ids = _models_for("resnet50", None, None)
        return ["this looks like a ResNet-50 checkpoint; " + _use(cnn_ids, "use a ResNet model")]
    if meta.architecture == "resnet50" and ckpt_vit and not ckpt_cnn:
        return ["this looks like a ViT checkpoint; " + _use(_models_for("vit", None, None), "")]

    stem = "patch_embed.proj.weight" if meta.architecture == "vit" else "conv1.weight"
    ckpt_chans = state[stem].shape[1] if stem in state and state[stem].ndim == 4 else None
    ckpt_dim: int | None = None
    if meta.architecture == "vit" and "cls_token" in state:
        ckpt_dim = int(state["cls_token"].shape[-1])

    if ckpt_dim is not None and ckpt_dim != meta.embed_dim:
        name = _VIT_NAMES.get(ckpt_dim, f"{ckpt_dim}-d ViT")
        ids = _models_for("vit", ckpt_dim, ckpt_chans or meta.in_chans)
        hints.append(
            f"embedding dim {ckpt_dim} vs {meta.embed_dim}: this is a {name} checkpoint; "
            + _use(ids, "no registered model has that width")
        )
    if ckpt_chans is not None and ckpt_chans != meta.in_chans:
        sensor = _SENSOR_NAMES.get(ckpt_chans, f"{ckpt_chans}-band")
        kind = {2: "a *-s1 model", 13: "a *-s2 model"}.get(ckpt_chans, "a model with those bands")
        ids = _models_for(meta.architecture, ckpt_dim or meta.embed_dim, ckpt_chans)
        hints.append(
            f"input bands {ckpt_chans} vs {meta.in_chans}: this looks like a {sensor} checkpoint; "
            f"use {kind}" + (f" ({', '.join(ids)})" if ids else "")
        )
    ckpt_depth, model_depth = _block_count(state), _block_count(model_sd)
    if meta.architecture == "vit" and ckpt_depth and ckpt_depth != model_depth:
        hints.append(f"the checkpoint has {ckpt_depth} transformer blocks, the model {model_depth}")
    if (
        meta.vit is not None
        and "pos_embed" in state
        and state["pos_embed"].shape[-1] == meta.embed_dim
        and state["pos_embed"].shape != model_sd["pos_embed"].shape
    ):
        grid = int((state["pos_embed"].shape[1] - 1) ** 0.5)
        own = meta.vit.img_size // meta.vit.patch_size
        hints.append(
            f"position embeddings cover a {grid}×{grid} token grid, the model a {own}×{own} grid "
            f"({meta.vit.img_size} px)"
        )
    return hints


def _mismatch_message(
    path: Path,
    meta: ModelMeta,
    state: Mapping[str, Tensor],
    model_sd: Mapping[str, Tensor],
    missing: Sequence[str],
    unexpected: Sequence[str],
    wrong: Sequence[str],
) -> str:
    arch = "ViT" if meta.architecture == "vit" else "ResNet-50"
    lines = [
        f"{path} does not fit model '{meta.id}' ({arch}, {meta.in_chans} bands, "
        f"embedding dim {meta.embed_dim})."
    ]
    hints = _hints(meta, state, model_sd)
    if hints:
        lines.append(f"Likely cause: {'; '.join(hints)}.")
    if wrong:
        shapes = [
            f"{k}: checkpoint {_shape(state[k])} vs model {_shape(model_sd[k])}" for k in wrong
        ]
        lines.append(f"Wrongly shaped ({len(wrong)}): {_listing(shapes)}.")
    if missing:
        lines.append(f"Missing ({len(missing)}): {_listing(missing)}.")
    if unexpected:
        lines.append(f"Unexpected ({len(unexpected)}): {_listing(unexpected)}.")
    return "\n".join(lines)
