"""A user class's classifier and active learning, on real test-vit embeddings of Virginia.

The synthetic class is "bright in near infrared" (mean B08 of the tile above the scene's
median): a real property of the imagery that the classifier must learn from the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.classes import user_classes as uc
from backend.classes.active_learning import farthest_point_order, suggest
from backend.classes.classifier import classify_scope, stored_predictions, train_classifier
from backend.cli import main
from backend.errors import NotEnoughLabelsError, UnknownClassError
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SceneSource
from backend.store.cache import EmbeddingCache
from backend.store.scopes import resolve_scope

from .conftest import embed_test_vit
from .test_user_classes import WIDE_BBOX


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory, virginia: SceneSource) -> Path:
    path = tmp_path_factory.mktemp("classifier") / "cache.duckdb"
    embed_test_vit(path, virginia, WIDE_BBOX)
    return path


@pytest.fixture(scope="module")
def bright(db: Path, virginia: SceneSource) -> dict[str, bool]:
    """tile id → whether its mean B08 is above the median of the region's tiles."""
    with EmbeddingCache(db, read_only=True) as cache:
        tiles = cache.tiles(list(resolve_scope(cache, "test-vit").tile_ids))
    with SceneReader(virginia) as reader:
        nir = np.array(
            [
                reader.read(PixelWindow(t["col_off"], t["row_off"], 112, 112), ("B08",)).mean()
                for t in tiles
            ]
        )
    return {t["tile_id"]: bool(v > np.median(nir)) for t, v in zip(tiles, nir, strict=True)}


def _label_half(cache: EmbeddingCache, name: str, truth: dict[str, bool]) -> list[str]:
    """Label a random 30 tiles from the truth; return the held-out ids."""
    ids = sorted(truth)
    order = np.random.default_rng(0).permutation(len(ids))
    train = [ids[i] for i in order[:30]]
    uc.add_labels(cache, name, [t for t in train if truth[t]], positive=True)
    uc.add_labels(cache, name, [t for t in train if not truth[t]], positive=False)
    return [ids[i] for i in order[30:]]


def test_classifier_learns_a_separable_class_and_stores_predictions(
    db: Path, bright: dict[str, bool]
) -> None:
    with EmbeddingCache(db) as cache:
        held_out = _label_half(cache, "bright", bright)
        scope = resolve_scope(cache, "test-vit", source_id="demo/virginia")
        result = classify_scope(cache, "bright", scope)
        rep = result.report
        assert rep.positives + rep.negatives == 30 and rep.labels_without_embedding == 0
        assert rep.calibration == "sigmoid" and rep.cv_folds == 5
        assert rep.cv_balanced_accuracy is not None and rep.cv_balanced_accuracy > 0.8
        p = dict(zip(result.tile_ids, result.probabilities, strict=True))
        accuracy = np.mean([(p[t] >= 0.5) == bright[t] for t in held_out])
        assert accuracy > 0.8  # chance is 0.5
        assert set(result.tile_ids) == set(scope.tile_ids)
        assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))
        ids, stored = stored_predictions(cache, "bright", scope.eset)
        np.testing.assert_allclose(stored, [p[t] for t in ids])
        areas = result.areas(cache)
        assert [a.name for a in areas] == ["not bright", "bright"]
        total = sum(a.expected_km2 for a in areas)
        assert 60 < total < 120  # 75 tiles of 1.12 km × 1.12 km ≈ 94 km²
        assert areas[1].low_km2 <= areas[1].expected_km2 <= areas[1].high_km2
        assert areas[0].tiles_dominant + areas[1].tiles_dominant == 75


def test_few_labels_fall_back_and_missing_side_is_refused(db: Path) -> None:
    with EmbeddingCache(db) as cache:
        eset = resolve_scope(cache, "test-vit").eset
        ids = list(resolve_scope(cache, "test-vit").tile_ids)
        uc.add_labels(cache, "sparse", [ids[0]], positive=True)
        with pytest.raises(NotEnoughLabelsError, match="0 negative"):
            train_classifier(cache, "sparse", eset)
        uc.add_labels(cache, "sparse", [ids[50]], positive=False)
        rep = train_classifier(cache, "sparse", eset).report
        assert rep.calibration == "none" and rep.cv_balanced_accuracy is None
        with pytest.raises(UnknownClassError):
            train_classifier(cache, "nothing", eset)


def test_suggestions_are_unlabelled_uncertain_and_spread(db: Path, bright: dict[str, bool]) -> None:
    with EmbeddingCache(db) as cache:
        _label_half(cache, "bright2", bright)
        scope = resolve_scope(cache, "test-vit")
        found = suggest(cache, "bright2", scope, k=8)
        pos, neg = uc.label_sets(cache, "bright2")
        picked = [s.tile_id for s in found.suggestions]
        assert len(picked) == len(set(picked)) == 8
        assert not set(picked) & (set(pos) | set(neg))
        assert found.candidates == len(scope.tile_ids) - 30
        # The first is the most uncertain unlabelled tile.
        assert found.suggestions[0].uncertainty == max(s.uncertainty for s in found.suggestions)
        # Every tile labelled → nothing left to suggest.
        rest = [t for t in scope.tile_ids if t not in set(pos) | set(neg)]
        uc.add_labels(cache, "bright2", rest, positive=False)
        with pytest.raises(Exception, match="labelled"):
            suggest(cache, "bright2", scope, k=3)


def test_farthest_point_order_spreads_out() -> None:
    # Two tight clusters: the second pick must come from the other cluster.
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0]) + rng.normal(scale=0.01, size=(10, 3))
    b = np.array([0.0, 1.0, 0.0]) + rng.normal(scale=0.01, size=(10, 3))
    order = farthest_point_order(np.vstack([a, b]), 2)
    assert order[0] == 0 and order[1] >= 10


def test_cli_classify_and_suggest(
    db: Path, bright: dict[str, bool], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmbeddingCache(db) as cache:
        _label_half(cache, "bright3", bright)
    base = ["--model", "test-vit", "--db", str(db), "--json"]
    tif = tmp_path / "bright.tif"
    assert main(["classify", "bright3", "--source", "demo/virginia", "--map", str(tif), *base]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["tiles"] == 75 and out["classifier"]["positives"] + out["classifier"]["negatives"] == 30
    )
    assert out["areas"][1]["name"] == "bright3" and tif.exists()
    assert main(["suggest", "bright3", "--k", "5", *base]) == 0
    sug = json.loads(capsys.readouterr().out)["suggestions"]
    assert len(sug) == 5 and {"tile_id", "probability", "lon", "lat"} <= set(sug[0])

    # User mistakes: one line, exit 2.
    assert main(["classify", "nope", *base]) == 2
    assert capsys.readouterr().err.startswith("softmap: Unknown class:")
    assert main(["classify", "bright3", "--model", "softcon-vits14-s2", "--db", str(db)]) == 2
    assert "no embeddings of softcon-vits14-s2" in capsys.readouterr().err
    assert main(["suggest", "bright3", "--source", "demo/brandenburg", *base]) == 2
    err = capsys.readouterr().err
    assert "Nothing" in err and "demo/brandenburg" in err and len(err.splitlines()) == 1
