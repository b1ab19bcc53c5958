"""Soft-label land-cover maps: fit heads, predict per tile (and per token), areas, rasters.

``fit_head`` embeds a scene's labelled tiles, trains a tile head (and a token head for ViTs) on
their soft labels (``backend.landcover.labels``), evaluates it on a spatially blocked held-out
split, then
refits on every labelled tile and stores it in DuckDB (``landcover_heads``) or, with ``bundle``,
under ``assets/models/heads/``. ``predict_landcover`` embeds what a region lacks, predicts class
probabilities per tile (kept in ``landcover_predictions``, keyed by tile, model and head, and
reused), optionally per patch token (``landcover_token_predictions``), and computes the expected
area of each class with a 95 % range (``backend.landcover.areas``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from shapely.geometry import shape

from backend.embedding.pipeline import EmbedResult, band_fill, embed_region
from backend.errors import (
    NotEnoughLabelsError,
    SoftMapError,
    UnknownHeadError,
    UnknownMappingError,
)
from backend.imagery.rasters import GridRaster, tiles_to_grid, write_cog
from backend.imagery.reader import SceneReader
from backend.imagery.regions import Region
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import tile_from_id
from backend.landcover.areas import ClassArea, MapAreas, map_areas, tile_areas_km2
from backend.landcover.features import tile_spectra
from backend.landcover.heads import (
    LandCoverHead,
    LinearSoftmax,
    check_head_applies,
    evaluate,
    fit_linear_softmax,
    spatial_split,
)
from backend.landcover.labels import (
    DW_CLASSES,
    DW_PALETTE,
    DW_TITLES,
    MAPPINGS,
    MIN_LABELLED_FRACTION,
    N_CLASSES,
    ClassMapping,
    LabelRaster,
    SoftLabels,
    get_mapping,
    scene_label_raster,
    tile_soft_labels,
)
from backend.landcover.spectral import FEATURE_COLUMNS, apply_water_rule
from backend.landcover.store import (
    StoredPredictions,
    bundled_heads_dir,
    ensure_tables,
    forget_stale_predictions,
    list_heads,
    now,
    resolve_head,
    save_head,
    stored_ood,
    stored_predictions,
    stored_token_predictions,
    write_ood,
    write_predictions,
)
from backend.models import EmbeddingModel
from backend.models.inference import EmbeddingEngine, ProgressCallback
from backend.settings import Settings, get_settings
from backend.store.cache import EmbeddingCache

#: Fewest labelled tiles a head is fitted on.
MIN_TRAINING_TILES = 12
#: Band names of :meth:`LandCoverResult.write_cog`, after the nine probabilities.
EXTRA_BANDS = ("dominant", "confidence", "entropy", "unlike_score")
#: The value of the ``dominant`` band (and of the legend) where a cell is unlike the training
#: data: the map shows no class there.
UNLIKE_VALUE = N_CLASSES
UNLIKE_TITLE = "Unlike the training data"


# --- fitting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitResult:
    """What ``fit_head`` produced."""

    head: LandCoverHead
    embed: EmbedResult
    stored: str  # "cache" or the bundled json path
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            **self.head.info(),
            "stored": self.stored,
            "seconds": round(self.seconds, 2),
            "tiles_embedded": self.embed.computed,
        }


def _flatten(labels: SoftLabels) -> SoftLabels:
    """Per-cell soft labels ``(n, cells, …)`` as rows ``(n · cells, …)``."""
    return SoftLabels(
        labels.fractions.reshape(-1, N_CLASSES),
        labels.labelled_fraction.reshape(-1),
        labels.multi_hot.reshape(-1, N_CLASSES),
        labels.has_label.reshape(-1),
    )


def tile_tokens(
    engine: EmbeddingEngine, source: SceneSource, tile_ids: Sequence[str]
) -> NDArray[np.float32]:
    """Patch tokens ``(n, g, g, d)`` of tiles (tokens are not cached, so the model runs)."""
    model = engine.model
    fill = band_fill(model) if source.product_level == "L2A" else {}
    out: list[NDArray[np.float32]] = []
    with SceneReader(source) as reader:
        for i in range(0, len(tile_ids), engine.batch_size):
            ids = tile_ids[i : i + engine.batch_size]
            raw = np.stack(
                [reader.read(tile_from_id(t, source)[4], model.meta.bands, fill=fill) for t in ids]
            )
            _, tokens = engine.forward(torch.from_numpy(raw), return_tokens=True)
            if tokens is None:
                raise SoftMapError(f"{model.meta.id} has no patch tokens.", title="No tokens")
            out.append(tokens)
    return np.concatenate(out)


def fit_head(
    source: SceneSource,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    region: Region | None = None,
    labels: LabelRaster | None = None,
    mapping: ClassMapping | str | None = None,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    tokens: bool = True,
    min_labelled: float = MIN_LABELLED_FRACTION,
    bundle: bool = False,
    progress: ProgressCallback | None = None,
    seed: int = 0,
) -> FitResult:
    """Fit, evaluate and store a land-cover head for ``model`` on a source's labels.

    Args:
        source: The scene whose tiles are embedded and labelled.
        model: The model; its embeddings are computed where the cache lacks them.
        cache: The embedding cache (also stores the head unless ``bundle``).
        region: Where to take tiles from (default: the whole scene).
        labels: A user raster (:func:`backend.landcover.labels.user_label_raster`); default: the
        scene's.
        mapping: Class mapping (required with a user raster; default: the layer's own).
        engine: Reused engine (default: from settings).
        settings: Settings (area limit, assets folder).
        tokens: Also fit the token head (ViTs only).
        min_labelled: Minimum labelled fraction of a tile (or token) to train on it.
        bundle: Write the head to ``assets/models/heads/`` instead of the cache.
        progress: Embedding progress callback.
        seed: Seed of the split and the fit.

    Raises:
        NotEnoughLabelsError: fewer than :data:`MIN_TRAINING_TILES` labelled tiles.
        UnknownMappingError: an unknown mapping, or none for a user raster.
    """
    start = time.perf_counter()
    settings = settings or get_settings()
    raster = labels or scene_label_raster(source)
    if mapping is None and raster.mapping is None:
        raise UnknownMappingError(
            f"{raster.name} names no class mapping: pass --mapping with one of "
            f"{', '.join(MAPPINGS)}."
        )
    cmap = get_mapping(mapping if mapping is not None else str(raster.mapping))
    region = region or Region(source.footprint_lonlat)
    engine = engine or EmbeddingEngine.from_settings(model, settings)
    embedded = embed_region(
        region, source, model, cache, engine=engine, settings=settings, progress=progress
    )
    ids = list(embedded.tile_ids)
    soft = tile_soft_labels(source, ids, cmap, layer=raster, min_labelled=min_labelled)
    lab_ids = [t for t, ok in zip(ids, soft.has_label, strict=True) if ok]
    if len(lab_ids) < MIN_TRAINING_TILES:
        raise NotEnoughLabelsError(
            f"Only {len(lab_ids)} of {len(ids)} tiles have at least {min_labelled:.0%} labelled "
            f"pixels in {raster.name}; a head needs {MIN_TRAINING_TILES}. Choose a larger region "
            "or a raster with more labels."
        )
    labelled = soft.subset(soft.has_label)
    eset = cache.embedding_set(model.meta.id, embedded.preprocessing_hash)
    assert eset is not None
    got_ids, x = cache.embeddings(eset, lab_ids)
    order = {t: i for i, t in enumerate(got_ids)}
    x = x[[order[t] for t in lab_ids]]
    # One split of all the region's tiles serves both heads, so their metrics are comparable.
    rows = np.array([tile_from_id(t, source)[2] for t in ids])
    cols = np.array([tile_from_id(t, source)[3] for t in ids])
    train_all, test_all = spatial_split(rows, cols, seed=seed)
    train, test = train_all[soft.has_label], test_all[soft.has_label]

    def fit_eval(
        feats: NDArray[np.float32], y: SoftLabels, tr: NDArray[np.bool_], te: NDArray[np.bool_]
    ) -> dict[str, Any]:
        held = fit_linear_softmax(feats[tr], y.fractions[tr], seed=seed)
        prior = int(np.bincount(y.dominant[tr], minlength=N_CLASSES).argmax())
        scores = evaluate(held.predict(feats[te]), y.subset(te), n_train=int(tr.sum()), prior=prior)
        return scores.to_json()

    metrics: dict[str, Any] = {"tile": fit_eval(x, labelled, train, test)}
    tile_head = fit_linear_softmax(x, labelled.fractions, seed=seed)
    token_head: LinearSoftmax | None = None
    grid = model.meta.token_grid if tokens else None
    n_tokens = 0
    if grid:
        # Tokens of every tile: a tile with few labels still has labelled tokens.
        tsoft = tile_soft_labels(
            source, ids, cmap, layer=raster, grid=grid, min_labelled=min_labelled
        )
        with_tokens = [
            t
            for t, ok in zip(ids, np.asarray(tsoft.has_label.any(axis=1)).tolist(), strict=True)
            if ok
        ]
        keep = np.isin(ids, with_tokens)
        tok = tile_tokens(engine, source, with_tokens)  # (n, g, g, d)
        feats = tok.reshape(len(with_tokens) * grid * grid, -1)
        flat = _flatten(tsoft.subset(keep))
        per_tile = np.repeat(np.arange(len(with_tokens)), grid * grid)
        ok = flat.has_label
        n_tokens = int(ok.sum())
        metrics["token"] = fit_eval(
            feats[ok],
            flat.subset(ok),
            train_all[keep][per_tile][ok],
            test_all[keep][per_tile][ok],
        )
        token_head = fit_linear_softmax(feats[ok], flat.fractions[ok], seed=seed)
    created = now()
    head_id = (
        f"{model.meta.id}@{cmap.name}"
        if bundle
        else f"{model.meta.id}@{cmap.name}-{created:%Y%m%d}-{uuid.uuid4().hex[:6]}"
    )
    training = {
        "source": source.id,
        "labels": raster.name,
        "mapping": cmap.name,
        "region": region.describe(),
        "tiles": len(ids),
        "labelled_tiles": len(lab_ids),
        "labelled_tokens": n_tokens,
        "min_labelled_fraction": min_labelled,
        "chip": int(tile_from_id(ids[0], source)[0]),
        "loss": "soft cross-entropy (≡ KL to the class fractions), L2 1e-2, L-BFGS",
        "split": "3×3-tile spatial blocks, 30 % held out, 1-tile buffer; final fit on all",
        "seed": seed,
        "preprocessing": cache.set_preprocessing(eset),  # what check_head_applies compares
    }
    head = LandCoverHead(
        head_id=head_id,
        model_id=model.meta.id,
        preprocessing_hash=embedded.preprocessing_hash,
        mapping=cmap.name,
        tile=tile_head,
        token=token_head,
        token_grid=grid if token_head is not None else None,
        training=training,
        metrics=metrics,
        created_at=created.isoformat(timespec="seconds"),
        bundled=bundle,
    )
    if bundle:
        stored = str(head.save_bundle(bundled_heads_dir(settings)))
    else:
        save_head(cache, head)
        stored = "cache"
    return FitResult(head, embedded, stored, time.perf_counter() - start)


# --- prediction --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LandCoverResult:
    """Land cover of a region: per-tile (and per-token) probabilities, areas, rasters.

    Attributes:
        source: The scene.
        head: The head's metadata (``LandCoverHead.info()``).
        tile_ids: Tiles of the region (stride = chip), in embedding order.
        probabilities: ``(n, 9)`` per-tile class probabilities (rows sum to 1).
        token_probabilities: ``(n, 9, g, g)`` per-token probabilities, or None.
        areas: Per DW class, over the region, of what the map shows (sub-tile cells when there
            are any): ``map_km2`` and ``share`` are the area the map paints in the class,
            ``expected_km2`` with its 95 % range the probability-weighted area
            (:func:`backend.landcover.areas.map_areas`).
        region_km2: Area of the mapped tiles inside the region.
        embed: The embedding run that preceded prediction.
        predicted: Tiles whose probabilities were computed now (the rest were stored).
        ood: ``(n,)`` tile out-of-distribution scores (> 1: unlike the training data), or None.
        token_ood: ``(n, g, g)`` cell scores, or None.
        unlike_km2: Area shown as unlike the training data (counted in no class).
    """

    source: SceneSource
    head: dict[str, Any]
    tile_ids: tuple[str, ...]
    probabilities: NDArray[np.float32]
    token_probabilities: NDArray[np.float32] | None
    areas: list[ClassArea]
    region_km2: float
    embed: EmbedResult
    predicted: int
    ood: NDArray[np.float32] | None = None
    token_ood: NDArray[np.float32] | None = None
    unlike_km2: float = 0.0

    @property
    def cells(self) -> bool:
        """Whether the map (and so the areas) is made of sub-tile cells."""
        return self.token_probabilities is not None

    @property
    def unlike_share(self) -> float:
        return self.unlike_km2 / self.region_km2 if self.region_km2 > 0 else 0.0

    def probability_raster(self, *, tokens: bool = True) -> GridRaster:
        """The nine probability bands on the source grid (token cells where available)."""
        values = (
            self.token_probabilities
            if tokens and self.token_probabilities is not None
            else self.probabilities
        )
        return tiles_to_grid(self.source, self.tile_ids, values)

    def ood_raster(self, *, tokens: bool = True) -> GridRaster | None:
        """The out-of-distribution score on the same grid as :meth:`probability_raster`."""
        use_tokens = tokens and self.token_probabilities is not None
        if use_tokens and self.token_ood is not None:
            return tiles_to_grid(self.source, self.tile_ids, self.token_ood[:, None])
        if not use_tokens and self.ood is not None:
            return tiles_to_grid(self.source, self.tile_ids, self.ood[:, None])
        return None

    def layers(self, *, tokens: bool = True) -> GridRaster:
        """Probabilities, dominant class (9 = unlike the training data), confidence, entropy
        (nats) and the out-of-distribution score (NaN without one): 13 bands."""
        probs = self.probability_raster(tokens=tokens)
        summary = summary_layers(probs.data)
        ood = self.ood_raster(tokens=tokens)
        score = (
            ood.data[0] if ood is not None else np.full(probs.data.shape[1:], np.nan, np.float32)
        )
        summary[0] = np.where(np.isfinite(score) & (score > 1.0), UNLIKE_VALUE, summary[0])
        return GridRaster(
            np.concatenate([probs.data, summary, score[None]]), probs.transform, probs.crs
        )

    def write_cog(self, path: str | Path, *, tokens: bool = True) -> Path:
        """Write the 13 bands as a COG with band descriptions and the DW legend in the tags."""
        grid = self.layers(tokens=tokens)
        names = [f"p_{c}" for c in DW_CLASSES] + list(EXTRA_BANDS)
        legend = {str(i): DW_TITLES[i] for i in range(N_CLASSES)}
        legend[str(UNLIKE_VALUE)] = UNLIKE_TITLE
        band_tags = [
            {"class_id": str(i), "class": DW_CLASSES[i], "color": f"#{DW_PALETTE[i]}"}
            for i in range(N_CLASSES)
        ]
        band_tags += [
            {"legend": json.dumps(legend)},
            {"description": "top-1 probability"},
            {"description": "Shannon entropy in nats (max ln 9 = 2.197)"},
            {"description": "distance to the training data / calibrated limit (> 1: unlike)"},
        ]
        tags = {
            "SOFTMAP_PRODUCT": "land cover (Dynamic World classes)",
            "SOURCE": self.source.id,
            "MODEL": str(self.head["model_id"]),
            "HEAD": str(self.head["head_id"]),
            "CLASSES": json.dumps(list(DW_CLASSES)),
            "LEGEND": json.dumps(legend),
            "PALETTE": json.dumps([f"#{c}" for c in DW_PALETTE]),
            "CELL_SIZE_M": str(grid.cell_size_m),
            "UNLIKE_VALUE": str(UNLIKE_VALUE),
        }
        return write_cog(
            path,
            grid.data,
            transform=grid.transform,
            crs=grid.crs,
            band_names=names,
            tags=tags,
            band_tags=band_tags,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source.id,
            "model": self.head["model_id"],
            "head": {
                k: self.head.get(k)
                for k in ("head_id", "mapping", "bundled", "token_head", "metrics", "features")
            },
            "tiles": len(self.tile_ids),
            "embedded": self.embed.computed,
            "predicted": self.predicted,
            "token_grid": (
                int(self.token_probabilities.shape[-1])
                if self.token_probabilities is not None
                else None
            ),
            "region_km2": round(self.region_km2, 4),
            "areas_from": "sub-tile cells" if self.cells else "tiles",
            "areas": [
                {
                    "class": a.name,
                    "map_km2": round(a.map_km2 or 0.0, 4),
                    "share": round(a.share, 4),
                    "expected_km2": round(a.expected_km2, 4),
                    "low_km2": round(a.low_km2, 4),
                    "high_km2": round(a.high_km2, 4),
                    "cells_dominant": a.tiles_dominant,
                }
                for a in self.areas
            ],
            "unlike_training_data": {
                "km2": round(self.unlike_km2, 4),
                "share": round(self.unlike_share, 4),
            },
        }


def summary_layers(probs: NDArray[np.float32]) -> NDArray[np.float32]:
    """Dominant class, confidence and entropy ``(3, h, w)`` of ``(9, h, w)`` probabilities."""
    valid = np.isfinite(probs).all(axis=0)
    p = np.where(valid, probs, 0).astype(np.float64)
    dominant = np.where(valid, p.argmax(axis=0), np.nan)
    confidence = np.where(valid, p.max(axis=0), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    entropy = np.where(valid, ent, np.nan)
    return np.stack([dominant, confidence, entropy]).astype(np.float32)


def head_inputs(
    head: LandCoverHead, x: NDArray[np.float32], spectra: NDArray[np.float32] | None
) -> NDArray[np.float32]:
    """What a head reads: the embedding, plus the spectral features for spectral heads."""
    if head.features is None:
        return x
    if spectra is None:
        raise SoftMapError(f"Head {head.head_id} needs spectral features.", title="Head input")
    spectra = spectra[..., : FEATURE_COLUMNS.get(head.features, spectra.shape[-1])]
    if not head.uses_embedding:
        return np.asarray(spectra, dtype=np.float32)
    return np.concatenate([x, spectra], axis=-1).astype(np.float32)


def _predict_tiles(
    head: LandCoverHead, source: SceneSource, ids: Sequence[str], x: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    spectral = head.features is not None or head.water_rule
    spectra = tile_spectra(source, ids) if spectral else None
    xin = head_inputs(head, x, spectra.tile_features if spectra else None)
    probs = head.tile.predict(xin)
    if head.water_rule and spectra is not None:
        probs = apply_water_rule(probs, spectra.tile_rules)
    ood = head.ood["tile"].score(xin) if "tile" in head.ood else None
    return probs, ood


def _predict_cells(
    head: LandCoverHead,
    engine: EmbeddingEngine,
    source: SceneSource,
    ids: Sequence[str],
    grid: int,
) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
    assert head.token is not None
    # A spectral-only head needs no patch tokens: the model does not run for the cells.
    tok = (
        tile_tokens(engine, source, ids)
        if head.uses_embedding
        else np.zeros((len(ids), grid, grid, 0), np.float32)
    )  # (n, g, g, d)
    spectral = head.features is not None or head.water_rule
    spectra = tile_spectra(source, ids, grid) if spectral else None
    xin = head_inputs(head, tok, spectra.cell_features if spectra else None)
    probs = head.token.predict(xin)  # (n, g, g, 9)
    if head.water_rule and spectra is not None and spectra.cell_rules is not None:
        probs = apply_water_rule(probs, spectra.cell_rules)
    ood = head.ood["token"].score(xin) if "token" in head.ood else None
    return probs.transpose(0, 3, 1, 2), ood


def cell_areas_km2(
    footprints: Sequence[Any], region: Any, source: SceneSource, tile_ids: Sequence[str], grid: int
) -> NDArray[np.float64]:
    """Area (km²) inside the region of each ``grid × grid`` cell of tiles, ``(n, g, g)``.

    Cells of tiles wholly inside the region share the tile's area equally; cells of tiles that
    cross the region's edge are intersected one by one.
    """
    from backend.imagery.reader import PixelWindow
    from backend.imagery.sources import to_lonlat
    from backend.imagery.tiling import window_polygon

    out = np.zeros((len(tile_ids), grid, grid), dtype=np.float64)
    whole = tile_areas_km2(footprints)
    for i, (fp, tid) in enumerate(zip(footprints, tile_ids, strict=True)):
        if region is None or region.contains(fp):
            out[i] = whole[i] / (grid * grid)
            continue
        if not region.intersects(fp):
            continue
        win = tile_from_id(tid, source)[4]
        step = win.height // grid
        polys = [
            to_lonlat(
                window_polygon(
                    source,
                    PixelWindow(win.col_off + c * step, win.row_off + r * step, step, step),
                ),
                source.crs,
            )
            for r in range(grid)
            for c in range(grid)
        ]
        out[i] = tile_areas_km2(polys, region).reshape(grid, grid)
    return out


def predict_landcover(
    region: Region,
    source: SceneSource,
    model: EmbeddingModel,
    cache: EmbeddingCache,
    *,
    engine: EmbeddingEngine | None = None,
    settings: Settings | None = None,
    head: LandCoverHead | str | None = None,
    progress: ProgressCallback | None = None,
    tokens: bool = True,
) -> LandCoverResult:
    """Land-cover probabilities and class areas of a region.

    Embeds the tiles the cache lacks, predicts those without a stored prediction for this head
    (tile level, and token level for ViT heads with ``tokens``), stores them with their
    out-of-distribution scores, and computes the areas of what the map shows: per sub-tile cell
    when there are cells, per tile otherwise; cells beyond the out-of-distribution limit are
    counted apart, as unlike the training data.

    Raises:
        UnknownHeadError: no head for the model, or ``head`` is unknown.
        SoftMapError: any problem of the region, imagery, model or cache.
    """
    settings = settings or get_settings()
    chosen = (
        head
        if isinstance(head, LandCoverHead)
        else resolve_head(cache, model.meta.id, head, settings)
    )
    if chosen.model_id != model.meta.id:
        raise UnknownHeadError(f"Head {chosen.head_id} belongs to {chosen.model_id}.")
    engine = engine or EmbeddingEngine.from_settings(model, settings)
    embedded = embed_region(
        region, source, model, cache, engine=engine, settings=settings, progress=progress
    )
    ids = list(embedded.tile_ids)
    if not ids:
        raise SoftMapError(
            f"Every tile of {region.describe()} is mostly nodata in {source.id}.",
            title="Nothing to map",
        )
    eset = cache.embedding_set(model.meta.id, embedded.preprocessing_hash)
    assert eset is not None
    check_head_applies(chosen, eset.preprocessing_hash, cache.set_preprocessing(eset))
    ensure_tables(cache)
    forget_stale_predictions(cache, chosen)
    stored = stored_predictions(cache, model.meta.id, ids, chosen.head_id)
    have = set(stored.tile_ids)
    todo = [t for t in ids if t not in have]
    if todo:
        got, x = cache.embeddings(eset, todo)
        probs_new, ood_new = _predict_tiles(chosen, source, got, x)
        write_predictions(cache, "landcover_predictions", chosen, got, probs_new)
        if ood_new is not None:
            write_ood(cache, chosen, got, ood_new, 1)
        stored = stored_predictions(cache, model.meta.id, ids, chosen.head_id)
    probs = stored.probabilities
    tile_ood: NDArray[np.float32] | None = None
    if "tile" in chosen.ood:
        got_ood = stored_ood(cache, chosen, ids, 1)
        missing = [t for t in ids if t not in got_ood]
        if missing:  # predictions stored before their scores were
            got, x = cache.embeddings(eset, missing)
            _, extra = _predict_tiles(chosen, source, got, x)
            if extra is not None:
                write_ood(cache, chosen, got, extra, 1)
                got_ood.update({t: v.reshape(1, 1) for t, v in zip(got, extra, strict=True)})
        tile_ood = np.array([float(got_ood[t].ravel()[0]) for t in ids], dtype=np.float32)
    token_probs: NDArray[np.float32] | None = None
    token_ood: NDArray[np.float32] | None = None
    grid = chosen.token_grid
    if tokens and chosen.token is not None and grid and model.meta.token_grid == grid:
        have_tok = stored_token_predictions(cache, chosen, ids, grid)
        have_ood = stored_ood(cache, chosen, ids, grid) if "token" in chosen.ood else {}
        missing = [
            t for t in ids if t not in have_tok or ("token" in chosen.ood and t not in have_ood)
        ]
        if missing:
            new, new_ood = _predict_cells(chosen, engine, source, missing, grid)
            write_predictions(cache, "landcover_token_predictions", chosen, missing, new, grid=grid)
            have_tok.update(zip(missing, new, strict=True))
            if new_ood is not None:
                write_ood(cache, chosen, missing, new_ood, grid)
                have_ood.update(zip(missing, new_ood, strict=True))
        token_probs = np.stack([have_tok[t] for t in ids]).astype(np.float32)
        if "token" in chosen.ood:
            token_ood = np.stack([have_ood[t] for t in ids]).astype(np.float32)
    records = cache.tiles(ids)
    footprints = [shape(json.loads(r["footprint"])) for r in records]
    areas_km2 = tile_areas_km2(footprints, region.geometry)
    if token_probs is not None and grid:
        cell_km2 = cell_areas_km2(footprints, region.geometry, source, ids, grid)
        cell_p = token_probs.transpose(0, 2, 3, 1).reshape(-1, N_CLASSES)
        unlike = token_ood.reshape(-1) > 1.0 if token_ood is not None else None
        summary: MapAreas = map_areas(cell_p, cell_km2.reshape(-1), DW_CLASSES, unlike)
    else:
        unlike = tile_ood > 1.0 if tile_ood is not None else None
        summary = map_areas(probs, areas_km2, DW_CLASSES, unlike)
    return LandCoverResult(
        source=source,
        head=chosen.info(),
        tile_ids=tuple(ids),
        probabilities=probs,
        token_probabilities=token_probs,
        areas=summary.classes,
        region_km2=float(areas_km2.sum()),
        embed=embedded,
        predicted=len(todo),
        ood=tile_ood,
        token_ood=token_ood,
        unlike_km2=summary.unlike_km2,
    )


__all__ = [
    "FitResult",
    "LandCoverHead",
    "LandCoverResult",
    "StoredPredictions",
    "fit_head",
    "list_heads",
    "predict_landcover",
    "resolve_head",
    "save_head",
    "stored_predictions",
    "summary_layers",
    "tile_tokens",
]
