"""Land cover you can trust: spectral rules, reference polygons, one source of truth for areas,
out-of-distribution scores, held-out evaluation and ESA WorldCover over range requests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from backend.cli import main
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource
from backend.landcover.areas import map_areas
from backend.landcover.evaluation import evaluate_landcover
from backend.landcover.features import fit_ood
from backend.landcover.labels import DW_CLASSES, N_CLASSES, NO_LABEL
from backend.landcover.maps import UNLIKE_VALUE, fit_head, predict_landcover, resolve_head
from backend.landcover.reference import (
    BUFFER_M,
    ReferenceLabeler,
    block_split,
    reference_polygons,
)
from backend.landcover.spectral import (
    FEATURE_COLUMNS,
    FEATURE_NAMES,
    FEATURE_SET,
    SPECTRAL_V1,
    apply_water_rule,
    cell_features,
    pixel_rules,
    stack_reflectance,
)
from backend.landcover.worldcover import (
    WorldCoverUnavailableError,
    fetch_worldcover,
    tile_name,
    tiles_for,
)
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

from .conftest import BRANDENBURG_SMALL_BBOX
from .stac_server import StacTestServer

WATER, TREES, FLOODED, CROPS, BUILT = (
    DW_CLASSES.index(c) for c in ("water", "trees", "flooded_vegetation", "crops", "built")
)


def _rules_in(source: SceneSource, cls: int) -> list[tuple[float, float]]:
    """(water share, land share) inside each reference polygon of a class."""
    bands = ["B02", "B03", "B04", "B08", "B10", "B11"]
    out = []
    inv = ~source.grid.affine
    with SceneReader(source) as reader:
        for p in reference_polygons(source):
            if p.class_index != cls:
                continue
            x0, y0, x1, y1 = p.geometry.bounds
            c0, r0 = inv @ (x0, y1)
            c1, r1 = inv @ (x1, y0)
            win = PixelWindow(int(c0) + 1, int(r0) + 1, int(c1 - c0) - 2, int(r1 - r0) - 2)
            if win.width < 4 or win.height < 4:
                continue
            rules = pixel_rules(stack_reflectance(reader.read(win, bands), bands, 1e-4))
            out.append((float(rules.water.mean()), float(rules.land.mean())))
    return out


def test_water_rule_finds_sea_and_lakes_but_not_forest_fields_or_towns(
    virginia: SceneSource, brandenburg: SceneSource
) -> None:
    # Open sea and lagoons; the Beetzsee was partly frozen on 2017-02-16 (ice with snow on it
    # fails the NIR or SWIR test and is left to the head).
    for scene, least in ((virginia, 0.95), (brandenburg, 0.6)):
        water = _rules_in(scene, WATER)
        assert water and np.median([w for w, _ in water]) > least
        for cls, most in ((TREES, 0.05), (CROPS, 0.05), (BUILT, 0.1)):  # villages on the lake
            shares = _rules_in(scene, cls)
            assert shares and max(w for w, _ in shares) < most, (scene.id, DW_CLASSES[cls])
    # The dormant salt marsh is wet but not open water: only its creeks pass the SWIR test.
    marsh = _rules_in(virginia, FLOODED)
    assert marsh and np.median([w for w, _ in marsh]) < 0.6


def test_snow_needs_brightness_and_nir_and_cloud_is_excluded() -> None:
    def px(**bands: float) -> dict[str, np.ndarray]:
        base = {"B02": 0.05, "B03": 0.05, "B04": 0.04, "B08": 0.3, "B11": 0.2, "B10": 0.001}
        base.update(bands)
        return {k: np.full((1, 1), v, np.float32) for k, v in base.items()}

    snow = pixel_rules(px(B02=0.12, B03=0.8, B04=0.75, B08=0.7, B11=0.1))
    assert snow.snow.all() and not snow.water.any()
    water = pixel_rules(px(B02=0.12, B03=0.1, B04=0.07, B08=0.03, B11=0.006))
    assert water.water.all() and not water.snow.any()
    dark_lake_ice = pixel_rules(px(B02=0.1, B03=0.3, B04=0.25, B08=0.08, B11=0.01))
    assert dark_lake_ice.water.all()  # NIR under the snow test: a lake, not snow
    haze = pixel_rules(px(B02=0.3, B03=0.28, B04=0.26, B08=0.3, B11=0.25))
    assert haze.cloud.all() and not haze.clear.any()
    cirrus = pixel_rules(px(B10=0.03))
    assert cirrus.cloud.all()
    nodata = pixel_rules(px(B03=0.0))
    assert not nodata.valid.any() and not nodata.water.any()


def test_water_rule_decides_only_the_unambiguous_share() -> None:
    p = np.array([[0.1, 0.2, 0, 0, 0.7, 0, 0, 0, 0]] * 3, np.float32)
    f = np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.25, 0.25]], np.float32)
    out = apply_water_rule(p, f)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-6)
    assert out[0, WATER] == pytest.approx(1.0)
    assert out[1, WATER] == pytest.approx(0.0) and out[1, CROPS] == pytest.approx(0.7 / 0.9)
    assert out[2, WATER] == pytest.approx(0.5 + 0.25 * 0.1)


def test_reference_polygons_have_every_class_on_both_sides_and_never_touch(
    virginia: SceneSource, brandenburg: SceneSource
) -> None:
    counts: dict[tuple[int, str], int] = {}
    for scene in (virginia, brandenburg):
        polys = reference_polygons(scene)
        assert all(p.method and p.date == scene.date for p in polys)
        train = [p.geometry for p in polys if p.split == "train"]
        evals = [p.geometry for p in polys if p.split == "eval"]
        for e in evals:
            assert min(e.distance(t) for t in train) >= BUFFER_M - 1
        for p in polys:
            counts[(p.class_index, p.split)] = counts.get((p.class_index, p.split), 0) + 1
    for cls in (WATER, TREES, FLOODED, CROPS, BUILT):
        assert counts.get((cls, "train"), 0) >= 3 and counts.get((cls, "eval"), 0) >= 2
    assert block_split(0, 0) == "eval" and block_split(0, 1) == "train"


def test_precedence_water_beats_polygons_and_eval_blocks_stay_unlabelled(
    virginia: SceneSource,
) -> None:
    sea = next(p for p in reference_polygons(virginia, "eval") if p.class_index == WATER)
    inv = ~virginia.grid.affine
    x0, _, _, y1 = sea.geometry.bounds
    c, r = inv @ (x0, y1)
    win = PixelWindow(int(c) + 8, int(r) + 8, 64, 64)
    with ReferenceLabeler(virginia) as lab:
        ev = lab.labels(win, "eval")
        tr = lab.labels(win, "train")
    labelled = ev != NO_LABEL
    assert labelled.mean() > 0.5 and (ev[labelled] == WATER).mean() > 0.99
    assert (tr == NO_LABEL).all()  # an eval block: no training label at all


def test_map_areas_count_what_the_map_paints_and_unlike_apart() -> None:
    p = np.array([[0.6, 0.4] + [0] * 7, [0.2, 0.8] + [0] * 7, [0.9, 0.1] + [0] * 7], np.float32)
    a = np.array([1.0, 2.0, 3.0])
    out = map_areas(p, a, DW_CLASSES, np.array([False, False, True]))
    assert out.unlike_km2 == 3.0 and out.total_km2 == 6.0
    assert out.classes[0].map_km2 == 1.0 and out.classes[1].map_km2 == 2.0
    assert sum(c.share for c in out.classes) + out.unlike_share == pytest.approx(1.0)
    assert out.classes[0].expected_km2 == pytest.approx(0.6 + 0.4)


def test_ood_score_flags_what_is_far_from_the_training_data() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 20)).astype(np.float32)
    held = rng.normal(size=(200, 20)).astype(np.float32)
    ood = fit_ood(train, held, components=8)
    assert (ood.score(held) <= 1.0).mean() >= 0.99
    assert (ood.score(held + 12.0) > 1.0).all()


@pytest.fixture(scope="module")
def brandenburg_map(
    tmp_path_factory: pytest.TempPathFactory, brandenburg: SceneSource
) -> tuple[object, Path]:
    """The bundled softmap-default head over the whole Brandenburg scene."""
    db = tmp_path_factory.mktemp("lcref") / "cache.duckdb"
    model = create_model("softmap-default")
    engine = EmbeddingEngine(model, device="cpu", batch_size=32)
    settings = Settings(db_path=db, offline=True)
    with EmbeddingCache(db) as cache:
        result = predict_landcover(
            Region(brandenburg.footprint_lonlat), brandenburg, model, cache,
            engine=engine, settings=settings,
        )  # fmt: skip
    return result, db


def test_bundled_head_is_the_reference_head_with_water_rule_and_ood() -> None:
    head = resolve_head(None, "softmap-default")
    assert head.head_id == "softmap-default@reference" and head.water_rule
    assert head.features == "spectral-v2" and {"tile", "token"} <= set(head.ood)
    assert head.metrics["token"]["top1"] > 0.93
    assert head.training["sources"] == ["demo/virginia", "demo/brandenburg"]
    # The map on the held-out polygons: towns come out built, and nothing else is traded away.
    pixels = head.metrics["pixels"]
    assert pixels["overall_accuracy"] > 0.95
    got = {c["class"]: c for c in pixels["classes"]}
    assert got["built"]["recall"] > 0.6 and got["built"]["precision"] > 0.8
    assert got["water"]["recall"] > 0.98 and got["trees"]["recall"] > 0.95
    assert got["crops"]["recall"] > 0.85 and got["crops"]["precision"] > 0.85


def test_texture_features_separate_a_town_from_a_field_and_old_heads_read_their_prefix() -> None:
    rng = np.random.default_rng(0)
    field = {b: np.full((1, 64, 64), v, np.float32) for b, v in
             (("B02", 0.05), ("B03", 0.07), ("B04", 0.06), ("B08", 0.3), ("B11", 0.2),
              ("B12", 0.1), ("B10", 0.001))}  # fmt: skip
    town = {b: v * rng.uniform(0.5, 1.5, v.shape).astype(np.float32) for b, v in field.items()}
    f, t = cell_features(field, 8), cell_features(town, 8)
    assert f.shape == t.shape == (1, 8, 8, len(FEATURE_NAMES))
    tex = slice(len(SPECTRAL_V1), len(FEATURE_NAMES))
    assert np.abs(f[..., tex]).max() < 1e-3 < t[..., tex].min()
    assert FEATURE_COLUMNS["spectral-v1"] == len(SPECTRAL_V1) == 15
    assert FEATURE_COLUMNS[FEATURE_SET] == len(FEATURE_NAMES)


def test_table_share_equals_the_share_on_the_written_cog(
    brandenburg_map: tuple[object, Path], tmp_path: Path
) -> None:
    result, _ = brandenburg_map
    path = result.write_cog(tmp_path / "lc.tif")  # type: ignore[attr-defined]
    with rasterio.open(path) as ds:
        dominant = ds.read(10)
        assert ds.tags()["LEGEND"].count("Unlike the training data") == 1
    painted = dominant[np.isfinite(dominant)].astype(int)
    assert len(painted) == len(result.tile_ids) * 64  # type: ignore[attr-defined]
    for a in result.areas:  # type: ignore[attr-defined]
        cog_share = float((painted == a.class_id).mean())
        assert abs(a.share - cog_share) <= 0.02, a.name
    cog_unlike = float((painted == UNLIKE_VALUE).mean())
    assert abs(result.unlike_share - cog_unlike) <= 0.02  # type: ignore[attr-defined]
    # Farmland dominates the Havelland: the map and table say so, and lakes are water.
    by_name = {a.name: a for a in result.areas}  # type: ignore[attr-defined]
    assert by_name["crops"].share > 0.4 and 0.03 < by_name["water"].share < 0.15


def test_held_out_evaluation_reads_like_a_confusion_matrix(
    brandenburg_map: tuple[object, Path], brandenburg: SceneSource
) -> None:
    _, db = brandenburg_map
    model = create_model("softmap-default")
    with EmbeddingCache(db) as cache:
        ev = evaluate_landcover(
            [brandenburg], model, cache, settings=Settings(db_path=db, offline=True)
        )
    out = ev.to_json()
    assert ev.confusion.shape == (N_CLASSES, N_CLASSES + 1) and ev.pixels > 10_000
    assert ev.accuracy is not None and ev.accuracy > 0.8
    rows = dict(zip(out["confusion"]["rows"], out["confusion"]["pixels"], strict=True))
    water = rows["water"]
    assert water[out["confusion"]["columns"].index("water")] / sum(water) > 0.9
    assert {c["class"] for c in out["classes"]} >= {"water", "trees", "crops", "built"}


# --- ESA WorldCover over range requests -------------------------------------------------------
def _worldcover_cog(folder: Path) -> Path:
    """A WorldCover-shaped COG (EPSG:4326, 1/12000°, WorldCover classes) named like tile N51E012."""
    res = 1 / 12000
    west, north = 12.50, 52.53
    w, h = int(0.2 / res), int(0.09 / res)
    data = np.full((h, w), 40, np.uint8)  # cropland
    data[:, : int(w * 0.55)] = 10  # tree cover west of 12.61° E
    data[: int(h * 0.45), :] = 80  # permanent water north of 52.49° N
    path = folder / "ESA_WorldCover_10m_2021_v200_N51E012_Map.tif"
    with rasterio.open(
        path, "w", driver="COG", width=w, height=h, count=1, dtype="uint8", crs="EPSG:4326",
        transform=from_origin(west, north, res, res), nodata=0, blocksize=256,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
    return path


def test_worldcover_tiles_are_named_by_their_south_west_corner() -> None:
    assert tile_name(37.7, -75.6) == "N36W078" and tile_name(52.5, 12.6) == "N51E012"
    assert tile_name(-0.5, -0.5) == "S03W003"
    assert tiles_for((-75.73, 37.58, -75.5, 37.76)) == ["N36W078"]
    assert tiles_for((11.9, 50.9, 12.1, 51.1)) == ["N48E009", "N48E012", "N51E009", "N51E012"]


def test_worldcover_over_a_loopback_range_server_fits_a_head(
    tmp_path: Path, brandenburg: SceneSource
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    cog = _worldcover_cog(served)
    server = StacTestServer(served).start()
    try:
        region = parse_bbox("12.57,52.465,12.65,52.505")  # about 5.4 × 4.4 km: 20 tiles
        raster = fetch_worldcover(region, tmp_path / "wc", url=f"{server.url}/data", offline=True)
        assert server.range_requests > 0
        with rasterio.open(raster.path) as ds:
            values = set(np.unique(ds.read(1)).tolist())
        assert {10, 40, 80} <= values and raster.mapping == "esa-worldcover"
        model = create_model("test-vit")
        settings = Settings(db_path=tmp_path / "c.duckdb", offline=True)
        with EmbeddingCache(settings.db_path) as cache:
            fit = fit_head(
                brandenburg, model, cache, region=region, labels=raster,
                mapping="esa-worldcover", settings=settings, tokens=False,
                engine=EmbeddingEngine(model, device="cpu", batch_size=16),
            )  # fmt: skip
        assert fit.head.mapping == "esa-worldcover" and fit.head.training["labelled_tiles"] >= 12
    finally:
        server.stop()
    assert cog.stat().st_size > 0


def test_worldcover_offline_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(WorldCoverUnavailableError, match="offline"):
        fetch_worldcover(parse_bbox(BRANDENBURG_SMALL_BBOX), tmp_path, offline=True)
    code = main(
        ["landcover", "fit", "--labels", "worldcover", "--source", "demo/brandenburg",
         "--model", "test-vit", "--bbox", BRANDENBURG_SMALL_BBOX,
         "--db", str(tmp_path / "c.duckdb")]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "offline" in err[0]


def test_cli_fits_a_reference_head_on_embedding_plus_bands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.duckdb")
    code = main(
        ["landcover", "fit", "--labels", "reference", "--source", "demo/brandenburg",
         "--model", "test-vit", "--features", "embedding+bands", "--db", db, "--json", "--quiet"]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["training"]["features"] == f"embedding + {FEATURE_SET}"
    assert out["head_id"].startswith("test-vit@reference-") and out["stored"] == "cache"
    assert out["uses_embedding"] and out["dim"] > len(FEATURE_NAMES)
    # The option belongs to the reference labels only, and says so in one line.
    code = main(
        ["landcover", "fit", "--labels", "worldcover", "--source", "demo/brandenburg",
         "--model", "test-vit", "--features", "bands", "--db", db]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--features" in err[0]


def test_a_refitted_bundled_head_does_not_serve_the_maps_of_the_one_it_replaced(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from backend.landcover.store import (
        forget_stale_predictions,
        stored_predictions,
        write_predictions,
    )

    head = resolve_head(None, "softmap-default")
    probs = np.full((2, N_CLASSES), 1 / N_CLASSES, np.float32)
    with EmbeddingCache(tmp_path / "c.duckdb") as cache:
        ensure = stored_predictions(cache, head.model_id, ["a"], head.head_id)  # creates tables
        assert not ensure.tile_ids
        write_predictions(cache, "landcover_predictions", head, ["a", "b"], probs)
        forget_stale_predictions(cache, head)  # written after this head: kept
        assert len(stored_predictions(cache, head.model_id, ["a", "b"], head.head_id).tile_ids) == 2
        refit = replace(head, created_at="2999-01-01T00:00:00+00:00")
        forget_stale_predictions(cache, refit)
        assert not stored_predictions(cache, head.model_id, ["a", "b"], head.head_id).tile_ids
