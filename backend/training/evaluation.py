"""Evaluation that tells the truth: linear probes on frozen embeddings, split by space.

Tiles of a labelled scene are split by blocks (``block × block`` tiles): the test tiles are the
blocks a model's pretraining held out (:data:`backend.training.config.DEFAULT_HOLDOUT`), and train
tiles that touch a test tile (8-neighbourhood, ``buffer`` tiles) are dropped, so no pair of
neighbouring, spatially correlated tiles sits on both sides. On the train tiles a one-vs-rest
logistic regression per Dynamic World class (multi-label) is fitted to each model's frozen class
token, its ``C`` picked by block-grouped cross-validation; on the test tiles we report multi-label
mean average precision and top-1 accuracy of the dominant class. The no-model baseline is the
per-band mean and standard deviation of the normalised chip, and the class prior is the floor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from backend.imagery.normalization import Normalization, neutral_value
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SceneSource
from backend.landcover.labels import DW_CLASSES, tile_soft_labels
from backend.models.api import EmbeddingModel
from backend.training.config import HoldOut

#: Regularisation strengths tried by the grouped cross-validation inside the train tiles.
C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class BlockSplit:
    """A spatially blocked split of a ``rows × cols`` tile grid (boolean masks, row-major).

    Attributes:
        train: Tiles to fit on.
        test: Tiles to score on.
        dropped: Tiles left out because they touch a test tile.
        block_id: ``[rows·cols]`` index of each tile's block (CV groups).
    """

    rows: int
    cols: int
    train: NDArray[np.bool_]
    test: NDArray[np.bool_]
    dropped: NDArray[np.bool_]
    block_id: NDArray[np.int64]


def blocked_split(
    rows: int,
    cols: int,
    test_blocks: Iterable[tuple[int, int]],
    *,
    block: int = 4,
    buffer: int = 1,
) -> BlockSplit:
    """Split a tile grid by blocks; drop train tiles within ``buffer`` tiles of a test tile.

    Args:
        rows: Tile rows of the grid.
        cols: Tile columns.
        test_blocks: ``(block_row, block_col)`` of the test blocks.
        block: Block edge in tiles.
        buffer: Chebyshev distance (in tiles) a train tile must exceed to any test tile; 1
            means no train tile shares an edge or a corner with a test tile.
    """
    r, c = np.divmod(np.arange(rows * cols), cols)
    br, bc = r // block, c // block
    wanted = set(test_blocks)
    test = np.array([(a, b) in wanted for a, b in zip(br, bc, strict=True)], dtype=bool)
    grid = test.reshape(rows, cols)
    near = np.zeros_like(grid)
    for dr in range(-buffer, buffer + 1):
        for dc in range(-buffer, buffer + 1):
            shifted = np.zeros_like(grid)
            rs = slice(max(dr, 0), rows + min(dr, 0))
            rd = slice(max(-dr, 0), rows + min(-dr, 0))
            cs = slice(max(dc, 0), cols + min(dc, 0))
            cd = slice(max(-dc, 0), cols + min(-dc, 0))
            shifted[rd, cd] = grid[rs, cs]
            near |= shifted
    dropped = near.ravel() & ~test
    train = ~test & ~dropped
    block_id = (br * (-(-cols // block)) + bc).astype(np.int64)
    return BlockSplit(rows, cols, train, test, dropped, block_id)


def min_tile_distance(split: BlockSplit) -> int:
    """Smallest Chebyshev distance (tiles) between a train and a test tile (large if none)."""
    r, c = np.divmod(np.arange(split.rows * split.cols), split.cols)
    tr = np.flatnonzero(split.train)
    te = np.flatnonzero(split.test)
    if not len(tr) or not len(te):
        return split.rows + split.cols
    d = np.maximum(np.abs(r[tr, None] - r[None, te]), np.abs(c[tr, None] - c[None, te]))
    return int(d.min())


def read_tiles(
    source: SceneSource, chip: int, bands: Sequence[str], norm: Normalization
) -> tuple[list[PixelWindow], torch.Tensor, int, int]:
    """Every whole ``chip``-px tile of a scene, normalised: windows, chips, rows, cols."""
    rows, cols = source.grid.height // chip, source.grid.width // chip
    full = PixelWindow(0, 0, cols * chip, rows * chip)
    fill = {b: neutral_value(norm, i) for i, b in enumerate(bands) if b == "B10"}
    with SceneReader(source) as reader:
        raw = reader.read(full, bands, fill=fill)
    x = norm.apply(torch.from_numpy(raw))
    tiles = x.reshape(len(bands), rows, chip, cols, chip).permute(1, 3, 0, 2, 4)
    windows = [
        PixelWindow(cc * chip, rr * chip, chip, chip) for rr in range(rows) for cc in range(cols)
    ]
    return windows, tiles.reshape(rows * cols, len(bands), chip, chip).contiguous(), rows, cols


def band_statistics(images: torch.Tensor) -> NDArray[np.float32]:
    """The no-model baseline: per-band mean and standard deviation of each chip ``[N, 2C]``."""
    flat = images.flatten(2).float()
    out: NDArray[np.float32] = torch.cat([flat.mean(2), flat.std(2)], dim=1).numpy()
    return out


def embed_images(
    model: EmbeddingModel, images: torch.Tensor, batch: int = 64
) -> NDArray[np.float32]:
    """Frozen class-token (or pooled) embeddings of normalised chips at the model's chip size."""
    size = model.meta.chip_size
    parts = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        parts.append(model.embed(x)[0].float().cpu())
    out: NDArray[np.float32] = torch.cat(parts).numpy()
    return out


