"""Land-cover heads on fused S2 + S1 sets, fitted on the six real BigEarthNet pairs' CORINE labels.

The six S2 patches of ../shared/data are registered with their S1 partners, except Austria's,
whose radar patch is moved 600 m east (as in test_fusion): that place then has tiles both
sensors cover, S2-only tiles and S1-only tiles. test-vit and test-vit-s1 carry seeded random
weights, so these tests check that the head path works on a fused set (dimension, tiles, labels,
leave-one-place-out, fallback marks, the app's scope path), not that fusion helps.
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
from backend.embedding.fusion import fused_model_id
from backend.errors import (
    HeadMismatchError,
    NotEnoughLabelsError,
    UnknownHeadError,
    UnknownMappingError,
)
from backend.landcover.corine import CORINE_CLASSES, corine_class, patch_fractions
from backend.landcover.labels import DW_CLASSES
from backend.landcover.store import list_heads, stored_predictions
from backend.service import (
    AddSourceRequest,
    FuseRequest,
    ScopeRequest,
    SetHeadRequest,
    SetMapRequest,
    Workspace,
    add_source,
    fit_set_landcover_head,
    fuse_region,
    map_set,
    predict_scope_landcover,
    resolve_scope,
)
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

S2_MODEL, S1_MODEL = "test-vit", "test-vit-s1"
FUSED = fused_model_id(S2_MODEL, S1_MODEL)
CHIP = 56
AUSTRIA = "ben/s2a_msil2a_20170613t101031_87_48"


def _ws(db: Path) -> Workspace:
    return Workspace(Settings(db_path=db, models_dir=db.parent / "models", offline=True))


@pytest.fixture(scope="module")
def labelled_db(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six S2 patches, five S1 partners as they are and Austria's moved 600 m east; all fused."""
    root = tmp_path_factory.mktemp("fused_heads")
    ws = _ws(root / "fused.duckdb")
    s1_folders = sorted((shared_data / "bigearthnet_s1_examples").glob("S1*"))
    for folder in s1_folders:
        if folder.name.endswith("33UUP_87_48"):
            moved = root / (folder.name + "_moved")
            moved.mkdir()
            for pol in ("VV", "VH"):
                with rasterio.open(folder / f"{folder.name}_{pol}.tif") as ds:
                    profile, data = ds.profile, ds.read()
                profile["transform"] = ds.transform @ Affine.translation(60, 0)  # 600 m east
                with rasterio.open(moved / f"{moved.name}_{pol}.tif", "w", **profile) as out:
                    out.write(data)
            meta = folder / f"{folder.name}_labels_metadata.json"
            shutil.copy(meta, moved / f"{moved.name}_labels_metadata.json")
            folder = moved
        add_source(ws, AddSourceRequest(path=folder, source_id="ben/" + folder.name.lower()))
    for folder in sorted((shared_data / "bigearthnet_s2_examples").glob("S2*")):
        sid = "ben/" + folder.name.lower()
        add_source(ws, AddSourceRequest(path=folder, source_id=sid))
        fuse_region(ws, FuseRequest(source=sid, s2_model=S2_MODEL, s1_model=S1_MODEL, chip=CHIP))
    return ws.db_path


def test_corine_names_map_onto_dynamic_world() -> None:
    assert len(CORINE_CLASSES) == 44 and len({c for c, _, _ in CORINE_CLASSES}) == 44
    assert DW_CLASSES[corine_class("Peat bogs")] == "flooded_vegetation"  # BigEarthNet: Peatbogs
    assert DW_CLASSES[corine_class("Transitional woodland/shrub")] == "shrub_and_scrub"
    fin = patch_fractions(["Coniferous forest", "Mixed forest", "Water bodies"])
    assert fin[DW_CLASSES.index("trees")] == pytest.approx(2 / 3)
    assert fin[DW_CLASSES.index("water")] == pytest.approx(1 / 3)
    with pytest.raises(UnknownMappingError, match="not a CORINE"):
        corine_class("Moon dust")


