"""Fused S2 + S1 embedding sets: the combination, tile matching, fallbacks, and use downstream.

Most tests run on the six real BigEarthNet S2/S1 pairs of ../shared/data (skipped without it),
embedded with test-vit and test-vit-s1 (seeded random weights) on 56 px chips: 2 × 2 tiles per
1.2 km patch, 24 fused tiles. Random weights carry no meaning, so the tests check what fusion
guarantees (dimension, tiles, partners, the score identity, fallbacks), not semantic quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from backend.cli import main
from backend.embedding.fusion import (
    FusionSpec,
    fuse_vectors,
    fused_model_id,
    split_fused_model_id,
)
from backend.errors import (
    BandMismatchError,
    NotFoundError,
    RegionOutsideSourceError,
    SoftMapError,
)
from backend.imagery.bigearthnet import read_patch_metadata
from backend.search.index import normalise
from backend.search.query import model_sets
from backend.service import (
    AddSourceRequest,
    FuseRequest,
    RegionSpec,
    SearchRequest,
    Workspace,
    add_source,
    find_similar,
    fuse_region,
    fusion_choices,
    tile_coverage,
)
from backend.service.classes import ClassifyRequest, ScopeRequest, TileSelection, add_labels
from backend.service.classes import classify as classify_scope
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from backend.store.scopes import resolve_scope

S2_MODEL, S1_MODEL = "test-vit", "test-vit-s1"
FUSED = fused_model_id(S2_MODEL, S1_MODEL)
CHIP = 56


def _ws(db: Path) -> Workspace:
    return Workspace(Settings(db_path=db, models_dir=db.parent / "models", offline=True))


def _sid(folder: Path) -> str:
    return "ben/" + folder.name.lower()


@pytest.fixture(scope="module")
def fused_db(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All twelve patches registered, each S2 patch fused with its S1 partner."""
    db = tmp_path_factory.mktemp("fusion") / "fused.duckdb"
    ws = _ws(db)
    folders = sorted((shared_data / "bigearthnet_s1_examples").glob("S1*")) + sorted(
        (shared_data / "bigearthnet_s2_examples").glob("S2*")
    )
    for folder in folders:
        add_source(ws, AddSourceRequest(path=folder, source_id=_sid(folder)))
    for folder in folders[6:]:
        out = fuse_region(
            ws, FuseRequest(source=_sid(folder), s2_model=S2_MODEL, s1_model=S1_MODEL, chip=CHIP)
        )
        assert (len(out.fusion.matches), out.fusion.count("both")) == (4, 4)
    return db


def _partners(shared_data: Path) -> dict[str, str]:
    """S2 source id → S1 source id, from the S1 patches' own metadata (not used by pairing)."""
    out = {}
    for folder in sorted((shared_data / "bigearthnet_s1_examples").glob("S1*")):
        meta = read_patch_metadata(next(folder.glob("*_labels_metadata.json")))
        assert meta.partner is not None
        out["ben/" + meta.partner.lower()] = _sid(folder)
    return out


def _unit_set(cache: EmbeddingCache, model_id: str) -> dict[str, np.ndarray]:
    eset = model_sets(cache, model_id)[0]
    ids, x = cache.embeddings(eset)
    return dict(zip(ids, normalise(x), strict=True))


# --- the combination ------------------------------------------------------------------------
def test_fused_vectors_are_unit_and_their_cosine_is_the_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    a2, b2 = rng.normal(size=(2, 5, 48)).astype(np.float32) * np.array([3.0, 0.2])[:, None, None]
    a1, b1 = rng.normal(size=(2, 5, 32)).astype(np.float32) * 7
    for w in (0.0, 0.3, 0.5, 1.0):
        fa, fb = fuse_vectors(a2, a1, w), fuse_vectors(b2, b1, w)
        assert fa.shape == (5, 80)
        np.testing.assert_allclose(np.linalg.norm(fa, axis=1), 1, atol=1e-6)
        cos2 = (normalise(a2) * normalise(b2)).sum(1)
        cos1 = (normalise(a1) * normalise(b1)).sum(1)
        np.testing.assert_allclose((fa * fb).sum(1), (1 - w) * cos2 + w * cos1, atol=1e-6)
    s2_only = fuse_vectors(a2, None, 0.5, s1_dim=32)
    s1_only = fuse_vectors(None, a1, 0.5, s2_dim=48)
    assert np.all(s2_only[:, 48:] == 0) and np.all(s1_only[:, :48] == 0)
    assert np.all((s2_only * s1_only).sum(1) == 0)  # nothing in common, nothing claimed
    both = fuse_vectors(a2, a1, 0.5)
    np.testing.assert_allclose((both * s2_only).sum(1), np.sqrt(0.5), atol=1e-6)


