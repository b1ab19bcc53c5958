"""Fit a spectral land-cover head on the reference labels of several scenes (the bundled head).

For every scene: embed all tiles, read the patch tokens and the spectral features of tiles and
cells (:mod:`backend.landcover.features`), and pool the combined reference labels
(:mod:`backend.landcover.reference`) of the ``train`` and ``eval`` splits per tile and per cell.
The tile head reads ``[class token, tile spectra]``, the token head ``[patch token, cell
spectra]``; both are soft-label softmax heads (:func:`backend.landcover.heads.fit_linear_softmax`)
fitted on ``train`` rows only, with each class capped at :data:`CLASS_CAP` rows so the open sea
does not drown the rest. The water rule decides each cell's unambiguous water share at
prediction. Out-of-distribution limits are calibrated on the ``eval`` rows, which the heads never
saw. Metrics are computed on the ``eval`` rows (held out by spatial blocks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from backend.embedding.pipeline import embed_region
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource
from backend.landcover.features import OutOfDistribution, fit_ood, tile_spectra
from backend.landcover.heads import LandCoverHead, LinearSoftmax, evaluate, fit_linear_softmax
from backend.landcover.labels import DW_CLASSES, N_CLASSES, SoftLabels
from backend.landcover.maps import tile_tokens
from backend.landcover.reference import reference_soft_labels
from backend.landcover.spectral import FEATURE_SET, apply_water_rule
from backend.landcover.store import bundled_heads_dir, forget_predictions, now, save_head
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine, ProgressCallback
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache

#: Most training rows per dominant class (seeded random subset beyond it).
CLASS_CAP = 6000
#: Training rows of these classes are repeated this often (by dominant class): built cells are
#: a sixth as many as crops, and without it the head all but never paints a town.
CLASS_REPEAT: dict[int, int] = {DW_CLASSES.index("built"): 3}
#: Minimum labelled share of a tile or cell to train or evaluate on it.
MIN_LABELLED = 0.5
#: Mapping name recorded for heads fitted here.
REFERENCE_MAPPING = "reference"


@dataclass(frozen=True)
class SceneRows:
    """Head inputs and labels of one scene, per tile and per cell."""

    source_id: str
    preprocessing_hash: str
    preprocessing: dict[str, Any] | None
    tile_x: NDArray[np.float32]  # (n, d + F)
    tile_rules: NDArray[np.float32]  # (n, 3)
    tile_train: SoftLabels
    tile_eval: SoftLabels
    cell_x: NDArray[np.float32] | None  # (n·g², d + F)
    cell_rules: NDArray[np.float32] | None
    cell_train: SoftLabels | None
    cell_eval: SoftLabels | None


def _flat(labels: SoftLabels) -> SoftLabels:
    return SoftLabels(
        labels.fractions.reshape(-1, N_CLASSES),
        labels.labelled_fraction.reshape(-1),
        labels.multi_hot.reshape(-1, N_CLASSES),
        labels.has_label.reshape(-1),
    )


def scene_rows(
    source: SceneSource,
    engine: EmbeddingEngine,
    cache: EmbeddingCache,
    *,
    settings: Settings,
    tokens: bool = True,
    progress: ProgressCallback | None = None,
    embedding: bool = True,
) -> SceneRows:
    """Embed a whole scene and collect its head inputs and reference labels.

    With ``embedding=False`` the inputs are the spectral features alone (no tokens are read).
    """
    model = engine.model
    embedded = embed_region(
        Region(source.footprint_lonlat),
        source,
        model,
        cache,
        engine=engine,
        settings=settings,
        progress=progress,
    )
    ids = list(embedded.tile_ids)
    eset = cache.embedding_set(model.meta.id, embedded.preprocessing_hash)
    assert eset is not None
    got, emb = cache.embeddings(eset, ids)
    order = {t: i for i, t in enumerate(got)}
    emb = emb[[order[t] for t in ids]]
    grid = model.meta.token_grid if tokens else None
    spectra = tile_spectra(source, ids, grid)
    tile_x = (
        np.concatenate([emb, spectra.tile_features], axis=1) if embedding else spectra.tile_features
    )
    tile_train = reference_soft_labels(source, ids, split="train", min_labelled=MIN_LABELLED)
    tile_eval = reference_soft_labels(source, ids, split="eval", min_labelled=MIN_LABELLED)
    cell_x = cell_rules = None
    cell_train = cell_eval = None
    if grid and spectra.cell_features is not None and spectra.cell_rules is not None:
        tok = (
            tile_tokens(engine, source, ids)
            if embedding
            else np.zeros((len(ids), grid, grid, 0), np.float32)
        )  # (n, g, g, d)
        cell_x = np.concatenate([tok, spectra.cell_features], axis=-1).reshape(
            len(ids) * grid * grid, -1
        )
        cell_rules = spectra.cell_rules.reshape(-1, 3)
        cell_train = _flat(
            reference_soft_labels(source, ids, split="train", grid=grid, min_labelled=MIN_LABELLED)
        )
        cell_eval = _flat(
            reference_soft_labels(source, ids, split="eval", grid=grid, min_labelled=MIN_LABELLED)
        )
    return SceneRows(
        source.id,
        embedded.preprocessing_hash,
        cache.set_preprocessing(eset),
        tile_x.astype(np.float32),
        spectra.tile_rules,
        tile_train,
        tile_eval,
        cell_x,
        cell_rules,
        cell_train,
        cell_eval,
    )


def _cap(labels: SoftLabels, cap: int, seed: int) -> NDArray[np.int64]:
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(labels.has_label)
    dom = labels.fractions[idx].argmax(axis=1)
    keep: list[NDArray[np.int64]] = []
    for c in range(N_CLASSES):
        rows = idx[dom == c]
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        keep.extend([rows] * CLASS_REPEAT.get(c, 1))
    return np.sort(np.concatenate(keep))


def _stack(parts: Sequence[SoftLabels]) -> SoftLabels:
    return SoftLabels(
        np.concatenate([p.fractions for p in parts]),
        np.concatenate([p.labelled_fraction for p in parts]),
        np.concatenate([p.multi_hot for p in parts]),
        np.concatenate([p.has_label for p in parts]),
    )


def _fit_level(
    x: NDArray[np.float32],
    rules: NDArray[np.float32],
    train: SoftLabels,
    held: SoftLabels,
    *,
    water_rule: bool,
    seed: int,
) -> tuple[LinearSoftmax, dict[str, Any], OutOfDistribution]:
    rows = _cap(train, CLASS_CAP, seed)
    head = fit_linear_softmax(x[rows], train.fractions[rows], seed=seed)
    test = np.flatnonzero(held.has_label)
    p = head.predict(x[test])
    if water_rule:
        p = apply_water_rule(p, rules[test])
    prior = int(np.bincount(train.dominant[rows], minlength=N_CLASSES).argmax())
    metrics = evaluate(p, held.subset(test), n_train=len(rows), prior=prior).to_json()
    ood = fit_ood(x[np.unique(rows)], x[test], seed=seed)
    return head, metrics, ood


def _with_pixel_evaluation(
    head: LandCoverHead,
    sources: Sequence[SceneSource],
    model: EmbeddingModel,
    cache: EmbeddingCache,
    engine: EmbeddingEngine,
    settings: Settings,
) -> LandCoverHead:
    """The head with ``metrics["pixels"]``: its map's accuracy on the held-out polygons.

    The maps are predicted under a throw-away head id whose stored predictions are deleted
    afterwards, so nothing cached outlives a later refit of the same head id.
    """
    from dataclasses import replace

    from backend.landcover.evaluation import evaluate_landcover

    probe = replace(head, head_id=f"{head.head_id}#evaluation")
    try:
        ev = evaluate_landcover(sources, model, cache, head=probe, engine=engine, settings=settings)
    finally:
        forget_predictions(cache, probe.head_id)
    out = ev.to_json()
    out.pop("head", None)
    return replace(head, metrics={**head.metrics, "pixels": out})


@dataclass(frozen=True)
class ReferenceFit:
    head: LandCoverHead
    stored: str
    seconds: float
    scenes: tuple[str, ...]


def fit_reference_head(
    sources: Sequence[SceneSource],
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    tokens: bool = True,
    water_rule: bool = True,
    embedding: bool = True,
    bundle: bool = False,
    progress: ProgressCallback | None = None,
    seed: int = 0,
) -> ReferenceFit:
    """Fit, evaluate and store a spectral head on the reference labels of ``sources``.

    With ``embedding=False`` the heads read the spectral features alone (the shipped default
    head of ``softmap-default``: on the held-out polygons it beats embedding + spectra, see
    ``docs/landcover.md``); the model then fixes the tiles and cells only.
    """
    start = time.perf_counter()
    settings = settings or get_settings()
    engine = engine or EmbeddingEngine.from_settings(model, settings)
    scenes = [
        scene_rows(
            s,
            engine,
            cache,
            settings=settings,
            tokens=tokens,
            progress=progress,
            embedding=embedding,
        )
        for s in sources
    ]
    tile_head, tile_metrics, tile_ood = _fit_level(
        np.concatenate([s.tile_x for s in scenes]),
        np.concatenate([s.tile_rules for s in scenes]),
        _stack([s.tile_train for s in scenes]),
        _stack([s.tile_eval for s in scenes]),
        water_rule=water_rule,
        seed=seed,
    )
    metrics: dict[str, Any] = {"tile": tile_metrics}
    ood = {"tile": tile_ood}
    token_head = None
    grid = model.meta.token_grid if tokens else None
    if grid and all(s.cell_x is not None for s in scenes):
        token_head, metrics["token"], ood["token"] = _fit_level(
            np.concatenate([s.cell_x for s in scenes if s.cell_x is not None]),
            np.concatenate([s.cell_rules for s in scenes if s.cell_rules is not None]),
            _stack([s.cell_train for s in scenes if s.cell_train is not None]),
            _stack([s.cell_eval for s in scenes if s.cell_eval is not None]),
            water_rule=water_rule,
            seed=seed,
        )
    created = now()
    head_id = (
        f"{model.meta.id}@{REFERENCE_MAPPING}"
        if bundle
        else f"{model.meta.id}@{REFERENCE_MAPPING}-{created:%Y%m%d-%H%M%S}"
    )
    training = {
        "sources": [s.id for s in sources],
        "labels": "reference (spectral rules > reference polygons > snow rule > land-use raster)",
        "mapping": REFERENCE_MAPPING,
        "split": "2.56 km blocks, a third held out (eval polygons), 100 m buffer",
        "tiles": {s.source_id: len(s.tile_x) for s in scenes},
        "labelled_tiles": int(sum(int(s.tile_train.has_label.sum()) for s in scenes)),
        "labelled_tokens": int(
            sum(int(s.cell_train.has_label.sum()) for s in scenes if s.cell_train is not None)
        ),
        "min_labelled_fraction": MIN_LABELLED,
        "class_cap": CLASS_CAP,
        "class_repeat": {DW_CLASSES[c]: k for c, k in CLASS_REPEAT.items()},
        "features": f"embedding + {FEATURE_SET}" if embedding else f"{FEATURE_SET} only",
        "water_rule": water_rule,
        "loss": "soft cross-entropy (≡ KL to the class fractions), L2 1e-2, L-BFGS",
        "seed": seed,
        "preprocessing": scenes[0].preprocessing,  # what check_head_applies compares
    }
    head = LandCoverHead(
        head_id=head_id,
        model_id=model.meta.id,
        preprocessing_hash=scenes[0].preprocessing_hash,
        mapping=REFERENCE_MAPPING,
        tile=tile_head,
        token=token_head,
        token_grid=grid if token_head is not None else None,
        training=training,
        metrics=metrics,
        created_at=created.isoformat(timespec="seconds"),
        bundled=bundle,
        features=FEATURE_SET,
        water_rule=water_rule,
        ood=ood,
        uses_embedding=embedding,
    )
    head = _with_pixel_evaluation(head, sources, model, cache, engine, settings)
    if bundle:
        stored = str(head.save_bundle(bundled_heads_dir(settings)))
        # Maps stored under this id came from the head just replaced.
        forget_predictions(cache, head.head_id)
    else:
        save_head(cache, head)
        stored = "cache"
    return ReferenceFit(head, stored, time.perf_counter() - start, tuple(s.id for s in sources))