def test_a_head_fits_and_maps_on_the_fused_set_with_marked_fallbacks(labelled_db: Path) -> None:
    ws = _ws(labelled_db)
    fit = fit_set_landcover_head(ws, SetHeadRequest(model=FUSED))
    head = fit.head
    assert head.model_id == FUSED and head.tile.dim == 96 == 48 + 48
    assert head.mapping == "corine-2018" and head.token is None
    # 5 places × 4 tiles both; Austria: 2 both, 2 S2 only, 2 S1 only.
    assert len(fit.tile_ids) == 26 and head.training["places"] == 6
    assert head.training["coverage"] == {"both": 22, "s1": 2, "s2": 2}
    # Leave one place out: every place is held out once, its radar-only tiles with it.
    assert sorted(g.group for g in fit.per_group) == sorted(set(fit.groups))
    assert {g for g, c in zip(fit.groups, fit.coverage, strict=True) if c == "s1"} == {AUSTRIA}
    assert sum(g.tiles for g in fit.per_group) == 26
    np.testing.assert_allclose(fit.held_out.sum(axis=1), 1, atol=1e-5)
    assert 0 <= fit.in_labels <= 1 and head.metrics["tile"]["n_test"] == 26
    assert {g.group: set(g.labels) for g in fit.per_group}[AUSTRIA] == {"crops"}

    out = map_set(ws, SetMapRequest(model=FUSED, head=head.head_id))
    assert len(out.tile_ids) == 26 and out.probabilities.shape == (26, 9)
    assert out.predicted == 26 and out.area_km2 == pytest.approx(26 * 0.56**2, rel=0.02)
    marked = {t: c for t, c in zip(out.tile_ids, out.coverage, strict=True) if c != "both"}
    assert sorted(marked.values()) == ["s1", "s1", "s2", "s2"]
    assert all(t.startswith(AUSTRIA) for t, c in marked.items() if c == "s2")
    assert int(out.fallback.sum()) == 4
    rows = {r["tile"]: r for r in out.to_json()["tile_classes"]}
    assert all(rows[t]["fallback"] and rows[t]["coverage"] == c for t, c in marked.items())
    # An S2-only tile is read from its S2 half alone: its fused vector is [v2 / |v2|, 0].
    with EmbeddingCache(labelled_db, read_only=True) as cache:
        s2_only = next(t for t, c in marked.items() if c == "s2")
        (eset,) = [e for e in cache.embedding_sets() if e.model_id == FUSED]
        _, v = cache.embeddings(eset, [s2_only])
        assert np.all(v[0, 48:] == 0)
        again = stored_predictions(cache, FUSED, list(out.tile_ids), head.head_id)
    np.testing.assert_allclose(again.probabilities, out.probabilities)
    assert map_set(ws, SetMapRequest(model=FUSED)).predicted == 0  # stored, reused

    # The app's path (a scope of the fused model + its newest head) uses the head unchanged.
    copy = labelled_db.parent / "scope.duckdb"
    shutil.copy(labelled_db, copy)
    wsc = _ws(copy)
    with EmbeddingCache(copy) as cache:
        from backend.store.scopes import resolve_scope as store_scope

        scope = store_scope(cache, FUSED)
        with cache.cursor() as cur:
            cur.execute("DELETE FROM landcover_predictions")
    assert predict_scope_landcover(wsc, scope) == 26
    assert len(resolve_scope(wsc, ScopeRequest(model=FUSED)).tile_ids) == 26


def test_s2_and_s1_heads_on_the_same_places_and_the_cli(
    labelled_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.duckdb"
    shutil.copy(labelled_db, db)
    ws = _ws(db)
    s2 = fit_set_landcover_head(ws, SetHeadRequest(model=S2_MODEL))
    s1 = fit_set_landcover_head(ws, SetHeadRequest(model=S1_MODEL))
    assert (s2.head.tile.dim, s1.head.tile.dim) == (48, 48)
    assert len(s2.tile_ids) == 24  # the six S2 patches, 2 × 2 tiles each
    assert len(set(s1.groups)) == 6 and AUSTRIA in s1.groups  # the moved radar joins Austria

    assert main(["landcover", "fit", "--labels", "patches", "--model", FUSED, "--db", str(db),
                 "--json"]) == 0  # fmt: skip
    info = json.loads(capsys.readouterr().out)
    assert info["dim"] == 96 and len(info["per_group"]) == 6
    assert main(["landcover", "--set", "--model", FUSED, "--db", str(db), "--json"]) == 0
    mapped = json.loads(capsys.readouterr().out)
    assert mapped["head"]["head_id"] == info["head_id"] and mapped["fallback_tiles"] == 4
    assert main(["landcover", "--set", "--model", FUSED, "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "4 tiles from one sensor only" in text and "s1-only" in text

    heads = [h for h in list_heads(EmbeddingCache(db, read_only=True)) if h.model_id == FUSED]
    assert heads and heads[0].mapping == "corine-2018"
    # A head fitted on a scene (with spectral features) cannot read a stored set.
    spectral = heads[0].__class__(**{**heads[0].__dict__, "features": "bands-v1"})
    from backend.landcover.set_heads import map_set_landcover

    with EmbeddingCache(db) as cache, pytest.raises(HeadMismatchError, match="spectral"):
        map_set_landcover(cache, spectral, FUSED)


def test_too_few_places_are_refused(labelled_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "one.duckdb"
    shutil.copy(labelled_db, db)
    with pytest.raises(NotEnoughLabelsError, match="places"):
        fit_set_landcover_head(_ws(db), SetHeadRequest(model=FUSED, sources=[AUSTRIA]))
    with EmbeddingCache(db) as cache, cache.cursor() as cur:
        cur.execute("DELETE FROM landcover_heads")
    with pytest.raises(UnknownHeadError, match="fit --labels patches --model test-vit"):
        map_set(_ws(db), SetMapRequest(model=FUSED))
