"""Land-cover heads and maps on the real Brandenburg scene with its OSM labels and test-vit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.cli import main
from backend.errors import UnknownHeadError
from backend.imagery.regions import parse_bbox
from backend.imagery.sources import SceneSource
from backend.landcover.heads import fit_linear_softmax, spatial_split
from backend.landcover.labels import DW_CLASSES
from backend.landcover.maps import (
    LandCoverResult,
    fit_head,
    predict_landcover,
    resolve_head,
    stored_predictions,
)
from backend.landcover.render import render_landcover
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

from .conftest import BRANDENBURG_SMALL_BBOX


@pytest.fixture(scope="module")
def mapped(
    tmp_path_factory: pytest.TempPathFactory, brandenburg: SceneSource
) -> tuple[LandCoverResult, Path]:
    db = tmp_path_factory.mktemp("lc") / "cache.duckdb"
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=16)
    settings = Settings(db_path=db, offline=True)
    with EmbeddingCache(db) as cache:
        result = predict_landcover(
            parse_bbox(BRANDENBURG_SMALL_BBOX), brandenburg, model, cache,
            engine=engine, settings=settings,
        )  # fmt: skip
    return result, db


def test_bundled_head_for_test_vit_loads() -> None:
    head = resolve_head(None, "test-vit")
    assert head.bundled and head.head_id == "test-vit@osm-brandenburg"
    assert head.tile.weight.shape == (9, 48) and head.token is not None and head.token_grid == 8
    assert head.mapping == "osm-brandenburg" and len(head.preprocessing_hash) == 16
    tile = head.metrics["tile"]
    assert tile["n_test"] > 0 and 0 <= tile["mAP"] <= 1 and 0 <= tile["top1"] <= 1
    assert head.training["source"] == "demo/brandenburg"


def test_probabilities_sum_to_one_and_are_reused(
    mapped: tuple[LandCoverResult, Path], brandenburg: SceneSource
) -> None:
    result, db = mapped
    n = len(result.tile_ids)
    assert n >= 4 and result.probabilities.shape == (n, 9) and result.predicted == n
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert result.token_probabilities is not None
    assert result.token_probabilities.shape == (n, 9, 8, 8)
    np.testing.assert_allclose(result.token_probabilities.sum(axis=1), 1.0, rtol=1e-5)
    model = create_model("test-vit")
    with EmbeddingCache(db) as cache:
        stored = stored_predictions(cache, "test-vit", list(result.tile_ids))
        again = predict_landcover(
            parse_bbox(BRANDENBURG_SMALL_BBOX), brandenburg, model, cache,
            engine=EmbeddingEngine(model, device="cpu"),
        )  # fmt: skip
    assert stored.head_id == "test-vit@osm-brandenburg" and stored.tile_ids == result.tile_ids
    np.testing.assert_allclose(stored.probabilities, result.probabilities, rtol=1e-6)
    assert again.predicted == 0 and again.embed.computed == 0
    np.testing.assert_allclose(again.token_probabilities, result.token_probabilities, rtol=1e-6)


def test_expected_areas_add_up_to_the_region(mapped: tuple[LandCoverResult, Path]) -> None:
    result, _ = mapped
    region = parse_bbox(BRANDENBURG_SMALL_BBOX)
    assert [a.name for a in result.areas] == list(DW_CLASSES)
    total = sum(a.expected_km2 for a in result.areas)
    assert total == pytest.approx(region.area_km2, rel=1e-3)
    assert result.region_km2 == pytest.approx(region.area_km2, rel=1e-3)
    for a in result.areas:
        assert 0 <= a.low_km2 <= a.expected_km2 <= a.high_km2 <= result.region_km2 + 1e-9
    # Areas come from what the map shows: the sub-tile cells, each painted in one class.
    g = result.token_probabilities.shape[-1] if result.token_probabilities is not None else 1
    assert sum(a.tiles_dominant for a in result.areas) == len(result.tile_ids) * g * g
    assert sum(a.map_km2 or 0 for a in result.areas) + result.unlike_km2 == pytest.approx(
        result.region_km2, rel=1e-3
    )


def test_cog_is_valid_and_georeferenced(
    mapped: tuple[LandCoverResult, Path], brandenburg: SceneSource, tmp_path: Path
) -> None:
    result, _ = mapped
    path = result.write_cog(tmp_path / "lc.tif")
    rows = [int(t.rsplit("/", 1)[1].split("_")[0]) for t in result.tile_ids]
    cols = [int(t.rsplit("/", 1)[1].split("_")[1]) for t in result.tile_ids]
    with rasterio.open(path) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.count == 13 and ds.crs.to_string() == brandenburg.crs
        assert ds.descriptions[:2] == ("p_water", "p_trees")
        assert ds.descriptions[9:] == ("dominant", "confidence", "entropy", "unlike_score")
        origin = brandenburg.grid.affine @ (min(cols) * 112, min(rows) * 112)
        assert ds.transform.a == 140 and ds.transform.e == -140  # 8×8 tokens of 14 px
        assert (ds.transform.c, ds.transform.f) == pytest.approx(origin)
        assert ds.width == (max(cols) - min(cols) + 1) * 8
        assert json.loads(ds.tags()["CLASSES"]) == list(DW_CLASSES)
        data = ds.read()
    probs = data[:9]
    valid = np.isfinite(probs).all(axis=0)
    assert valid.mean() > 0.5
    np.testing.assert_allclose(probs[:, valid].sum(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(data[9][valid], probs[:, valid].argmax(axis=0))
    np.testing.assert_allclose(data[10][valid], probs[:, valid].max(axis=0), rtol=1e-6)
    assert (data[11][valid] >= 0).all() and (data[11][valid] <= np.log(9) + 1e-5).all()


def test_render_gives_rgba_in_lonlat(mapped: tuple[LandCoverResult, Path]) -> None:
    result, _ = mapped
    for mode, cls in (("dominant", None), ("probability", 4), ("entropy", None)):
        preview = render_landcover(result.probability_raster(), mode, cls)  # type: ignore[arg-type]
        assert preview.rgba.dtype == np.uint8 and preview.rgba.shape[2] == 4
        assert (preview.rgba[..., 3] > 0).mean() > 0.5
        w, s, e, n = preview.bounds
        rw, rs, re_, rn = parse_bbox(BRANDENBURG_SMALL_BBOX).bounds
        assert w <= rw + 0.01 and e >= re_ - 0.01 and s <= rs + 0.01 and n >= rn - 0.01
        assert e - w < 0.1


def test_spatial_split_has_no_neighbours_across() -> None:
    rows, cols = np.meshgrid(np.arange(12), np.arange(15), indexing="ij")
    train, test = spatial_split(rows.ravel(), cols.ravel(), seed=3)
    assert train.any() and test.any() and not (train & test).any()
    tr = set(zip(rows.ravel()[train], cols.ravel()[train], strict=True))
    for r, c in zip(rows.ravel()[test], cols.ravel()[test], strict=True):
        assert not any((r + dr, c + dc) in tr for dr in (-1, 0, 1) for dc in (-1, 0, 1))


def test_linear_softmax_learns_soft_targets() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    logits = x @ rng.normal(size=(5, 9)) * 2
    y = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    head = fit_linear_softmax(x, y, weight_decay=1e-4)
    p = head.predict(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert (p.argmax(axis=1) == y.argmax(axis=1)).mean() > 0.9


def test_fit_head_stores_it_in_the_cache(
    brandenburg: SceneSource, db_path: Path, tmp_path: Path
) -> None:
    model = create_model("test-vit")
    settings = Settings(db_path=db_path, assets_dir=tmp_path / "assets", offline=True)
    with EmbeddingCache(db_path) as cache:
        fit = fit_head(
            brandenburg, model, cache, engine=EmbeddingEngine(model, device="cpu"),
            settings=settings, tokens=False, region=parse_bbox("12.49,52.45,12.61,52.53"),
        )  # fmt: skip
        assert fit.stored == "cache" and fit.head.token is None
        assert fit.head.training["labelled_tiles"] >= 20
        assert fit.head.metrics["tile"]["n_test"] > 0
        # A fitted head is preferred over the bundled one, and can be chosen by id.
        assert resolve_head(cache, "test-vit", settings=settings).head_id == fit.head.head_id
        with pytest.raises(UnknownHeadError, match="softcon"):
            resolve_head(cache, "softcon-vits14-s2", fit.head.head_id, settings)


def test_cli_json_and_errors(
    brandenburg: SceneSource, db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "map.tif"
    base = ["landcover", "--source", "demo/brandenburg", "--model", "test-vit",
            "--db", str(db_path), "--quiet"]  # fmt: skip
    assert main([*base, "--bbox", BRANDENBURG_SMALL_BBOX, "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["tiles"] >= 4 and payload["out"] == str(out) and out.exists()
    assert payload["head"]["head_id"] == "test-vit@osm-brandenburg"
    assert {a["class"] for a in payload["areas"]} == set(DW_CLASSES)
    crops = next(a for a in payload["areas"] if a["class"] == "crops")
    assert crops["low_km2"] <= crops["expected_km2"] <= crops["high_km2"]
    assert sum(a["expected_km2"] for a in payload["areas"]) == pytest.approx(
        payload["region_km2"], rel=1e-3
    )

    assert main([*base, "--bbox", BRANDENBURG_SMALL_BBOX, "--head", "nope"]) == 2
    assert "Unknown land-cover head" in capsys.readouterr().err
    assert main([*base, "--bbox", "-75.66,37.64,-75.625,37.67"]) == 2
    assert "outside" in capsys.readouterr().err.lower()
    fit = ["landcover", "fit", "--source", "demo/brandenburg", "--model", "test-vit",
           "--db", str(db_path), "--labels", str(out), "--mapping", "corine"]  # fmt: skip
    assert main(fit) == 2
    err = capsys.readouterr().err
    assert "Unknown class mapping" in err and "esa-worldcover" in err
    assert main(["landcover", "--model", "test-vit", "--source", "demo/brandenburg"]) == 2
    assert "--bbox" in capsys.readouterr().err
