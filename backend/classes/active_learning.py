"""Active learning: which tiles to label next for a user class.

The classifier is trained on the current labels and scores every unlabelled tile of the scope.
Candidates are the ``pool_factor × k`` most uncertain tiles (probability nearest 0.5); among
them, a greedy farthest-point walk in cosine distance picks ``k`` that are spread out, starting
from the most uncertain, and also kept away from the tiles already labelled. Labelled tiles are
never suggested.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from backend.classes.classifier import ClassifierReport, train_classifier
from backend.classes.user_classes import label_sets
from backend.errors import EmptyScopeError, SoftMapError
from backend.store.cache import EmbeddingCache
from backend.store.scopes import Scope, scope_embeddings, tile_records


@dataclass(frozen=True)
class Suggestion:
    """A tile worth labelling next."""

    tile_id: str
    probability: float
    uncertainty: float  # 1 at p = 0.5, 0 at p = 0 or 1
    lon: float
    lat: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Suggestions:
    """Suggestions with the classifier they came from."""

    suggestions: tuple[Suggestion, ...]
    report: ClassifierReport
    candidates: int  # unlabelled tiles scored


def farthest_point_order(
    vectors: NDArray[np.floating],
    k: int,
    *,
    first: int = 0,
    avoid: NDArray[np.floating] | None = None,
) -> list[int]:
    """Greedy farthest-point selection of ``k`` rows by cosine distance.

    Starts at row ``first``; each next row is the one farthest from everything chosen so far (and
    from the ``avoid`` rows, e.g. already labelled tiles).
    """
    x = _unit(vectors)
    n = len(x)
    k = min(k, n)
    if k <= 0:
        return []
    nearest = np.full(n, np.inf)
    if avoid is not None and len(avoid):
        nearest = np.min(1.0 - x @ _unit(avoid).T, axis=1)
    chosen = [first]
    nearest = np.minimum(nearest, 1.0 - x @ x[first])
    nearest[first] = -np.inf
    while len(chosen) < k:
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, 1.0 - x @ x[nxt])
        nearest[chosen] = -np.inf
    return chosen


def _unit(v: NDArray[np.floating]) -> NDArray[np.float64]:
    x = np.asarray(v, dtype=np.float64)
    out: NDArray[np.float64] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def suggest(
    cache: EmbeddingCache,
    class_name: str,
    scope: Scope,
    *,
    k: int = 10,
    pool_factor: int = 5,
    seed: int = 0,
) -> Suggestions:
    """``k`` unlabelled tiles of the scope to label next: uncertain and spread out.

    Raises:
        UnknownClassError, NotEnoughLabelsError: as
        :func:`backend.classes.classifier.train_classifier`.
        EmptyScopeError: every tile of the scope is labelled already.
    """
    if k < 1 or pool_factor < 1:
        raise SoftMapError("k and the pool factor must be at least 1.", title="Invalid option")
    trained = train_classifier(cache, class_name, scope.eset, seed=seed)
    pos, neg = label_sets(cache, class_name)
    labelled = set(pos) | set(neg)
    todo = [t for t in scope.tile_ids if t not in labelled]
    if not todo:
        raise EmptyScopeError(
            f"Every tile of the scope ({len(scope.tile_ids)}) is labelled for '{class_name}' "
            "already: widen the region to get suggestions."
        )
    ids, vectors = scope_embeddings(cache, scope.eset, todo)
    probs = trained.predict(vectors)
    uncertainty = 1.0 - 2.0 * np.abs(probs - 0.5)
    pool = np.argsort(-uncertainty, kind="stable")[: k * pool_factor]
    _, labelled_vectors = scope_embeddings(cache, scope.eset, sorted(labelled))
    order = farthest_point_order(vectors[pool], k, first=0, avoid=labelled_vectors)
    picked = [int(pool[i]) for i in order]
    tiles = {t["tile_id"]: t for t in tile_records(cache, [ids[i] for i in picked])}
    out = tuple(
        Suggestion(
            tile_id=ids[i],
            probability=round(float(probs[i]), 4),
            uncertainty=round(float(uncertainty[i]), 4),
            lon=float(tiles[ids[i]]["lon"]),
            lat=float(tiles[ids[i]]["lat"]),
        )
        for i in picked
    )
    return Suggestions(out, trained.report, len(ids))