def test_fusion_spec_and_ids() -> None:
    assert FUSED == "test-vit+test-vit-s1"
    assert split_fused_model_id(FUSED) == (S2_MODEL, S1_MODEL)
    assert split_fused_model_id("softcon-vits14-s2") is None
    spec = FusionSpec(S2_MODEL, S1_MODEL)
    assert spec.preprocessing_hash("a", "b") != spec.preprocessing_hash("a", "c")
    assert spec.preprocessing_hash("a", "b") != FusionSpec(
        S2_MODEL, S1_MODEL, 0.3
    ).preprocessing_hash("a", "b")
    with pytest.raises(SoftMapError, match="share in 0…1"):
        FusionSpec(S2_MODEL, S1_MODEL, s1_weight=1.5)


# --- on the six real pairs ------------------------------------------------------------------
def test_fused_set_has_both_dimensions_and_every_paired_tile(
    fused_db: Path, shared_data: Path
) -> None:
    partners = _partners(shared_data)
    with EmbeddingCache(fused_db, read_only=True) as cache:
        (eset,) = model_sets(cache, FUSED)
        assert eset.dim == 48 + 48
        fused = _unit_set(cache, FUSED)
        s2 = _unit_set(cache, S2_MODEL)
        s1 = _unit_set(cache, S1_MODEL)
    assert len(fused) == 24 and set(fused) == set(s2)  # the S2 tiles, by their ids
    coverage = tile_coverage(_ws(fused_db), FUSED)
    assert set(coverage) == set(fused)
    for tile_id, match in coverage.items():
        assert match.coverage == "both" and match.overlap == pytest.approx(1.0)
        s2_source = tile_id.rsplit("/", 3)[0]
        # The S1 half comes from the partner the patch's own metadata names, same grid cell.
        assert match.s1_tile_id == partners[s2_source] + tile_id[len(s2_source) :]
        expected = np.concatenate([np.sqrt(0.5) * s2[tile_id], np.sqrt(0.5) * s1[match.s1_tile_id]])
        np.testing.assert_allclose(fused[tile_id], expected, atol=1e-5)


def test_search_over_the_fused_set_agrees_with_both_sensors(fused_db: Path) -> None:
    ws = _ws(fused_db)
    coverage = tile_coverage(ws, FUSED)
    with EmbeddingCache(fused_db, read_only=True) as cache:
        s2, s1 = _unit_set(cache, S2_MODEL), _unit_set(cache, S1_MODEL)
    for query in sorted(coverage)[::5]:
        res = find_similar(
            ws, SearchRequest(model=FUSED, tiles=(query,), k=23, suppress=False, engine="exact")
        )
        assert len(res.results) == 23 and query not in {r.tile_id for r in res.results}
        q1 = coverage[query].s1_tile_id
        for r in res.results:
            r1 = coverage[r.tile_id].s1_tile_id
            expected = 0.5 * float(s2[query] @ s2[r.tile_id]) + 0.5 * float(s1[q1] @ s1[r1])
            assert r.score == pytest.approx(expected, abs=1e-4)
        scores = [r.score for r in res.results]
        assert scores == sorted(scores, reverse=True)
    # A point query finds the fused tile under it, like any other set.
    res = find_similar(ws, SearchRequest(model=FUSED, point=(30.60, 62.82), k=3))
    assert res.query_tile_ids[0].startswith("ben/s2b_msil2a_20170924t93020_69_24/56/56/")


