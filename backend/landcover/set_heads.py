"""Land-cover heads on a stored embedding set alone: any set, fused S2 + S1 sets included.

:func:`backend.landcover.maps.fit_head` and ``predict_landcover`` run a model over a scene; a
fused set (:mod:`backend.embedding.fusion`) has no model that runs, only stored vectors. Here a
head is fitted and applied on the vectors a set already holds, so the same
:class:`~backend.landcover.heads.LandCoverHead` (tile level, no token head, no spectral
features) works on an S2 set, an S1 set and their fused set alike.

Labels are given per source as soft labels (for BigEarthNet patches: the CORINE labels of the
patch, :mod:`backend.landcover.corine`), and evaluation is leave-one-group-out: a group is one
place (a patch and its radar partner), so no tile of the held-out place is trained on, whichever
sensor it came from. Tiles of a fused set keep their coverage mark (``both``, ``s2``, ``s1``):
a tile only one sensor covers is predicted from that sensor's half, and the map says so.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from shapely.geometry import shape

from backend.embedding.fusion import fused_coverage, split_fused_model_id
from backend.errors import HeadMismatchError, NotEnoughLabelsError, NotFoundError
from backend.landcover.areas import ClassArea, map_areas, tile_areas_km2
from backend.landcover.heads import (
    LandCoverHead,
    check_head_applies,
    evaluate,
    fit_linear_softmax,
)
from backend.landcover.labels import DW_CLASSES, N_CLASSES, SoftLabels
from backend.landcover.store import now, save_head, stored_predictions, write_predictions
from backend.store.cache import EmbeddingCache, EmbeddingSet

#: Fewest labelled tiles, and fewest places, a set head is fitted on.
MIN_SET_TILES = 6
MIN_GROUPS = 2

TileCoverage = Literal["both", "s2", "s1", "single"]


@dataclass(frozen=True)
class SetTiles:
    """The stored tiles of one embedding set (optionally of some sources), with their vectors."""

    eset: EmbeddingSet
    tile_ids: tuple[str, ...]
    source_ids: tuple[str, ...]
    coverage: tuple[TileCoverage, ...]  # "single" for a set that is not fused
    vectors: NDArray[np.float32]


def set_tiles(
    cache: EmbeddingCache, model_id: str, sources: Sequence[str] | None = None
) -> SetTiles:
    """Every tile of ``model_id``'s set (the one with most tiles of ``sources``, if several).

    Raises:
        NotFoundError: the model has no stored set, or none over these sources.
    """
    best: tuple[int, EmbeddingSet, list[str], list[str]] | None = None
    for eset in cache.embedding_sets():
        if eset.model_id != model_id:
            continue
        with cache.cursor() as cur:
            rows = cur.execute(
                f"SELECT e.tile_id, t.source_id FROM {eset.table_name} e "
                "JOIN tiles t ON t.tile_id = e.tile_id "
                "WHERE ?::VARCHAR[] IS NULL OR list_contains(?::VARCHAR[], t.source_id) "
                "ORDER BY e.tile_id",
                [sources and list(sources), sources and list(sources)],
            ).fetchall()
        if rows and (best is None or len(rows) > best[0]):
            best = (len(rows), eset, [r[0] for r in rows], [str(r[1]) for r in rows])
    if best is None:
        where = ""
        if sources:
            listed = ", ".join(sorted(sources)[:3])
            where = f" over {listed}" + (f" or {len(sources) - 3} more" if len(sources) > 3 else "")
        raise NotFoundError(
            f"{model_id} has no embedded tiles{where}. Embed them first (softmap embed, or "
            "softmap fuse for an S2 + S1 set).",
            title="No embeddings",
        )
    _, eset, ids, srcs = best
    got, x = cache.embeddings(eset, ids)
    order = {t: i for i, t in enumerate(got)}
    x = x[[order[t] for t in ids]]
    coverage: list[TileCoverage] = ["single"] * len(ids)
    if split_fused_model_id(model_id) is not None:
        marks = fused_coverage(cache, eset, ids)
        coverage = [marks[t].coverage if t in marks else "both" for t in ids]
    return SetTiles(eset, tuple(ids), tuple(srcs), tuple(coverage), x)


# --- fitting -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupScore:
    """How the head fitted without one place predicts that place's tiles."""

    group: str
    tiles: int
    labels: tuple[str, ...]  # DW classes the place holds
    predicted: tuple[str, ...]  # dominant predicted class per tile
    in_labels: float  # share of tiles whose dominant class is one the place holds


