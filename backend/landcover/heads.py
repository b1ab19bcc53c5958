"""Land-cover heads: soft-label softmax classifiers on frozen embeddings, and their evaluation.

A head maps an embedding to Dynamic World's nine class probabilities. It is a linear layer on
standardised features (multinomial logistic regression) trained with the soft cross-entropy
``−Σ_c y_c log p_c`` against the class fractions of labelled tiles, which has the same gradient as
``KL(y ‖ p)``; an L2 penalty keeps it stable on the few hundred tiles a scene offers. For ViTs a
second head of the same form is trained on patch tokens against per-token class fractions, which
gives sub-tile maps (one cell per token).

Evaluation is held out and spatially blocked (:func:`spatial_split`): tiles are grouped into square
blocks, whole blocks go to the test side, and training tiles touching a test tile are dropped, so
no two neighbouring tiles sit on both sides. Metrics: multi-label mAP (against the multi-hot
labels), top-1 accuracy of the dominant class, and mean KL divergence.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from backend.errors import HeadMismatchError
from backend.landcover.features import OutOfDistribution
from backend.landcover.labels import DW_CLASSES, N_CLASSES, SoftLabels

#: L2 penalty on the weights (features are standardised), chosen for a few hundred samples.
WEIGHT_DECAY = 1e-2
#: Side of the square blocks (in tiles) of the spatial split.
SPLIT_BLOCK = 3
#: Share of blocks held out for testing.
TEST_FRACTION = 0.3


@dataclass(frozen=True)
class LinearSoftmax:
    """``softmax(((x − mean) / std) @ weight.T + bias)`` over the nine DW classes."""

    weight: NDArray[np.float32]  # (9, d)
    bias: NDArray[np.float32]  # (9,)
    mean: NDArray[np.float32]  # (d,)
    std: NDArray[np.float32]  # (d,)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return np.asarray(z @ self.weight.T + self.bias, dtype=np.float32)

    def predict(self, x: NDArray[np.floating]) -> NDArray[np.float32]:
        """Class probabilities ``(..., 9)`` of features ``(..., d)``; rows sum to 1."""
        logits = self.logits(x).astype(np.float64)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray(e / e.sum(axis=-1, keepdims=True), dtype=np.float32)


def fit_linear_softmax(
    x: NDArray[np.floating],
    y: NDArray[np.floating],
    *,
    weight_decay: float = WEIGHT_DECAY,
    max_iter: int = 200,
    seed: int = 0,
) -> LinearSoftmax:
    """Fit a soft-label softmax classifier (full-batch L-BFGS, CPU, deterministic).

    Args:
        x: ``(n, d)`` features.
        y: ``(n, 9)`` target distributions (rows summing to 1).
        weight_decay: L2 penalty on the weights (not the bias).
        max_iter: L-BFGS iterations.
        seed: Seed of the (zero-free) initialisation.
    """
    xs = np.asarray(x, dtype=np.float32)
    mean = xs.mean(axis=0)
    std = xs.std(axis=0) + 1e-6
    threads = torch.get_num_threads()
    # These problems are tiny: thread start-up and contention cost far more than they save.
    torch.set_num_threads(1)
    try:
        return _lbfgs(xs, np.asarray(y, dtype=np.float64), mean, std, weight_decay, max_iter, seed)
    finally:
        torch.set_num_threads(threads)


def _lbfgs(
    xs: NDArray[np.float32],
    y: NDArray[np.float64],
    mean: NDArray[np.float32],
    std: NDArray[np.float32],
    weight_decay: float,
    max_iter: int,
    seed: int,
) -> LinearSoftmax:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        xt = torch.from_numpy((xs - mean) / std).double()
        yt = torch.from_numpy(y)
        w = torch.zeros(yt.shape[1], xt.shape[1], dtype=torch.float64, requires_grad=True)
        # Bias starts at the log class prior, so an uninformative feature predicts the prior.
        prior = yt.mean(dim=0).clamp_min(1e-4)
        b = torch.log(prior / prior.sum()).clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [w, b], max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logp = torch.log_softmax(xt @ w.T + b, dim=1)
            loss = -(yt * logp).sum(dim=1).mean() + weight_decay * (w * w).sum() / 2
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        opt.step(closure)  # type: ignore[no-untyped-call]
    return LinearSoftmax(
        w.detach().float().numpy(), b.detach().float().numpy(), mean, std.astype(np.float32)
    )


# --- evaluation ----------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadMetrics:
    """Held-out evaluation of a head."""

    n_train: int
    n_test: int
    mAP: float | None  # noqa: N815 (the usual name of the metric)
    top1: float | None
    kl: float | None
    baseline_top1: float | None  # predicting the training set's most frequent dominant class
    classes_evaluated: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    probabilities: NDArray[np.floating], labels: SoftLabels, *, n_train: int, prior: int | None
) -> HeadMetrics:
    """Multi-label mAP, top-1 of the dominant class and mean KL of predictions on labelled rows."""
    from sklearn.metrics import average_precision_score

    p = np.asarray(probabilities, dtype=np.float64)
    y = labels.fractions.astype(np.float64)
    n = len(p)
    if n == 0:
        return HeadMetrics(n_train, 0, None, None, None, None)
    aps: list[float] = []
    evaluated: list[str] = []
    for c in range(N_CLASSES):
        pos = labels.multi_hot[:, c]
        if pos.any() and not pos.all():
            aps.append(float(average_precision_score(pos, p[:, c])))
            evaluated.append(DW_CLASSES[c])
    dominant = y.argmax(axis=1)
    top1 = float((p.argmax(axis=1) == dominant).mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_terms = np.where(y > 0, y * (np.log(y) - np.log(np.clip(p, 1e-12, 1))), 0.0)
    base = float((dominant == prior).mean()) if prior is not None else None
    return HeadMetrics(
        n_train=n_train,
        n_test=n,
        mAP=round(float(np.mean(aps)), 4) if aps else None,
        top1=round(top1, 4),
        kl=round(float(kl_terms.sum(axis=1).mean()), 4),
        baseline_top1=round(base, 4) if base is not None else None,
        classes_evaluated=tuple(evaluated),
    )


def spatial_split(
    rows: NDArray[np.integer],
    cols: NDArray[np.integer],
    *,
    block: int = SPLIT_BLOCK,
    test_fraction: float = TEST_FRACTION,
    seed: int = 0,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """A spatially blocked train/test split of tiles given by grid (row, col).

    Tiles are grouped into ``block × block`` squares; a seeded random ``test_fraction`` of the
    occupied squares is the test set. Training tiles that touch a test tile (8-neighbourhood)
    are left out of both sets, so no neighbouring tiles are on both sides.

    Returns:
        ``(train, test)`` boolean masks (disjoint; their union may leave out buffer tiles).
    """
    r = np.asarray(rows, dtype=np.int64)
    c = np.asarray(cols, dtype=np.int64)
    keys = (r // block) * 1_000_003 + (c // block)
    blocks = np.unique(keys)
    rng = np.random.default_rng(seed)
    n_test = min(len(blocks) - 1, max(1, round(len(blocks) * test_fraction))) if len(blocks) else 0
    test_blocks = rng.choice(blocks, size=n_test, replace=False) if n_test > 0 else blocks[:0]
    test = np.isin(keys, test_blocks)
    test_cells = set(zip(r[test].tolist(), c[test].tolist(), strict=True))
    near = np.array(
        [
            any((ri + dr, ci + dc) in test_cells for dr in (-1, 0, 1) for dc in (-1, 0, 1))
            for ri, ci in zip(r.tolist(), c.tolist(), strict=True)
        ],
        dtype=bool,
    )
    train = ~test & ~near
    return train, test


# --- preprocessing of the embeddings a head reads -----------------------------------------
#: Reader settings a head tolerates changing: they put other imagery on the training scale
#: (a DN offset of processing baseline 04.00+, a missing L2A band filled with its training mean).
HARMONISING_SETTINGS = ("dn_offset", "fill")


def check_head_applies(
    head: LandCoverHead, preprocessing_hash: str, preprocessing: dict[str, Any] | None
) -> None:
    """Refuse to apply ``head`` to embeddings of another preprocessing than it was fitted on.

    Equal hashes pass. Otherwise, when both preprocessing descriptions are known (a head fitted
    since they are recorded keeps its own under ``training["preprocessing"]``), embeddings that
    differ only in :data:`HARMONISING_SETTINGS` pass too; anything else (bands, normalisation,
    chip, resampling, the model's weights) is refused. The weights are not compared for a head
    that reads band statistics only, nor for one fitted before they were recorded.

    Raises:
        HeadMismatchError: naming what differs and how to fit a head for these embeddings.
    """
    if head.preprocessing_hash == preprocessing_hash:
        return
    fitted = head.training.get("preprocessing")
    if isinstance(fitted, dict) and preprocessing is not None:
        compared = set(fitted) | set(preprocessing)
        if "weights" not in fitted or not head.uses_embedding:
            # Heads fitted before the weights were recorded, and heads that read band
            # statistics only, do not depend on which weights embedded the tiles.
            compared.discard("weights")
        keys = sorted(compared)
        differ = [k for k in keys if fitted.get(k) != preprocessing.get(k)]
        strict = [k for k in differ if k not in HARMONISING_SETTINGS]
        if not strict:
            return
        what = "; ".join(
            f"{k} {_short(fitted.get(k))} when fitted, {_short(preprocessing.get(k))} here"
            for k in strict
        )
    else:
        what = f"preprocessing {head.preprocessing_hash} when fitted, {preprocessing_hash} here"
    raise HeadMismatchError(
        f"Head {head.head_id} was fitted on {head.model_id} embeddings made another way ({what}), "
        "so its classes would be wrong here. Fit a head on these embeddings "
        "(softmap landcover fit …) or embed with the head's settings."
    )


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


# --- the stored head -----------------------------------------------------------------------
@dataclass(frozen=True)
class LandCoverHead:
    """A tile head (and optionally a token head) for one model, with provenance and metrics.

    Attributes:
        head_id: Unique id (``<model>@<mapping>`` for bundled heads).
        model_id: The model whose embeddings it reads.
        preprocessing_hash: The preprocessing of its training embeddings.
        mapping: The class mapping of its training labels.
        tile: The head on pooled/CLS embeddings.
        token: The head on patch tokens (ViTs), or None.
        token_grid: Tokens per tile side the token head was trained with.
        training: What it was trained on (sources, label raster, tile counts, settings, time).
        metrics: Held-out metrics, ``{"tile": …, "token": …}``.
        created_at: ISO timestamp.
        bundled: Whether it ships in ``assets/models/heads``.
        features: ``None`` (embedding only) or the spectral feature set appended to it
            (:data:`backend.landcover.spectral.FEATURE_SET`).
        water_rule: Whether the water rule decides the unambiguous water share of each cell
            (:func:`backend.landcover.spectral.apply_water_rule`).
        ood: Out-of-distribution scorers per level (``"tile"``, ``"token"``), if calibrated.
        uses_embedding: False for a head that reads the spectral features alone (the model then
            only fixes the tile grid and cells).
    """

    head_id: str
    model_id: str
    preprocessing_hash: str
    mapping: str
    tile: LinearSoftmax
    token: LinearSoftmax | None = None
    token_grid: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    bundled: bool = False
    features: str | None = None
    water_rule: bool = False
    ood: dict[str, OutOfDistribution] = field(default_factory=dict)
    uses_embedding: bool = True

    def info(self) -> dict[str, Any]:
        """JSON-ready metadata (no weights)."""
        return {
            "head_id": self.head_id,
            "model_id": self.model_id,
            "preprocessing_hash": self.preprocessing_hash,
            "mapping": self.mapping,
            "classes": list(DW_CLASSES),
            "dim": self.tile.dim,
            "token_head": self.token is not None,
            "token_grid": self.token_grid,
            "training": self.training,
            "metrics": self.metrics,
            "created_at": self.created_at,
            "bundled": self.bundled,
            "features": self.features,
            "water_rule": self.water_rule,
            "ood": {level: o.info() for level, o in self.ood.items()},
            "uses_embedding": self.uses_embedding,
        }

    def arrays_bytes(self) -> bytes:
        """The weights as an ``.npz`` blob."""
        arrays: dict[str, NDArray[np.float32]] = {}
        for prefix, lin in (("tile", self.tile), ("token", self.token)):
            if lin is not None:
                for name in ("weight", "bias", "mean", "std"):
                    arrays[f"{prefix}_{name}"] = getattr(lin, name)
        for level, scorer in self.ood.items():
            arrays.update(scorer.arrays(level))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_parts(cls, info: dict[str, Any], blob: bytes, *, bundled: bool) -> LandCoverHead:
        """Rebuild a head from :meth:`info` and :meth:`arrays_bytes`."""
        with np.load(io.BytesIO(blob)) as npz:
            lins = {
                prefix: LinearSoftmax(
                    *(npz[f"{prefix}_{n}"] for n in ("weight", "bias", "mean", "std"))
                )
                for prefix in ("tile", "token")
                if f"{prefix}_weight" in npz.files
            }
            ood_info = dict(info.get("ood") or {})
            arrays = {k: npz[k] for k in npz.files if "_ood_" in k}
            ood = {
                level: OutOfDistribution.from_arrays(arrays, level, ood_info[level])
                for level in ood_info
                if f"{level}_ood_mean" in arrays
            }
        return cls(
            head_id=info["head_id"],
            model_id=info["model_id"],
            preprocessing_hash=info["preprocessing_hash"],
            mapping=info["mapping"],
            tile=lins["tile"],
            token=lins.get("token"),
            token_grid=info.get("token_grid"),
            training=dict(info.get("training") or {}),
            metrics=dict(info.get("metrics") or {}),
            created_at=str(info.get("created_at", "")),
            bundled=bundled,
            features=info.get("features"),
            water_rule=bool(info.get("water_rule", False)),
            ood=ood,
            uses_embedding=bool(info.get("uses_embedding", True)),
        )

    def save_bundle(self, folder: Path) -> Path:
        """Write ``<folder>/<model>.json`` (metadata) and ``.npz`` (weights); returns the json."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = bundle_stem(self.model_id)
        info = {**self.info(), "bundled": True}
        (folder / f"{stem}.npz").write_bytes(self.arrays_bytes())
        path = folder / f"{stem}.json"
        path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        return path


def bundle_stem(model_id: str) -> str:
    """File stem of a model's bundled head (model ids may contain ``/``)."""
    return model_id.replace("/", "__")


def load_bundled(folder: Path) -> list[LandCoverHead]:
    """Every head bundled in ``folder`` (``*.json`` + ``*.npz`` pairs)."""
    heads: list[LandCoverHead] = []
    for meta in sorted(folder.glob("*.json")):
        blob = meta.with_suffix(".npz")
        if blob.exists():
            heads.append(
                LandCoverHead.from_parts(
                    json.loads(meta.read_text()), blob.read_bytes(), bundled=True
                )
            )
    return heads
