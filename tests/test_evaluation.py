"""Evaluation: the spatial split has no neighbours across it; probes on real tiles; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.registry import get_model_meta
from backend.settings import ASSETS_DIR, Settings
from backend.training import DEFAULT_HOLDOUT
from backend.training.evaluation import (
    Candidate,
    band_statistics,
    blocked_split,
    evaluate,
    linear_probe,
    min_tile_distance,
    read_tiles,
)


def _neighbours_across(
    split_train: np.ndarray, split_test: np.ndarray, rows: int, cols: int
) -> int:
    train = split_train.reshape(rows, cols)
    test = split_test.reshape(rows, cols)
    count = 0
    for r, c in zip(*np.nonzero(test), strict=True):
        window = train[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        count += int(window.sum())
    return count


def test_default_split_has_no_neighbours_across_it() -> None:
    split = blocked_split(12, 24, DEFAULT_HOLDOUT.blocks, block=4, buffer=1)
    assert not (split.train & split.test).any()
    assert (split.train | split.test | split.dropped).all()
    assert split.test.sum() == 6 * 16
    assert _neighbours_across(split.train, split.test, 12, 24) == 0
    assert min_tile_distance(split) >= 2


@pytest.mark.parametrize("seed", range(5))
def test_random_block_splits_have_no_neighbours_across_them(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows, cols, block = int(rng.integers(5, 20)), int(rng.integers(5, 30)), int(rng.integers(2, 5))
    blocks = {
        (int(rng.integers(0, -(-rows // block))), int(rng.integers(0, -(-cols // block))))
        for _ in range(3)
    }
    split = blocked_split(rows, cols, blocks, block=block, buffer=1)
    assert split.test.any()
    assert _neighbours_across(split.train, split.test, rows, cols) == 0
    # Buffer 0 only separates the sets; then neighbours across are expected.
    loose = blocked_split(rows, cols, blocks, block=block, buffer=0)
    assert not loose.dropped.any()
    assert (loose.train == ~loose.test).all()


def test_holdout_blocks_are_the_test_tiles(brandenburg: SceneSource) -> None:
    meta = get_model_meta("softmap-default")
    windows, images, rows, cols = read_tiles(brandenburg, 64, meta.bands, meta.normalization)
    assert (rows, cols) == (12, 24) and images.shape == (288, 13, 64, 64)
    split = blocked_split(rows, cols, DEFAULT_HOLDOUT.blocks)
    boxes = DEFAULT_HOLDOUT.pixel_boxes(with_buffer=False)
    for w, is_test in zip(windows, split.test, strict=True):
        inside = any(r0 <= w.row_off < r1 and c0 <= w.col_off < c1 for r0, c0, r1, c1 in boxes)
        assert inside == bool(is_test)
    stats = band_statistics(images)
    assert stats.shape == (288, 26) and np.isfinite(stats).all()


def test_linear_probe_scores_informative_features_high() -> None:
    rng = np.random.default_rng(0)
    n = 120
    multi = rng.random((n, 9)) < 0.3
    multi[:, 7:] = False
    dominant = multi.argmax(1)
    features = multi.astype(float) * 3 + rng.normal(0, 0.3, (n, 9))
    train = np.arange(n) < 80
    groups = np.arange(n) // 10
    good = linear_probe("good", "", features, multi, dominant, train, ~train, groups, (1.0,))
    noise = linear_probe(
        "noise", "", rng.normal(size=(n, 9)), multi, dominant, train, ~train, groups, (1.0,)
    )
    assert good.map > 0.95 and good.map > noise.map + 0.3


@pytest.mark.slow
def test_evaluate_on_brandenburg_and_cli(
    brandenburg: SceneSource, capsys: pytest.CaptureFixture[str]
) -> None:
    random_vit = create_model("test-vit")
    report = evaluate(
        brandenburg,
        [Candidate("test-vit", "random", random_vit), Candidate("band-stats", "baseline")],
        DEFAULT_HOLDOUT,
        c_grid=(1.0,),
    )
    assert report.labelled > 100 and report.test_tiles > 30 and report.train_tiles > 30
    assert report.min_train_test_distance >= 2
    names = [r.name for r in report.results]
    assert names == ["prior", "test-vit", "band-stats"]
    for r in report.results:
        assert 0 <= r.top1 <= 1 and 0 < r.map <= 1
    # The image features beat the class prior on held-out mAP.
    assert report.results[2].map > report.results[0].map

    assert main(["eval", "--c", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out["results"]] == [
        "prior",
        "softmap-default",
        "no-soft",
        "random-init",
        "band-stats",
    ]
    assert out["weights"].endswith("softmap-default.pt")


def test_bundled_default_model_loads_without_models_dir(tmp_path: Path) -> None:
    settings = Settings(models_dir=tmp_path / "absent", offline=True)
    model = create_model("softmap-default", settings=settings)
    assert model.load_report is not None
    assert model.load_report.path == ASSETS_DIR / "models" / "softmap-default.pt"
    assert (ASSETS_DIR / "models" / "softmap-default.pt").stat().st_size <= 25 * 2**20
    meta = model.meta
    assert (meta.chip_size, meta.patch_size, meta.embed_dim, meta.in_chans) == (64, 8, 192, 13)
    assert not (tmp_path / "absent").exists()


def test_missing_bundled_weights_say_how_to_restore(tmp_path: Path) -> None:
    from backend.errors import WeightsNotFoundError

    settings = Settings(models_dir=tmp_path / "m", assets_dir=tmp_path / "assets", offline=True)
    with pytest.raises(WeightsNotFoundError, match="ships with SoftMap") as info:
        create_model("softmap-default", settings=settings)
    assert "scripts/train_default_model.sh" in str(info.value)