@dataclass(frozen=True)
class SetHeadFit:
    """A head fitted on a stored set, with its leave-one-place-out evaluation."""

    head: LandCoverHead
    tile_ids: tuple[str, ...]
    groups: tuple[str, ...]
    coverage: tuple[TileCoverage, ...]
    held_out: NDArray[np.float32]  # (n, 9) out-of-fold probabilities
    per_group: tuple[GroupScore, ...]
    seconds: float

    @property
    def in_labels(self) -> float:
        """Share of tiles (held out) whose predicted class is one their place holds."""
        n = sum(g.tiles for g in self.per_group)
        return sum(g.in_labels * g.tiles for g in self.per_group) / n if n else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.head.info(),
            "stored": "cache",
            "seconds": round(self.seconds, 2),
            "held_out_in_labels": round(self.in_labels, 4),
            "per_group": [
                {
                    "group": g.group,
                    "tiles": g.tiles,
                    "labels": list(g.labels),
                    "predicted": list(g.predicted),
                    "in_labels": round(g.in_labels, 4),
                }
                for g in self.per_group
            ],
        }


def fit_set_head(
    cache: EmbeddingCache,
    model_id: str,
    labels_by_source: Mapping[str, SoftLabels],
    group_of: Mapping[str, str] | None = None,
    *,
    mapping: str,
    label_name: str,
    seed: int = 0,
) -> SetHeadFit:
    """Fit a tile head on the stored vectors of ``model_id``'s set, evaluated place by place.

    Args:
        cache: The cache holding the set (the head is stored there too).
        model_id: Any model id with a stored set, a fused ``"<s2>+<s1>"`` one included.
        labels_by_source: Source id → its soft label (one row, given to every tile of it).
        group_of: Source id → place; sources of one place (a patch and its radar partner) are
            held out together. Default: each source is its own place.
        mapping: The class mapping the labels came through (recorded with the head).
        label_name: What the labels are (recorded with the head).
        seed: Seed of the fits.

    Raises:
        NotFoundError: the set has no tile of the labelled sources.
        NotEnoughLabelsError: fewer than :data:`MIN_SET_TILES` labelled tiles or
            :data:`MIN_GROUPS` places.
    """
    start = time.perf_counter()
    tiles = set_tiles(cache, model_id, sorted(labels_by_source))
    rows = [labels_by_source[s] for s in tiles.source_ids]
    labels = SoftLabels(
        np.concatenate([r.fractions for r in rows]).astype(np.float32),
        np.concatenate([r.labelled_fraction for r in rows]).astype(np.float32),
        np.concatenate([r.multi_hot for r in rows]),
        np.concatenate([r.has_label for r in rows]),
    )
    ok = labels.has_label
    groups = np.array([(group_of or {}).get(s, s) for s in tiles.source_ids])
    places = sorted(set(groups[ok].tolist()))
    if int(ok.sum()) < MIN_SET_TILES or len(places) < MIN_GROUPS:
        raise NotEnoughLabelsError(
            f"{int(ok.sum())} labelled tiles of {len(places)} places in {model_id}'s set; a set "
            f"head needs {MIN_SET_TILES} tiles of {MIN_GROUPS} places or more. Register and "
            "embed more labelled patches."
        )
    x, y, g = tiles.vectors[ok], labels.subset(ok), groups[ok]
    held = np.zeros((len(x), N_CLASSES), dtype=np.float32)
    scores: list[GroupScore] = []
    for place in places:
        test = g == place
        fold = fit_linear_softmax(x[~test], y.fractions[~test], seed=seed)
        held[test] = fold.predict(x[test])
        present = tuple(DW_CLASSES[c] for c in np.flatnonzero(y.multi_hot[test].any(axis=0)))
        top = held[test].argmax(axis=1)
        hit = y.multi_hot[test][np.arange(int(test.sum())), top]
        predicted = tuple(DW_CLASSES[c] for c in top)
        scores.append(GroupScore(place, int(test.sum()), present, predicted, float(hit.mean())))
    # The prior of the pooled metric: the most frequent dominant class over all labelled tiles.
    prior = int(np.bincount(y.dominant, minlength=N_CLASSES).argmax())
    pooled = evaluate(held, y, n_train=len(x) - min(int((g == p).sum()) for p in places),
                      prior=prior).to_json()  # fmt: skip
    pooled["in_labels"] = round(
        sum(s.in_labels * s.tiles for s in scores) / max(1, sum(s.tiles for s in scores)), 4
    )
    final = fit_linear_softmax(x, y.fractions, seed=seed)
    created = now()
    ids = [t for t, keep in zip(tiles.tile_ids, ok.tolist(), strict=True) if keep]
    cov = [c for c, keep in zip(tiles.coverage, ok.tolist(), strict=True) if keep]
    head = LandCoverHead(
        head_id=f"{model_id}@{mapping}-{created:%Y%m%d}-{uuid.uuid4().hex[:6]}",
        model_id=model_id,
        preprocessing_hash=tiles.eset.preprocessing_hash,
        mapping=mapping,
        tile=final,
        training={
            "source": ",".join(sorted({s for s, k in zip(tiles.source_ids, ok, strict=True) if k})),
            "labels": label_name,
            "mapping": mapping,
            "region": "the stored tiles of the set",
            "tiles": len(tiles.tile_ids),
            "labelled_tiles": len(ids),
            "labelled_tokens": 0,
            "places": len(places),
            "coverage": {c: cov.count(c) for c in sorted(set(cov))},
            "loss": "soft cross-entropy (≡ KL to the class fractions), L2 1e-2, L-BFGS",
            "split": "leave one place out (a patch with its radar partner); final fit on all",
            "seed": seed,
            "preprocessing": cache.set_preprocessing(tiles.eset),
        },
        metrics={"tile": pooled},
        created_at=created.isoformat(timespec="seconds"),
    )
    save_head(cache, head)
    return SetHeadFit(head, tuple(ids), tuple(g.tolist()), tuple(cov), held, tuple(scores),
                      time.perf_counter() - start)  # fmt: skip