@dataclass(frozen=True)
class ProbeResult:
    """Held-out scores of one feature set; ``map_ci`` is a bootstrap 95 % interval over tiles."""

    name: str
    description: str
    dim: int
    map: float
    top1: float
    ap: dict[str, float]
    c: float | None
    map_ci: tuple[float, float] = (float("nan"), float("nan"))


def _average_precision(y: NDArray[np.bool_], score: NDArray[np.float64]) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, score))


def _fit_predict(
    x_tr: NDArray[np.float64], y_tr: NDArray[np.bool_], x_te: NDArray[np.float64], c: float
) -> NDArray[np.float64]:
    from sklearn.linear_model import LogisticRegression

    scores = np.zeros((len(x_te), y_tr.shape[1]))
    for k in range(y_tr.shape[1]):
        if y_tr[:, k].all() or not y_tr[:, k].any():
            scores[:, k] = float(y_tr[:, k].mean())
            continue
        clf = LogisticRegression(C=c, max_iter=2000)
        clf.fit(x_tr, y_tr[:, k])
        scores[:, k] = clf.predict_proba(x_te)[:, 1]
    return scores


def _map(y: NDArray[np.bool_], scores: NDArray[np.float64]) -> tuple[float, dict[str, float]]:
    ap = {
        DW_CLASSES[k]: _average_precision(y[:, k], scores[:, k])
        for k in range(y.shape[1])
        if y[:, k].any()
    }
    return (float(np.mean(list(ap.values()))) if ap else float("nan")), ap


def _choose_c(
    x: NDArray[np.float64],
    y: NDArray[np.bool_],
    groups: NDArray[np.int64],
    grid: Sequence[float],
) -> float:
    from sklearn.model_selection import GroupKFold

    folds = min(4, len(np.unique(groups)))
    if len(grid) == 1 or folds < 2:
        return grid[0] if len(grid) == 1 else 1.0
    best, best_c = -1.0, 1.0
    for c in grid:
        scores = []
        for tr, va in GroupKFold(n_splits=folds).split(x, y, groups):
            mean, std = x[tr].mean(0), x[tr].std(0) + 1e-6
            pred = _fit_predict((x[tr] - mean) / std, y[tr], (x[va] - mean) / std, c)
            m, _ = _map(y[va], pred)
            if not np.isnan(m):
                scores.append(m)
        if scores and float(np.mean(scores)) > best:
            best, best_c = float(np.mean(scores)), c
    return best_c


def linear_probe(
    name: str,
    description: str,
    features: NDArray[np.floating],
    multi_hot: NDArray[np.bool_],
    dominant: NDArray[np.integer],
    train: NDArray[np.bool_],
    test: NDArray[np.bool_],
    groups: NDArray[np.int64],
    c_grid: Sequence[float] = C_GRID,
) -> ProbeResult:
    """Fit a one-vs-rest logistic probe on ``train`` rows and score the ``test`` rows.

    Args:
        name: Short id of the feature set.
        description: What the features are.
        features: ``[N, D]`` per tile.
        multi_hot: ``[N, 9]`` classes present (multi-label targets).
        dominant: ``[N]`` the largest class of each tile.
        train: Rows to fit on.
        test: Rows to score.
        groups: Block of each row (for the cross-validation that picks ``C``).
        c_grid: Inverse regularisation strengths to choose from (one value: no search).
    """
    x = features.astype(np.float64)
    c = _choose_c(x[train], multi_hot[train], groups[train], c_grid)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    scores = _fit_predict((x[train] - mean) / std, multi_hot[train], (x[test] - mean) / std, c)
    m, ap = _map(multi_hot[test], scores)
    top1 = float((scores.argmax(1) == dominant[test]).mean())
    ci = bootstrap_map(multi_hot[test], scores)
    return ProbeResult(name, description, x.shape[1], m, top1, ap, c, ci)