def test_projection_and_user_classes_run_on_the_fused_set(fused_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    shutil.copy(fused_db, db)
    ws = _ws(db)
    with EmbeddingCache(db) as cache:
        scope = resolve_scope(cache, FUSED)
        assert len(scope.tile_ids) == 24 and scope.eset.dim == 96
        from backend.analysis.projection import ProjectionParams, project

        xy = project(cache, scope, ProjectionParams(method="pca")).xy
        assert xy.shape == (24, 2) and np.isfinite(xy).all()
    finland = [t for t in scope.tile_ids if "35vpk" in t or "_69_24" in t or "_57_38" in t]
    others = [t for t in scope.tile_ids if t not in finland]
    assert len(finland) == 8
    add_labels(ws, "boreal", TileSelection(tiles=tuple(finland[:6]), model=FUSED))
    add_labels(ws, "boreal", TileSelection(tiles=tuple(others[:12]), model=FUSED), positive=False)
    out = classify_scope(ws, ClassifyRequest(name="boreal", scope=ScopeRequest(model=FUSED)))
    assert len(out.classification.tile_ids) == 24


def test_fallbacks_are_marked_when_the_radar_scene_is_shifted(
    shared_data: Path, tmp_path: Path
) -> None:
    """An S1 patch moved 600 m east: half its tiles have an S2 partner, half only radar."""
    folder = sorted((shared_data / "bigearthnet_s1_examples").glob("*33UUP_87_48"))[0]
    moved = tmp_path / "S1A_moved_20170613"
    moved.mkdir()
    for pol in ("VV", "VH"):
        with rasterio.open(folder / f"{folder.name}_{pol}.tif") as ds:
            profile, data = ds.profile, ds.read()
        profile["transform"] = ds.transform @ Affine.translation(60, 0)  # 60 px = 600 m
        with rasterio.open(moved / f"moved_{pol}.tif", "w", **profile) as out:
            out.write(data)
    s2 = shared_data / "bigearthnet_s2_examples" / "S2A_MSIL2A_20170613T101031_87_48"
    ws = _ws(tmp_path / "moved.duckdb")
    add_source(ws, AddSourceRequest(path=s2, source_id="s2/austria"))
    add_source(ws, AddSourceRequest(path=moved, source_id="s1/moved"))
    req = FuseRequest(source="s2/austria", s2_model=S2_MODEL, s1_model=S1_MODEL, chip=CHIP)
    out = fuse_region(ws, req)
    f = out.fusion
    # S2 tiles (cols 0, 1) on x 0…560, 560…1120 m; S1 tiles on 600…1160, 1160…1720 m.
    assert (f.count("both"), f.count("s2"), f.count("s1")) == (2, 2, 2)
    cov = tile_coverage(ws, FUSED)
    assert {t for t, m in cov.items() if m.coverage == "s2"} == {
        "s2/austria/56/56/0_0", "s2/austria/56/56/1_0",
    }  # fmt: skip
    assert {t for t, m in cov.items() if m.coverage == "s1"} == {
        "s1/moved/56/56/0_1", "s1/moved/56/56/1_1",
    }  # fmt: skip
    paired = cov["s2/austria/56/56/0_1"]
    assert paired.s1_tile_id == "s1/moved/56/56/0_0" and paired.overlap == pytest.approx(
        52 / 56, abs=1e-4
    )
    with EmbeddingCache(ws.db_path, read_only=True) as cache:
        vectors = _unit_set(cache, FUSED)
    assert np.all(vectors["s2/austria/56/56/0_0"][48:] == 0)
    assert np.all(vectors["s1/moved/56/56/0_1"][:48] == 0)
    # From the radar side (its footprint is the region): the same tiles there, marked the same.
    again = fuse_region(ws, req.model_copy(update={"source": "s1/moved"}))
    assert sorted(again.fusion.tile_ids) == sorted(t for t in f.tile_ids if cov[t].coverage != "s2")
    assert tile_coverage(ws, FUSED) == cov
    # Removing the radar scene drops the fused rows it contributed to; the rest stay.
    assert main(["sources", "remove", "s1/moved", "--db", str(ws.db_path)]) == 0
    left = tile_coverage(ws, FUSED)
    assert sorted(left) == ["s2/austria/56/56/0_0", "s2/austria/56/56/1_0"]
    with pytest.raises(NotFoundError, match="No Sentinel-1 source pairs with s2/austria"):
        fuse_region(ws, req)


def test_wrong_models_and_dates_are_refused(fused_db: Path, tmp_path: Path) -> None:
    ws = _ws(fused_db)
    s2 = "ben/s2a_msil2a_20170613t101031_87_48"
    with pytest.raises(BandMismatchError, match="is a Sentinel-1 model"):
        fuse_region(ws, FuseRequest(source=s2, s2_model=S1_MODEL, s1_model=S1_MODEL))
    with pytest.raises(BandMismatchError, match="not a Sentinel-1 model"):
        fuse_region(ws, FuseRequest(source=s2, s2_model=S2_MODEL, s1_model=S2_MODEL))
    finland = FuseRequest(source="ben/s2b_msil2a_20170924t93020_69_24", s2_model=S2_MODEL,
                          s1_model=S1_MODEL, window_days=0)  # fmt: skip
    with pytest.raises(NotFoundError, match="within 0 days"):
        fuse_region(ws, finland)
    elsewhere = FuseRequest(source=s2, s2_model=S2_MODEL, s1_model=S1_MODEL,
                            region=RegionSpec(bbox="-75.66,37.64,-75.625,37.67"))  # fmt: skip
    with pytest.raises(RegionOutsideSourceError, match="does not overlap"):
        fuse_region(ws, elsewhere)


def test_app_choices_and_cli(
    fused_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = _ws(fused_db)
    choices = fusion_choices(ws, "ben/s2a_msil2a_20170613t101031_87_48")
    ids = [c.model_id for c in choices]
    assert FUSED in ids and all(split_fused_model_id(i) for i in ids)
    first = next(c for c in choices if c.model_id == FUSED)
    assert "radar" in first.caption and "optical" in first.caption
    assert fusion_choices(ws, "demo/virginia") == []  # no partner, no choice
    db = tmp_path / "cli.duckdb"
    shutil.copy(fused_db, db)
    args = ["fuse", "--source", "ben/s2a_msil2a_20170617t113321_4_55", "--s2-model", S2_MODEL,
            "--s1-model", S1_MODEL, "--chip", str(CHIP), "--db", str(db)]  # fmt: skip
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["model"], out["dim"], out["tiles"], out["both"]) == (FUSED, 96, 4, 4)
    assert out["s2_runs"][0]["computed"] == 0  # cached: only the combination ran again
    tile = "ben/s2a_msil2a_20170617t113321_4_55/56/56/0_0"
    assert main(["search", "--model", FUSED, "--tile", tile, "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == FUSED
    with pytest.raises(SystemExit) as refused:  # an out-of-range option: argparse's one line
        main([*args[:-2], "--s1-weight", "2", "--db", str(db)])
    assert refused.value.code == 2 and "--s1-weight" in capsys.readouterr().err


def _moved_copy(folder: Path, dest: Path, dx_px: int) -> Path:
    dest.mkdir()
    for pol in ("VV", "VH"):
        with rasterio.open(folder / f"{folder.name}_{pol}.tif") as ds:
            profile, data = ds.profile, ds.read()
        profile["transform"] = ds.transform @ Affine.translation(dx_px, 0)
        with rasterio.open(dest / f"moved_{pol}.tif", "w", **profile) as out:
            out.write(data)
    return dest


def test_an_s2_tile_over_two_radar_tiles_takes_both_by_share(
    shared_data: Path, tmp_path: Path
) -> None:
    """Radar 200 m east: S2 tile col 1 lies 36 % on S1 col 0 and 64 % on S1 col 1."""
    folder = sorted((shared_data / "bigearthnet_s1_examples").glob("*33UUP_87_48"))[0]
    moved = _moved_copy(folder, tmp_path / "S1A_moved_20170613", 20)
    s2 = shared_data / "bigearthnet_s2_examples" / "S2A_MSIL2A_20170613T101031_87_48"
    ws = _ws(tmp_path / "parts.duckdb")
    add_source(ws, AddSourceRequest(path=s2, source_id="s2/austria"))
    add_source(ws, AddSourceRequest(path=moved, source_id="s1/moved"))
    out = fuse_region(
        ws, FuseRequest(source="s2/austria", s2_model=S2_MODEL, s1_model=S1_MODEL, chip=CHIP)
    )
    assert (out.fusion.count("both"), out.fusion.count("s2"), out.fusion.count("s1")) == (4, 0, 0)
    m = tile_coverage(ws, FUSED)["s2/austria/56/56/0_1"]
    assert [t for t, _ in m.s1_parts] == ["s1/moved/56/56/0_1", "s1/moved/56/56/0_0"]
    np.testing.assert_allclose([sh for _, sh in m.s1_parts], [36 / 56, 20 / 56], atol=1e-4)
    assert m.s1_tile_id == "s1/moved/56/56/0_1" and m.overlap == pytest.approx(1.0, abs=1e-4)
    with EmbeddingCache(ws.db_path, read_only=True) as cache:
        fused, s2v, s1v = (_unit_set(cache, x) for x in (FUSED, S2_MODEL, S1_MODEL))
    mix = (36 / 56) * s1v["s1/moved/56/56/0_1"] + (20 / 56) * s1v["s1/moved/56/56/0_0"]
    expected = np.concatenate(
        [np.sqrt(0.5) * s2v["s2/austria/56/56/0_1"], np.sqrt(0.5) * mix / np.linalg.norm(mix)]
    )
    np.testing.assert_allclose(fused["s2/austria/56/56/0_1"], expected, atol=1e-5)


def test_models_with_other_chip_sizes_fuse(shared_data: Path, tmp_path: Path) -> None:
    """56 px S2 tiles under one 112 px S1 tile: each takes that tile (covers all of it)."""
    s2 = shared_data / "bigearthnet_s2_examples" / "S2A_MSIL2A_20170613T101031_87_48"
    s1 = sorted((shared_data / "bigearthnet_s1_examples").glob("*33UUP_87_48"))[0]
    ws = _ws(tmp_path / "chips.duckdb")
    add_source(ws, AddSourceRequest(path=s2, source_id="s2/austria"))
    add_source(ws, AddSourceRequest(path=s1, source_id="s1/austria"))
    req = FuseRequest(source="s2/austria", s2_model=S2_MODEL, s1_model=S1_MODEL, chip=CHIP,
                      s1_chip=112)  # fmt: skip
    out = fuse_region(ws, req)
    assert (len(out.fusion.matches), out.fusion.count("both")) == (4, 4)
    cov = tile_coverage(ws, FUSED)
    assert {m.s1_tile_id for m in cov.values()} == {"s1/austria/112/112/0_0"}
    assert all(m.overlap == pytest.approx(1.0, abs=1e-4) for m in cov.values())
