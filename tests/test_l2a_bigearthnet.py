"""Real Sentinel-2 L2A input (BigEarthNet patches, 12 bands, no B10) through reader and pipeline.

The patches live in ../shared/data and are not bundled: these tests skip when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from backend.embedding.pipeline import band_fill, embed_region
from backend.imagery.bands import S2_L1C_BANDS, S2_L2A_BANDS, S2_RESOLUTION_M
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.regions import Region
from backend.imagery.sources import BandAsset, Grid, SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

PATCHES = (
    "S2A_MSIL2A_20170613T101031_87_48",  # Upper Austria, arable land
    "S2B_MSIL2A_20170924T93020_69_24",  # eastern Finland, forest and water
)


def bigearthnet_source(folder: Path) -> SceneSource:
    """Describe one BigEarthNet patch folder (per-band GeoTIFFs at native resolution)."""
    meta = json.loads(next(folder.glob("*_labels_metadata.json")).read_text())
    with rasterio.open(folder / f"{folder.name}_B02.tif") as ref:
        grid = Grid(transform=tuple(ref.transform)[:6], width=ref.width, height=ref.height)
        crs = ref.crs.to_string()
    return SceneSource(
        id=f"bigearthnet/{folder.name}",
        title=f"BigEarthNet {folder.name}",
        sensor="Sentinel-2 MSI",
        product_level="L2A",
        date=meta["acquisition_date"][:10],
        crs=crs,
        grid=grid,
        bands=tuple(
            BandAsset(name=b, resolution_m=S2_RESOLUTION_M[b], file=f"{folder.name}_{b}.tif")
            for b in S2_L2A_BANDS
        ),
        root=folder,
    )


@pytest.fixture(params=PATCHES)
def patch(request: pytest.FixtureRequest, shared_data: Path) -> SceneSource:
    return bigearthnet_source(shared_data / "bigearthnet_s2_examples" / request.param)


def test_l2a_patch_reads_as_13_bands_with_b10_at_its_training_mean(patch: SceneSource) -> None:
    model = create_model("test-vit")
    fill = band_fill(model)
    assert fill == {"B10": 22.0}
    window = PixelWindow(0, 0, 120, 120)
    with SceneReader(patch) as reader:
        x = reader.read(window, S2_L1C_BANDS, fill=fill)
    assert x.shape == (13, 120, 120)
    assert np.all(x[S2_L1C_BANDS.index("B10")] == 22.0)
    for band in ("B02", "B05", "B01"):
        with rasterio.open(patch.root / f"{patch.root.name}_{band}.tif") as src:
            native = src.read(1).astype(np.float32)
        k = S2_RESOLUTION_M[band] // 10
        expected = np.repeat(np.repeat(native, k, axis=0), k, axis=1)
        np.testing.assert_array_equal(x[S2_L1C_BANDS.index(band)], expected, err_msg=band)


def test_l2a_patch_embeds_through_the_pipeline(patch: SceneSource, tmp_path: Path) -> None:
    model = create_model("test-vit")
    region = Region(patch.footprint_lonlat.buffer(-1e-4))
    settings = Settings(db_path=tmp_path / "l2a.duckdb")
    with EmbeddingCache(settings.db_path) as cache:
        result = embed_region(
            region, patch, model, cache,
            engine=EmbeddingEngine(model, device="cpu", batch_size=4), settings=settings,
        )  # fmt: skip
        ids, vectors = cache.embeddings(cache.embedding_sets()[0])
    # 120 px patch, 112 px chips: one full tile; the three that reach past the edge are mostly
    # nodata and skipped.
    assert (result.tiles, result.computed, result.skipped) == (1, 1, 3)
    assert ids == [f"{patch.id}/112/112/0_0"]
    assert np.isfinite(vectors).all()