def bootstrap_map(
    y: NDArray[np.bool_], scores: NDArray[np.float64], n: int = 300, seed: int = 0
) -> tuple[float, float]:
    """A percentile bootstrap 95 % interval of mAP, resampling test tiles (fixed seed)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        m, _ = _map(y[idx], scores[idx])
        if not np.isnan(m):
            values.append(m)
    if not values:
        return (float("nan"), float("nan"))
    low, high = np.percentile(values, [2.5, 97.5])
    return (round(float(low), 4), round(float(high), 4))


def prior_result(
    multi_hot: NDArray[np.bool_],
    dominant: NDArray[np.integer],
    train: NDArray[np.bool_],
    test: NDArray[np.bool_],
) -> ProbeResult:
    """The floor: every test tile scored with the train tiles' class frequencies."""
    freq = multi_hot[train].mean(0).astype(np.float64)
    rng = np.random.default_rng(0)
    # Constant scores make AP equal to the positive rate; a tiny jitter breaks ties fairly.
    scores = np.tile(freq, (int(test.sum()), 1)) + rng.uniform(0, 1e-9, (int(test.sum()), 9))
    m, ap = _map(multi_hot[test], scores)
    top1 = float((np.full(int(test.sum()), freq.argmax()) == dominant[test]).mean())
    ci = bootstrap_map(multi_hot[test], scores)
    return ProbeResult(
        "prior", "class frequencies of the train tiles (no image)", 0, m, top1, ap, None, ci
    )


@dataclass(frozen=True)
class EvaluationReport:
    """A comparison of feature sets on one spatially blocked split."""

    source: str
    mapping: str
    chip: int
    holdout_blocks: list[tuple[int, int]]
    tiles: int
    labelled: int
    train_tiles: int
    test_tiles: int
    min_train_test_distance: int
    results: list[ProbeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Header and rows for a terminal or Markdown table."""
        header = ["FEATURES", "DIM", "mAP", "mAP 95% CI", "TOP-1", "C", "WHAT"]
        rows = [
            [
                r.name,
                str(r.dim),
                f"{r.map:.3f}",
                f"{r.map_ci[0]:.3f}-{r.map_ci[1]:.3f}",
                f"{r.top1:.3f}",
                "-" if r.c is None else f"{r.c:g}",
                r.description,
            ]
            for r in self.results
        ]
        return header, rows


@dataclass(frozen=True)
class Candidate:
    """A feature set to compare: a model's frozen embeddings, or the band-statistics baseline."""

    name: str
    description: str
    model: EmbeddingModel | None = None


def evaluate(
    source: SceneSource,
    candidates: Sequence[Candidate],
    holdout: HoldOut,
    *,
    mapping: str = "osm-brandenburg",
    norm: Normalization | None = None,
    bands: Sequence[str] | None = None,
    buffer: int = 1,
    c_grid: Sequence[float] = C_GRID,
) -> EvaluationReport:
    """Probe every candidate on the labelled tiles of ``source``, test = the held-out blocks.

    Args:
        source: A scene with a label layer.
        candidates: Models (frozen) and/or the band-statistics baseline (``model=None``).
        holdout: The blocks held out of pretraining; its ``chip`` sets the tile grid.
        mapping: Class mapping of the label layer.
        norm: Normalisation of the chips (default: the first model's, else SSL4EO L1C).
        bands: Bands read (default: the first model's, else the 13 L1C bands).
        buffer: Train tiles within this many tiles of a test tile are dropped.
        c_grid: Probe regularisation strengths searched by block-grouped CV (one: no search).

    Raises:
        SoftMapError: the scene or its labels cannot be read.
    """
    first = next((c.model for c in candidates if c.model is not None), None)
    if norm is None or bands is None:
        from backend.models.registry import get_model_meta

        meta = first.meta if first is not None else get_model_meta("softmap-default")
        norm = norm or meta.normalization
        bands = bands or meta.bands
    windows, images, rows, cols = read_tiles(source, holdout.chip, bands, norm)
    labels = tile_soft_labels(source, windows, mapping)
    split = blocked_split(rows, cols, holdout.blocks, block=holdout.block, buffer=buffer)
    has = labels.has_label
    train, test = split.train & has, split.test & has
    multi = labels.multi_hot
    dominant = labels.dominant
    results = [prior_result(multi, dominant, train, test)]
    for cand in candidates:
        feats = band_statistics(images) if cand.model is None else embed_images(cand.model, images)
        results.append(
            linear_probe(
                cand.name,
                cand.description,
                feats,
                multi,
                dominant,
                train,
                test,
                split.block_id,
                c_grid,
            )
        )
    return EvaluationReport(
        source=source.id,
        mapping=mapping,
        chip=holdout.chip,
        holdout_blocks=list(holdout.blocks),
        tiles=rows * cols,
        labelled=int(has.sum()),
        train_tiles=int(train.sum()),
        test_tiles=int(test.sum()),
        min_train_test_distance=min_tile_distance(split),
        results=results,
    )
