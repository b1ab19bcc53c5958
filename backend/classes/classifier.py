"""A classifier per user class and model: logistic regression on the cached embeddings.

Embeddings are L2-normalised and standardised, then fitted with scikit-learn's
``LogisticRegression(class_weight="balanced")``, so a class with 5 positives among 200 negatives
is not ignored. Probabilities:

* with at least ``CALIBRATION_MIN`` labels on each side, ``CalibratedClassifierCV`` (sigmoid,
  ``min(5, smallest side)`` folds, ``ensemble=False``) calibrates them: one sigmoid fitted on the
  out-of-fold scores of all labels (per-fold sigmoids fitted on a few labels each are flat);
* below that, the logistic regression's own probabilities are used (``calibration = "none"``):
  too few labels to hold any out, and a balanced logistic model is already a smooth, sensible
  score. The report says which one was used.

Accuracy is cross-validated (stratified, ``min(5, smallest side)`` folds, balanced accuracy so a
lopsided label set cannot look good by always answering "no") and reported with the number of
labels behind it; with fewer than 2 labels on a side there is no cross-validation (``None``).
Predictions over a scope are stored per tile (``class_predictions``) with the classifier's report
(``class_models``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from numpy.typing import NDArray
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from backend.classes.user_classes import get_class, label_sets
from backend.errors import NotEnoughLabelsError
from backend.landcover.areas import ClassArea, class_areas, tile_areas_km2
from backend.store.cache import EmbeddingCache, EmbeddingSet
from backend.store.scopes import Scope, scope_embeddings, tile_records

#: Labels needed on each side before probabilities are calibrated on held-out folds.
CALIBRATION_MIN = 5
MAX_FOLDS = 5

_DDL = """
CREATE TABLE IF NOT EXISTS class_models (
    class_id INTEGER NOT NULL, set_id INTEGER NOT NULL, model_id TEXT, positives INTEGER,
    negatives INTEGER, cv_balanced_accuracy DOUBLE, cv_folds INTEGER, calibration TEXT,
    report JSON, trained_at TIMESTAMPTZ, PRIMARY KEY (class_id, set_id)
);
CREATE TABLE IF NOT EXISTS class_predictions (
    class_id INTEGER NOT NULL, set_id INTEGER NOT NULL, tile_id TEXT NOT NULL,
    probability DOUBLE NOT NULL, predicted_at TIMESTAMPTZ,
    PRIMARY KEY (class_id, set_id, tile_id)
);
"""


@dataclass(frozen=True)
class ClassifierReport:
    """How a class's classifier was trained and how well it cross-validates."""

    class_name: str
    model_id: str
    preprocessing_hash: str
    positives: int
    negatives: int
    labels_without_embedding: int  # labelled tiles this model has not embedded (not used)
    cv_balanced_accuracy: float | None
    cv_folds: int
    calibration: str  # "sigmoid" or "none"
    seconds: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class TrainedClassifier:
    """A fitted estimator with its report; ``predict`` gives P(class) per embedding."""

    estimator: Any
    report: ClassifierReport

    def predict(self, vectors: NDArray[np.float32]) -> NDArray[np.float64]:
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.float64)
        proba = self.estimator.predict_proba(_features(vectors))
        return np.asarray(proba[:, 1], dtype=np.float64)


@dataclass(frozen=True)
class Classification:
    """Probabilities of one class over a scope (stored in the cache)."""

    report: ClassifierReport
    tile_ids: tuple[str, ...]
    probabilities: NDArray[np.float64]
    seconds: float

    def areas(self, cache: EmbeddingCache, region: BaseGeometry | None = None) -> list[ClassArea]:
        """Expected km² of the class (and of "not class") with a 95 % range and tile counts."""
        return user_class_areas(
            cache, self.report.class_name, self.tile_ids, self.probabilities, region
        )


def _features(vectors: NDArray[np.floating]) -> NDArray[np.float64]:
    x = np.asarray(vectors, dtype=np.float64)
    out: NDArray[np.float64] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return out


def _ensure(cache: EmbeddingCache) -> bool:
    return cache.ensure_schema("classifier", _DDL)


