"""Real Sentinel-1 GRD (BigEarthNet-S1 patches) through import, reader, normalisation and S1 models.

The six patches in ../shared/data/bigearthnet_s1_examples are σ⁰ in dB, 120 × 120 px at 10 m on
the grid of the matching BigEarthNet-S2 patch (see its SOURCE.md); these tests skip without them.
Real SoftCon weights are not available offline, so the S1 models run with seeded random weights:
the tests prove the S1 path and its inputs, not the meaning of the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from backend.cli import main
from backend.embedding.pipeline import embed_region
from backend.imagery.bands import S1_GRD_BANDS
from backend.imagery.bigearthnet import read_patch_metadata
from backend.imagery.normalization import S1_GRD_MEAN, S1_GRD_STD, normalize
from backend.imagery.pairing import find_partners
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import Region
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from backend.store.catalog import open_catalog

S1_DIR = "bigearthnet_s1_examples"
S2_DIR = "bigearthnet_s2_examples"


def s1_folders(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / S1_DIR).iterdir() if p.is_dir())


def s2_folders(shared: Path) -> list[Path]:
    return sorted(p for p in (shared / S2_DIR).iterdir() if p.is_dir())


def source_id(folder: Path) -> str:
    return "ben/" + folder.name.lower()


@pytest.fixture(scope="module")
def registered(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with the six S1 and six S2 patches added through `softmap sources add`."""
    db = tmp_path_factory.mktemp("s1real") / "patches.duckdb"
    for folder in s1_folders(shared_data) + s2_folders(shared_data):
        args = ["sources", "add", str(folder), "--id", source_id(folder), "--db", str(db)]
        assert main([*args, "--json"]) == 0
    return db


def _vv_vh(folder: Path) -> np.ndarray:
    out = []
    for pol in S1_GRD_BANDS:
        with rasterio.open(folder / f"{folder.name}_{pol}.tif") as ds:
            out.append(ds.read(1))
    return np.stack(out)


def test_sources_add_reads_each_real_patch_with_its_metadata(
    registered: Path, shared_data: Path
) -> None:
    catalog = open_catalog(registered)
    for folder in s1_folders(shared_data):
        meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
        s = catalog.get(source_id(folder))
        assert (s.sensor, s.product_level, s.units, s.band_names) == (
            "Sentinel-1 SAR", "GRD", "db", S1_GRD_BANDS,
        )  # fmt: skip
        assert s.date == meta["acquisition_time"][:10]
        assert s.crs.startswith("EPSG:326") and s.size_km == (1.2, 1.2)
        assert s.title.startswith("BigEarthNet-S1 patch ") and s.mgrs_tile in folder.name
        assert meta["corresponding_s2_patch"] in " ".join(s.caveats)
        assert meta["labels"][0] in " ".join(s.caveats)  # the CORINE labels travel with it
    for folder in s2_folders(shared_data):
        s = catalog.get(source_id(folder))
        assert (s.product_level, len(s.bands)) == ("L2A", 12)
        assert s.title.startswith("BigEarthNet-S2 patch ")


def test_reader_returns_the_real_db_values(registered: Path, shared_data: Path) -> None:
    catalog = open_catalog(registered)
    for folder in s1_folders(shared_data):
        with SceneReader(catalog.get(source_id(folder))) as reader:
            x = reader.read(PixelWindow(0, 0, 120, 120), S1_GRD_BANDS)
        np.testing.assert_array_equal(x, _vv_vh(folder))


