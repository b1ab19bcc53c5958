"""Projections of real test-vit embeddings: cache hits, transform of new tiles, refits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backend.analysis.projection import ProjectionParams, fit_reducer, project, warm_up
from backend.cli import main
from backend.errors import SoftMapError
from backend.imagery.sources import SceneSource
from backend.store.cache import EmbeddingCache
from backend.store.scopes import resolve_scope

from .conftest import VIRGINIA_SMALL_BBOX, embed_test_vit
from .test_user_classes import WIDE_BBOX


def _grow_and_project(db: Path, virginia: SceneSource, params: ProjectionParams) -> None:
    """Fit on the small region, embed more of the source, place the new tiles by transform."""
    embed_test_vit(db, virginia, VIRGINIA_SMALL_BBOX)
    with EmbeddingCache(db) as cache:
        scope = resolve_scope(cache, "test-vit", source_id="demo/virginia")
        first = project(cache, scope, params)
        assert not first.cached and first.fitted == len(scope.tile_ids) == 16
        assert first.xy.shape == (16, 2) and np.isfinite(first.xy).all()
        again = project(cache, scope, params)
        assert again.cached and again.projection_id == first.projection_id
        np.testing.assert_array_equal(again.xy, first.xy)
    embed_test_vit(db, virginia, WIDE_BBOX)
    with EmbeddingCache(db) as cache:
        grown = resolve_scope(cache, "test-vit", source_id="demo/virginia")
        assert len(grown.tile_ids) == 75 and grown.key == scope.key
        placed = project(cache, grown, params)
        assert not placed.cached and placed.transformed == 75 - 16 and placed.fitted == 16
        assert placed.data_version == first.data_version  # still the fit on the 16 tiles
        old = dict(zip(first.tile_ids, first.xy.tolist(), strict=True))
        now = dict(zip(placed.tile_ids, placed.xy.tolist(), strict=True))
        assert all(np.allclose(now[t], old[t]) for t in old)  # fitted points do not move
        cached = project(cache, grown, params)
        assert cached.cached and cached.transformed == 0
        np.testing.assert_allclose(cached.xy, placed.xy, rtol=1e-6)
        # The default ratio refits when the new tiles outnumber half of the fitted ones.
        refit = project(cache, grown, replace(params, refit_ratio=0.5))
        assert refit.cached  # everything is placed already: no refit needed
        forced = project(cache, grown, params, refit=True)
        assert forced.fitted == 75 and forced.data_version != first.data_version


def test_pca_projection_cache_hit_and_transform(tmp_path: Path, virginia: SceneSource) -> None:
    _grow_and_project(
        tmp_path / "c.duckdb", virginia, ProjectionParams(method="pca", refit_ratio=10)
    )


def test_new_tiles_beyond_the_ratio_trigger_a_refit(tmp_path: Path, virginia: SceneSource) -> None:
    db = tmp_path / "c.duckdb"
    embed_test_vit(db, virginia, VIRGINIA_SMALL_BBOX)
    params = ProjectionParams(method="pca")
    with EmbeddingCache(db) as cache:
        project(cache, resolve_scope(cache, "test-vit", source_id="demo/virginia"), params)
    embed_test_vit(db, virginia, WIDE_BBOX)
    with EmbeddingCache(db) as cache:
        scope = resolve_scope(cache, "test-vit", source_id="demo/virginia")
        result = project(cache, scope, params)
        assert result.fitted == 75 and result.transformed == 0 and not result.cached


def test_too_few_tiles_is_a_clear_error() -> None:
    with pytest.raises(SoftMapError, match="at least 4"):
        fit_reducer(np.ones((3, 8), dtype=np.float32), ProjectionParams(method="pca"))


@pytest.mark.slow
def test_umap_cache_hit_transform_and_seed(tmp_path: Path, virginia: SceneSource) -> None:
    assert warm_up(n=200) > 0
    params = ProjectionParams(n_epochs=30, n_neighbors=8, refit_ratio=10)
    _grow_and_project(tmp_path / "c.duckdb", virginia, params)
    # Seeded: the same fit twice gives the same coordinates.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 48)).astype(np.float32)
    _, a = fit_reducer(x, params)
    _, b = fit_reducer(x, params)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_cli_project(
    tmp_path: Path, virginia: SceneSource, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.duckdb"
    embed_test_vit(db, virginia, VIRGINIA_SMALL_BBOX)
    out_file = tmp_path / "xy.parquet"
    args = ["project", "--model", "test-vit", "--method", "pca", "--db", str(db), "--json"]
    assert main([*args, "--points", "--out", str(out_file)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["tiles"] == 16 and not first["cached"] and len(first["points"]) == 16
    assert first["file"]["rows"] == 16 and out_file.exists()
    assert main([*args, "--bbox", VIRGINIA_SMALL_BBOX]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["scope"]["kind"] == "region" and second["tiles"] == 16
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is True
    assert main([*args[:-1], "--source", "demo/brandenburg"]) == 2
    assert "demo/brandenburg" in capsys.readouterr().err


def test_knn_index_matches_brute_force_and_survives_pickling() -> None:
    import pickle

    from backend.analysis.projection import KnnIndex

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 16))[rng.integers(0, 20, 600)] + 0.3 * rng.normal(size=(600, 16))
    x = x.astype(np.float32)
    index = KnnIndex(x)
    keys, dists = index.self_neighbours(10)
    assert (keys[:, 0] == np.arange(600)).all() and (dists[:, 0] == 0).all()
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    truth = np.argsort(d, axis=1)[:, :10]
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(keys, truth, strict=True)])
    assert hits > 0.95
    np.testing.assert_allclose(dists[:, 1:], np.take_along_axis(d, keys, 1)[:, 1:], rtol=1e-4)
    again = pickle.loads(pickle.dumps(index))  # the graph is not pickled, only the data
    assert again._graph is None
    q_keys, q_dists = again.query(x[:5] + 0.001, 3)
    assert q_keys[:, 0].tolist() == [0, 1, 2, 3, 4] and q_dists.shape == (5, 3)


def test_jit_cache_is_on_for_umaps_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.analysis import projection

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("SOFTMAP_JIT_CACHE_DIR", str(tmp_path / "jit"))
    from backend.settings import get_settings

    get_settings.cache_clear()
    assert projection.configure_jit_cache() == tmp_path / "jit"
    assert (tmp_path / "jit").is_dir()
    umap = projection.import_umap()
    from numba.core.caching import NullCache

    for jitted in (umap.umap_.smooth_knn_dist, umap.umap_.compute_membership_strengths):
        assert not isinstance(jitted._cache, NullCache)  # compiled once, then loaded from disk
    monkeypatch.delenv("SOFTMAP_JIT_CACHE_DIR")
    get_settings.cache_clear()
    assert projection.jit_cache_dir().name in ("softmap-jit-cache", "jit-cache")
