"""Sentinel-1 GRD sources (VV, VH) for the ``*-s1`` models.

Real BigEarthNet-S1 patches are tested in ``test_s1_real.py`` (when ../shared/data is present);
these tests build a SYNTHETIC but plausible scene on the bundled Brandenburg grid, to cover what
the patches lack (a no-data edge, a larger area, linear power in one multi-band file): water
(B08 < 800 DN in the S2 scene) gets VV −21 dB / VH −28 dB, land VV −13…−7 dB and VH −20…−14 dB
rising with NDVI, then multiplicative gamma speckle (ENL 4.4, as IW GRD) in linear power. It is
written as linear power and as dB, with a no-data strip along the left edge, as a real GRD
footprint edge has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from numpy.typing import NDArray
from rasterio.transform import Affine
from rasterio.windows import Window

from backend.cli import main
from backend.embedding.pipeline import embed_region
from backend.errors import BandMismatchError, SceneImportError
from backend.imagery.bands import S1_GRD_BANDS
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.scene_import import import_scene
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache
from backend.store.catalog import open_catalog

from .test_scene_import import inner_region, write_tif

COL_OFF, ROW_OFF, SIZE = 448, 224, 448  # 2 × 2 tiles of the 224 px S1 models
NODATA_COLS = 8


def synthetic_s1(source: SceneSource) -> tuple[NDArray[np.float32], Affine]:
    """(VV, VH) linear power ``[2, SIZE, SIZE]`` with NaN no-data columns, and the transform."""
    with rasterio.open(source.root / source.bands[0].file) as ds:
        window = Window(COL_OFF, ROW_OFF, SIZE, SIZE)
        red, nir = ds.read([4, 8], window=window).astype(np.float32)
        transform = ds.window_transform(window)
    ndvi = np.clip((nir - red) / np.maximum(nir + red, 1), 0, 1)
    water = nir < 800
    vv_db = np.where(water, -21.0, -13.0 + 6.0 * ndvi)
    vh_db = np.where(water, -28.0, -20.0 + 6.0 * ndvi)
    rng = np.random.default_rng(0)
    speckle = rng.gamma(4.4, 1 / 4.4, size=(2, SIZE, SIZE))
    linear = (10 ** (np.stack([vv_db, vh_db]) / 10) * speckle).astype(np.float32)
    linear[:, :, :NODATA_COLS] = np.nan
    return linear, transform


@pytest.fixture(scope="module")
def s1_files(tmp_path_factory: pytest.TempPathFactory, brandenburg: SceneSource) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("s1")
    linear, transform = synthetic_s1(brandenburg)
    with np.errstate(invalid="ignore"):
        db = (10 * np.log10(linear)).astype(np.float32)
    folder = root / "S1A_IW_GRDH_20170217_folder"
    folder.mkdir()
    # Per-band files whose band metadata says they are dB.
    for i, pol in enumerate(S1_GRD_BANDS):
        with rasterio.open(
            write_tif(folder / f"S1A_IW_GRDH_20170217_{pol}.tif", db[i], transform, nodata=np.nan),
            "r+",
        ) as ds:
            ds.update_tags(1, units="dB")
    return {
        "linear": write_tif(
            root / "S1A_IW_GRDH_20170217_sigma0_linear.tif",
            linear,
            transform,
            descriptions=S1_GRD_BANDS,
            nodata=np.nan,
        ),
        "db": write_tif(
            root / "S1A_IW_GRDH_20170217_sigma0_db.tif",
            db,
            transform,
            descriptions=S1_GRD_BANDS,
            nodata=np.nan,
        ),
        "folder": folder,
    }


def test_units_are_detected_and_reads_are_in_db(s1_files: dict[str, Path]) -> None:
    sources = {kind: import_scene(path) for kind, path in s1_files.items()}
    assert {k: s.units for k, s in sources.items()} == {
        "linear": "linear",  # by value range
        "db": "db",  # by value range
        "folder": "db",  # by the band's units tag
    }
    for s in sources.values():
        assert (s.sensor, s.product_level, s.band_names) == ("Sentinel-1 SAR", "GRD", S1_GRD_BANDS)
        assert s.date == "2017-02-17" and s.crs == "EPSG:32633"
    window = PixelWindow(0, 0, SIZE, SIZE)
    reads = {}
    for kind, s in sources.items():
        with SceneReader(s) as reader:
            reads[kind] = reader.read(window, S1_GRD_BANDS)
    np.testing.assert_allclose(reads["linear"], reads["db"], atol=1e-4)
    np.testing.assert_array_equal(reads["folder"], reads["db"])
    x = reads["linear"]
    assert np.all(x[:, :, :NODATA_COLS] == 0) and np.isfinite(x).all()  # NaN no-data → 0
    vv, vh = x[0, :, NODATA_COLS:], x[1, :, NODATA_COLS:]
    assert -16 < float(np.median(vv)) < -5 and float(np.median(vh)) < float(np.median(vv))
    with SceneReader(sources["linear"]) as reader:
        valid = reader.valid_mask(PixelWindow(0, 0, 224, 224), 8)
    assert not valid[:, 0].any() and valid[:, 1:].all()


def test_s1_sources_embed_alike_with_an_s1_model(
    s1_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s1.duckdb"
    for kind in ("linear", "db"):
        assert main(["sources", "add", str(s1_files[kind]), "--id", f"s1/{kind}", "--db",
                     str(db), "--json"]) == 0  # fmt: skip
        summary = json.loads(capsys.readouterr().out)
        assert summary["units"] == kind and summary["product_level"] == "GRD"
    catalog = open_catalog(db)
    model = create_model("softcon-vits14-s1", pretrained=False)  # seeded random weights
    engine = EmbeddingEngine(model, device="cpu", batch_size=4, readers=0)
    settings = Settings(db_path=db, offline=True)
    vectors = {}
    with EmbeddingCache(db) as cache:
        region = inner_region(catalog.get("s1/linear"), margin_m=150)
        for kind in ("linear", "db"):
            result = embed_region(region, catalog.get(f"s1/{kind}"), model, cache,
                                  engine=engine, settings=settings)  # fmt: skip
            assert result.tiles == 4 and result.computed == 4
            eset = cache.embedding_set(model.meta.id, result.preprocessing_hash)
            assert eset is not None
            ids, vectors[kind] = cache.embeddings(eset, list(result.tile_ids))
            quality = cache.tiles(ids)
            assert all(t["cloud_fraction"] is None for t in quality)  # radar: no cloud test
    np.testing.assert_allclose(vectors["linear"], vectors["db"], rtol=1e-4, atol=1e-4)
    # An S2 model cannot run on S1 imagery: told which bands are missing.
    with EmbeddingCache(db) as cache, pytest.raises(BandMismatchError, match="lacks band"):
        embed_region(region, catalog.get("s1/db"), create_model("test-vit"), cache,
                     settings=settings)  # fmt: skip


def test_unusable_s1_inputs_are_refused(
    s1_files: dict[str, Path], brandenburg: SceneSource, tmp_path: Path
) -> None:
    linear, transform = synthetic_s1(brandenburg)
    amplitude = np.nan_to_num(np.sqrt(linear) * 500).astype(np.uint16)  # raw GRD-like DN
    dn = write_tif(tmp_path / "S1_amplitude.tif", amplitude, transform,
                   descriptions=S1_GRD_BANDS)  # fmt: skip
    with pytest.raises(SceneImportError, match="uncalibrated"):
        import_scene(dn)
    only_vv = write_tif(tmp_path / "S1_vv.tif", linear[:1], transform, descriptions=("VV",))
    with pytest.raises(SceneImportError, match="lacks Sentinel-1 polarisation"):
        import_scene(only_vv)