# --- mapping -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetLandCover:
    """Land cover of a set's stored tiles: per-tile probabilities, coverage marks and areas."""

    model_id: str
    head: dict[str, Any]
    tile_ids: tuple[str, ...]
    source_ids: tuple[str, ...]
    coverage: tuple[TileCoverage, ...]
    probabilities: NDArray[np.float32]  # (n, 9)
    areas: list[ClassArea]
    area_km2: float
    predicted: int  # tiles predicted now (the rest were stored)

    @property
    def fallback(self) -> NDArray[np.bool_]:
        """Tiles of a fused set that only one sensor covers (predicted from its half alone)."""
        return np.array([c in ("s2", "s1") for c in self.coverage], dtype=bool)

    @property
    def dominant(self) -> tuple[str, ...]:
        return tuple(DW_CLASSES[c] for c in self.probabilities.argmax(axis=1))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "head": {k: self.head.get(k) for k in ("head_id", "mapping", "metrics", "dim")},
            "tiles": len(self.tile_ids),
            "predicted": self.predicted,
            "fallback_tiles": int(self.fallback.sum()),
            "area_km2": round(self.area_km2, 4),
            "areas": [
                {
                    "class": a.name,
                    "map_km2": round(a.map_km2 or 0.0, 4),
                    "share": round(a.share, 4),
                    "tiles_dominant": a.tiles_dominant,
                }
                for a in self.areas
            ],
            "tile_classes": [
                {
                    "tile": t,
                    "source": s,
                    "coverage": c,
                    "fallback": c in ("s2", "s1"),
                    "class": d,
                    "confidence": round(float(p.max()), 4),
                }
                for t, s, c, d, p in zip(
                    self.tile_ids,
                    self.source_ids,
                    self.coverage,
                    self.dominant,
                    self.probabilities,
                    strict=True,
                )
            ],
        }


def map_set_landcover(
    cache: EmbeddingCache,
    head: LandCoverHead,
    model_id: str,
    sources: Sequence[str] | None = None,
) -> SetLandCover:
    """Predict every stored tile of ``model_id``'s set (of ``sources``) with ``head``.

    Predictions are stored in ``landcover_predictions`` like a scene map's and reused.

    Raises:
        HeadMismatchError: the head is of another model, was fitted on other preprocessing, or
            reads spectral features (which need a scene, not a set).
        NotFoundError: the set has no stored tile (of these sources).
    """
    if head.model_id != model_id:
        raise HeadMismatchError(f"Head {head.head_id} belongs to {head.model_id}, not {model_id}.")
    if head.features is not None or head.water_rule or not head.uses_embedding:
        raise HeadMismatchError(
            f"Head {head.head_id} reads spectral features of a scene; a set's stored tiles have "
            "only embeddings. Fit a head on the set (softmap landcover fit --labels patches)."
        )
    tiles = set_tiles(cache, model_id, sources)
    check_head_applies(head, tiles.eset.preprocessing_hash, cache.set_preprocessing(tiles.eset))
    ids = list(tiles.tile_ids)
    stored = stored_predictions(cache, model_id, ids, head.head_id)
    todo = [i for i, t in enumerate(ids) if t not in set(stored.tile_ids)]
    if todo:
        probs_new = head.tile.predict(tiles.vectors[todo])
        write_predictions(cache, "landcover_predictions", head, [ids[i] for i in todo], probs_new)
        stored = stored_predictions(cache, model_id, ids, head.head_id)
    probs = stored.probabilities
    footprints = [shape(json.loads(r["footprint"])) for r in cache.tiles(ids)]
    km2 = tile_areas_km2(footprints)
    summary = map_areas(probs, km2, DW_CLASSES)
    return SetLandCover(
        model_id=model_id,
        head=head.info(),
        tile_ids=tiles.tile_ids,
        source_ids=tiles.source_ids,
        coverage=tiles.coverage,
        probabilities=probs,
        areas=summary.classes,
        area_km2=float(km2.sum()),
        predicted=len(todo),
    )