def train_classifier(
    cache: EmbeddingCache, class_name: str, eset: EmbeddingSet, *, seed: int = 0
) -> TrainedClassifier:
    """Fit the class's classifier on the labelled tiles that ``eset`` has embeddings for.

    Raises:
        UnknownClassError: no such class.
        NotEnoughLabelsError: fewer than one positive and one negative embedded tile.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    get_class(cache, class_name)
    pos, neg = label_sets(cache, class_name)
    ids, vectors = scope_embeddings(cache, eset, pos + neg)
    positive = set(pos)
    y = np.array([t in positive for t in ids], dtype=np.int64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos < 1 or n_neg < 1:
        raise NotEnoughLabelsError(
            f"Class '{class_name}' has {n_pos} positive and {n_neg} negative tiles embedded "
            f"with {eset.model_id}: mark at least one of each (`softmap label add "
            f"'{class_name}' --tile ID [--negative]`)."
        )
    x = _features(vectors)

    def base() -> Any:
        return make_pipeline(
            StandardScaler(),
            LogisticRegression(class_weight="balanced", C=1.0, max_iter=2000),
        )

    smallest = min(n_pos, n_neg)
    folds = min(MAX_FOLDS, smallest)
    cv_score: float | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        if folds >= 2:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            scores = cross_val_score(base(), x, y, cv=cv, scoring="balanced_accuracy")
            cv_score = float(np.mean(scores))
        if smallest >= CALIBRATION_MIN:
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            # One sigmoid on every label's out-of-fold score: with ``ensemble=True`` each fold's
            # sigmoid is fitted on its 2-3 held-out labels, comes out nearly flat, and their
            # average put every tile near p 0.5 (8 positives / 6 negatives, issue 12).
            estimator: Any = CalibratedClassifierCV(base(), method="sigmoid", cv=cv, ensemble=False)
            calibration = "sigmoid"
        else:
            estimator = base()
            calibration = "none"
        estimator.fit(x, y)
    report = ClassifierReport(
        class_name=class_name,
        model_id=eset.model_id,
        preprocessing_hash=eset.preprocessing_hash,
        positives=n_pos,
        negatives=n_neg,
        labels_without_embedding=len(pos) + len(neg) - len(ids),
        cv_balanced_accuracy=cv_score,
        cv_folds=folds if folds >= 2 else 0,
        calibration=calibration,
        seconds=round(time.perf_counter() - start, 3),
    )
    return TrainedClassifier(estimator, report)


def classify_scope(
    cache: EmbeddingCache, class_name: str, scope: Scope, *, store: bool = True, seed: int = 0
) -> Classification:
    """Train the class's classifier and predict P(class) for every tile of the scope.

    With ``store`` (and a writable cache) the probabilities and the report are saved, replacing
    earlier predictions of those tiles.
    """
    start = time.perf_counter()
    trained = train_classifier(cache, class_name, scope.eset, seed=seed)
    ids, vectors = scope_embeddings(cache, scope.eset, scope.tile_ids)
    probs = trained.predict(vectors)
    if store and not cache.read_only:
        _store(cache, class_name, scope.eset, ids, probs, trained.report)
    return Classification(trained.report, tuple(ids), probs, round(time.perf_counter() - start, 3))


def _store(
    cache: EmbeddingCache,
    class_name: str,
    eset: EmbeddingSet,
    ids: Sequence[str],
    probs: NDArray[np.float64],
    report: ClassifierReport,
) -> None:
    import pyarrow as pa

    _ensure(cache)
    cls = get_class(cache, class_name)
    now = datetime.now(timezone.utc)
    n = len(ids)
    table = pa.table(
        {
            "class_id": pa.array([cls.class_id] * n, pa.int32()),
            "set_id": pa.array([eset.set_id] * n, pa.int32()),
            "tile_id": list(ids),
            "probability": pa.array(probs, pa.float64()),
            "predicted_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        }
    )
    with cache.transaction() as cur:
        cur.register("_preds", table)
        cur.execute(
            """INSERT INTO class_predictions SELECT * FROM _preds
            ON CONFLICT (class_id, set_id, tile_id) DO UPDATE SET
                probability = excluded.probability, predicted_at = excluded.predicted_at"""
        )
        cur.unregister("_preds")
        cur.execute(
            """INSERT INTO class_models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (class_id, set_id) DO UPDATE SET positives = excluded.positives,
                negatives = excluded.negatives,
                cv_balanced_accuracy = excluded.cv_balanced_accuracy,
                cv_folds = excluded.cv_folds, calibration = excluded.calibration,
                report = excluded.report, trained_at = excluded.trained_at""",
            [
                cls.class_id,
                eset.set_id,
                eset.model_id,
                report.positives,
                report.negatives,
                report.cv_balanced_accuracy,
                report.cv_folds,
                report.calibration,
                json.dumps(report.to_json()),
                now,
            ],
        )


def stored_predictions(
    cache: EmbeddingCache,
    class_name: str,
    eset: EmbeddingSet,
    tile_ids: Sequence[str] | None = None,
) -> tuple[list[str], NDArray[np.float64]]:
    """(tile ids, probabilities) saved by :func:`classify_scope`, sorted by tile id."""
    cls = get_class(cache, class_name)
    if not _ensure(cache):
        return [], np.zeros(0)
    with cache.cursor() as cur:
        rows = cur.execute(
            """SELECT tile_id, probability FROM class_predictions
            WHERE class_id = ? AND set_id = ?
                AND (?::TEXT[] IS NULL OR tile_id IN (SELECT unnest(?::VARCHAR[])))
            ORDER BY tile_id""",
            [cls.class_id, eset.set_id, tile_ids, tile_ids],
        ).fetchall()
    return [r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.float64)


def user_class_areas(
    cache: EmbeddingCache,
    class_name: str,
    tile_ids: Sequence[str],
    probabilities: NDArray[np.floating],
    region: BaseGeometry | None = None,
) -> list[ClassArea]:
    """Expected area of ``class_name`` and of its complement over tiles (clipped to a region)."""
    tiles = tile_records(cache, tile_ids)
    footprints = [shape(json.loads(t["footprint"])) for t in tiles]
    p = np.asarray(probabilities, dtype=np.float64)
    return class_areas(
        np.stack([1.0 - p, p], axis=1),
        tile_areas_km2(footprints, region),
        [f"not {class_name}", class_name],
    )