def test_plain_pair_in_db_and_linear_stated_or_detected(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = s1_folders(shared_data)[0]
    db = str(tmp_path / "pair.duckdb")
    vv, vh = (folder / f"{folder.name}_{p}.tif" for p in S1_GRD_BANDS)
    # Two files, VH first: the names say which is which; the units are stated.
    args = ["sources", "add", str(vh), str(vv), "--units", "db", "--id", "pair/db", "--db", db]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == "db"
    # The same backscatter as linear power in files whose names say nothing: --bands orders them.
    plain = []
    for i, src in enumerate((vv, vh)):
        with rasterio.open(src) as ds:
            profile, data = ds.profile, ds.read(1)
        path = tmp_path / f"sigma0_{'ab'[i]}.tif"
        with rasterio.open(path, "w", **profile) as out:
            out.write((10 ** (data / 10)).astype(np.float32), 1)
        plain.append(str(path))
    args = ["sources", "add", *plain, "--bands", "VV,VH", "--id", "pair/lin", "--db", db]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["units"] == "linear"  # detected from the values
    catalog = open_catalog(Path(db))
    window = PixelWindow(0, 0, 120, 120)
    reads = {}
    for sid in ("pair/db", "pair/lin"):
        with SceneReader(catalog.get(sid)) as reader:
            reads[sid] = reader.read(window, S1_GRD_BANDS)
    np.testing.assert_array_equal(reads["pair/db"], _vv_vh(folder))
    np.testing.assert_allclose(reads["pair/lin"], reads["pair/db"], atol=1e-4)
    # A stated unit the values contradict is one line, exit 2.
    assert main(["sources", "add", str(vv), str(vh), "--units", "linear", "--db", db]) == 2
    assert "look like dB" in capsys.readouterr().err
    args = ["sources", "add", *plain, "--bands", "VV,VH", "--units", "db", "--db", db]
    assert main(args) == 2
    assert "looks like linear power" in capsys.readouterr().err
    # Two files that cannot be told apart are refused, naming the fix.
    assert main(["sources", "add", *plain, "--db", db]) == 2
    assert "--bands VV,VH" in capsys.readouterr().err


def test_softcon_s1_normalisation_fits_the_real_patches(shared_data: Path) -> None:
    """SSL4EO-S12's S1 statistics (VV −12.59 ± 5.26, VH −20.26 ± 5.91 dB) against real data."""
    x = np.concatenate([_vv_vh(f).reshape(2, -1) for f in s1_folders(shared_data)], axis=1)
    assert x.shape == (2, 6 * 120 * 120)
    mean, std = x.mean(axis=1), x.std(axis=1)
    for b, name in enumerate(S1_GRD_BANDS):
        # Pooled means within one training std of the training mean, spreads of the same order.
        assert abs(mean[b] - S1_GRD_MEAN[b]) < S1_GRD_STD[b], name
        assert 0.4 * S1_GRD_STD[b] < std[b] < 1.2 * S1_GRD_STD[b], name
    np.testing.assert_allclose(mean, (-10.95, -16.95), atol=0.01)  # documented figures
    spec = create_model("test-vit-s1").meta.normalization
    assert (spec.scheme, spec.mean, spec.std) == ("ssl4eo", S1_GRD_MEAN, S1_GRD_STD)
    y = normalize(torch.from_numpy(x[:, None, :]), spec).numpy()[:, 0]
    clipped = ((y == 0) | (y == 1)).mean(axis=1)
    assert clipped[0] < 0.02 and clipped[1] < 0.005  # 1.2 % of VV, 0.2 % of VH (documented)
    assert 0.5 < y[0].mean() < 0.65 and 0.55 < y[1].mean() < 0.7


@pytest.mark.parametrize("model_id", ["softcon-vits14-s1", "test-vit-s1"])
def test_real_patches_embed_through_the_s1_path(
    model_id: str, registered: Path, shared_data: Path, tmp_path: Path
) -> None:
    """Reader → SSL4EO S1 normalisation → S1 model, on every patch (112 px chip: one tile)."""
    model = create_model(model_id, pretrained=False)  # seeded random weights, real architecture
    catalog = open_catalog(registered)
    settings = Settings(db_path=tmp_path / "emb.duckdb", offline=True)
    engine = EmbeddingEngine(model, device="cpu", batch_size=6, readers=0)
    vectors = []
    with EmbeddingCache(settings.db_path) as cache:
        for folder in s1_folders(shared_data):
            source = catalog.get(source_id(folder))
            result = embed_region(Region(source.footprint_lonlat.buffer(-1e-4)), source, model,
                                  cache, engine=engine, settings=settings, chip=112)  # fmt: skip
            assert (result.tiles, result.computed) == (1, 1)
            eset = cache.embedding_set(model_id, result.preprocessing_hash)
            assert eset is not None and eset.dim == model.meta.embed_dim
            _, v = cache.embeddings(eset, list(result.tile_ids))
            vectors.append(v[0])
    v = np.stack(vectors)
    assert np.isfinite(v).all() and v.shape == (6, model.meta.embed_dim)
    assert len({tuple(np.round(r, 5)) for r in v}) == 6  # six different places, six vectors


def test_pairing_finds_each_real_patch_partner_and_only_it(
    registered: Path, shared_data: Path
) -> None:
    catalog = open_catalog(registered)
    sources = catalog.list()
    partner_of = {}
    for folder in s1_folders(shared_data):
        meta = read_patch_metadata(next(folder.glob("*_labels_metadata.json")))
        assert meta.partner is not None
        partner_of[source_id(folder)] = "ben/" + meta.partner.lower()
    for s1_id, s2_id in partner_of.items():
        pairs = find_partners(catalog.get(s1_id), sources)
        assert [p.s2.id for p in pairs] == [s2_id]
        assert pairs[0].s2_covered == pytest.approx(1.0) and pairs[0].days_apart <= 1
        back = find_partners(catalog.get(s2_id), sources)
        assert [p.s1.id for p in back] == [s1_id]
    # The Finnish autumn pair is a day apart: a same-day window drops it, and only it.
    same_day = [p.s1.id for s in sources for p in find_partners(s, sources, window_days=0)
                if p.s2.id == s.id]  # fmt: skip
    assert len(same_day) == 5 and not any("20170925" in s for s in same_day)


def test_sources_lists_the_pairs(registered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources", "--db", str(registered), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["pairs"]) == 6
    by_id = {s["id"]: s for s in out["sources"]}
    s1 = [s for s in by_id.values() if s["product_level"] == "GRD"]
    assert len(s1) == 6 and all(len(s["partners"]) == 1 for s in s1)
    assert by_id["demo/virginia"]["partners"] == []
    assert main(["sources", "--db", str(registered)]) == 0
    assert "Sentinel-2 + Sentinel-1 pairs (6" in capsys.readouterr().out
    one = "ben/s1a_iw_grdh_1sdv_20170925t043256_35vpk_69_24"
    assert main(["sources", "pairs", one, "--db", str(registered), "--json"]) == 0
    pairs = json.loads(capsys.readouterr().out)["pairs"]
    assert [(p["s2"], p["days_apart"]) for p in pairs] == [
        ("ben/s2b_msil2a_20170924t93020_69_24", 1)
    ]
    assert main(["sources", "pairs", one, "--window-days", "0", "--db", str(registered)]) == 0
    assert "no Sentinel-2/Sentinel-1 partner within 0 days" in capsys.readouterr().out


def test_radar_previews_and_thumbnails(registered: Path, shared_data: Path) -> None:
    """VV red, VH green, VV blue; the Finnish lake (Water bodies in its labels) is dark."""
    from backend.imagery.preview import scene_preview, tile_rgba, tile_thumbnail

    catalog = open_catalog(registered)
    lake = catalog.get("ben/s1a_iw_grdh_1sdv_20170925t043256_35vpk_69_24")
    preview = scene_preview(lake, "true", max_size=256)
    valid = preview.rgba[..., 3] == 255
    assert valid.mean() > 0.9
    np.testing.assert_array_equal(preview.rgba[..., 0], preview.rgba[..., 2])  # VV twice
    assert (preview.rgba[..., 0][valid] < 40).mean() > 0.05  # open water: dark in VV
    rgba = tile_rgba(lake, f"{lake.id}/56/56/0_0")
    assert rgba.shape == (56, 56, 4) and (rgba[..., 3] == 255).all()
    assert tile_thumbnail(lake, f"{lake.id}/56/56/0_0").startswith(b"\x89PNG")
    optical = catalog.get("ben/s2b_msil2a_20170924t93020_69_24")  # 12 files: warped together
    assert (scene_preview(optical, "false", max_size=256).rgba[..., 3] == 255).mean() > 0.9
