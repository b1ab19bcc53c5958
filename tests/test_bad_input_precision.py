"""Numeric precision is provenance, not part of the embedding set's key.

bf16 autocast (the CUDA default) and fp32 (the CPU default) vectors of the same tile are within
``1 - cos`` ≈ 1e-6 of each other on the bundled model (``bench/bench_precision.py``: mean 1.4e-6,
max 1.4e-5 over 688 demo tiles, against a median nearest-neighbour gap of 5e-4), so both land in
one set: a tile embedded on a GPU is reused on a CPU and the land-cover head's preprocessing
still matches. These tests keep that decision honest: if a model's bf16 error grew, they fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.embedding.pipeline import embed_region
from backend.imagery.regions import parse_bbox
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from tests.conftest import VIRGINIA_SMALL_BBOX

#: About 1.9 km × 1.5 km next to the small Virginia region (other tiles).
VIRGINIA_EAST_BBOX = "-75.625,37.64,-75.605,37.67"
#: About 6 km × 6.7 km of the Virginia scene: farmland, marsh, town and open water.
VIRGINIA_6KM_BBOX = "-75.68,37.62,-75.61,37.68"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.slow
def test_bf16_and_fp32_embeddings_agree_on_real_tiles(
    tmp_path: Path, virginia: SceneSource
) -> None:
    model = create_model("softmap-default")
    vectors = {}
    for precision in ("fp32", "bf16"):
        db = tmp_path / f"{precision}.duckdb"
        with EmbeddingCache(db) as cache:
            engine = EmbeddingEngine(model, device="cpu", batch_size=32, precision=precision)
            result = embed_region(
                parse_bbox(VIRGINIA_6KM_BBOX), virginia, model, cache, engine=engine,
                settings=Settings(db_path=db, offline=True),
            )  # fmt: skip
            (eset,) = cache.embedding_sets()
            ids, x = cache.embeddings(eset)
            assert cache.set_precisions(eset) == {precision: result.computed}
        vectors[precision] = (ids, _unit(x))
    (ids32, u32), (ids16, u16) = vectors["fp32"], vectors["bf16"]
    assert ids32 == ids16 and len(ids32) >= 100
    one_minus_cos = 1.0 - np.sum(u32 * u16, axis=1)
    assert one_minus_cos.max() < 1e-4
    # The nearest other tile is, for most tiles, much further away than the precision error.
    sims = u32 @ u32.T
    np.fill_diagonal(sims, -np.inf)
    gap = 1.0 - sims.max(axis=1)
    assert np.median(gap) > 30 * np.median(one_minus_cos)
    # Top-10 neighbours agree.
    top32 = np.argsort(-sims, axis=1)[:, :10]
    s16 = u16 @ u16.T
    np.fill_diagonal(s16, -np.inf)
    top16 = np.argsort(-s16, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top32, top16, strict=True)])
    assert overlap >= 0.9


@pytest.mark.parametrize("first", ["fp32", "bf16"])
def test_one_set_holds_both_precisions_with_provenance(
    tmp_path: Path, virginia: SceneSource, first: str
) -> None:
    second = "bf16" if first == "fp32" else "fp32"
    model = create_model("test-vit")
    db = tmp_path / "c.duckdb"
    settings = Settings(db_path=db, offline=True)
    with EmbeddingCache(db) as cache:

        def run(bbox: str, precision: str) -> int:
            engine = EmbeddingEngine(model, device="cpu", batch_size=16, precision=precision)
            r = embed_region(parse_bbox(bbox), virginia, model, cache, engine=engine,
                             settings=settings)  # fmt: skip
            return r.computed

        n_first = run(VIRGINIA_SMALL_BBOX, first)
        assert run(VIRGINIA_SMALL_BBOX, second) == 0  # reused, not recomputed
        n_second = run(VIRGINIA_EAST_BBOX, second)
        (eset,) = cache.embedding_sets()  # one set, whatever the precision
        assert cache.set_precisions(eset) == {first: n_first, second: n_second}
