"""A second date of the Virginia demo, derived from the bundled scene with a visible alteration.

The offline demo has one acquisition of each place, so change detection (the Change page,
``softmap change``) has nothing to compare. Tests and demos use this instead: a 13-band GeoTIFF
copy of an 8.96 km × 8.96 km crop of ``demo/virginia`` (bundled pixel rows and columns 448–1343,
around the small demo region) dated 2016-02-01, identical to the original except for one block:

* **The alteration**: the 224 × 224 px block at bundled rows 1008–1231 and columns 672–895
  (2.24 km × 2.24 km of fields and woods, west of the demo region's centre; with 112 px tiles the
  bundled tiles ``9_6``, ``9_7``, ``10_6``, ``10_7``) is replaced by open water: per band, the
  median of the crop's own water pixels (NDWI > 0.2, NIR in its darkest 20 %), with 3 % noise —
  a flood over the fields. It looks like the lagoons beside it in true colour and is dark in
  false colour, so it is obvious in the before/after view, and its tiles are the most changed.

The crop starts at a multiple of 448 px (lcm of the 112 px test-vit and 64 px softmap-default
chips), so the copy's tiles sit exactly on bundled tiles for both models.

Register it like any user's file (``softmap sources add``)::

    python scripts/second_date.py --out data/second-date --db data/softmap.duckdb

or from Python: ``write_second_date(folder)`` then ``register_second_date(ws, path)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from backend.imagery.bands import S2_L1C_BANDS
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import SceneSource, demo_catalog
from backend.settings import ASSETS_DIR

SOURCE_ID = "test/virginia-flooded"
DATE = "2016-02-01"
TITLE = "Eastern Shore of Virginia, derived second date (a flooded block)"
#: The crop of the bundled scene, in bundled pixels: (row, column) of the top-left corner, side.
CROP_ROW, CROP_COL, CROP_SIZE = 448, 448, 896
#: The altered block, in bundled pixels: (row, column, side).
BLOCK_ROW, BLOCK_COL, BLOCK_SIZE = 1008, 672, 224
#: The bundled 112 px tiles (row, col) the block covers exactly.
CHANGED_TILES_112 = ((9, 6), (9, 7), (10, 6), (10, 7))
#: Relative noise on the flood's reflectance (water is not perfectly flat).
NOISE = 0.03


def water_spectrum(data: np.ndarray) -> np.ndarray:
    """The median of the crop's own open-water pixels per band: NDWI > 0.2 and dark NIR.

    Using the scene's water (its lagoons and channels) keeps the flood's colour and the
    atmosphere of the same acquisition, so it looks like the water next to it.
    """
    green, nir = data[2].astype(np.float32), data[7].astype(np.float32)
    valid = (data > 0).all(axis=0)
    ndwi = (green - nir) / np.maximum(green + nir, 1)
    water = valid & (ndwi > 0.2) & (nir < np.percentile(nir[valid], 20))
    return np.median(data[:, water], axis=1)


def altered_pixels(source: SceneSource, seed: int = 0) -> tuple[np.ndarray, Affine]:
    """The crop's 13 bands (``(13, size, size)`` uint16), the block flooded; and its transform."""
    with SceneReader(source) as reader:
        data = reader.read(PixelWindow(CROP_COL, CROP_ROW, CROP_SIZE, CROP_SIZE), S2_L1C_BANDS)
    data = np.asarray(data).astype(np.uint16)
    rng = np.random.default_rng(seed)
    y, x = BLOCK_ROW - CROP_ROW, BLOCK_COL - CROP_COL
    noise = rng.normal(1.0, NOISE, size=(BLOCK_SIZE, BLOCK_SIZE))
    for i, dn in enumerate(water_spectrum(data)):
        block = np.clip(dn * noise, 1, 65535).astype(np.uint16)
        data[i, y : y + BLOCK_SIZE, x : x + BLOCK_SIZE] = block
    transform = source.grid.affine @ Affine.translation(CROP_COL, CROP_ROW)
    return data, transform


def write_second_date(folder: Path, source: SceneSource | None = None) -> Path:
    """Write the altered copy as ``<folder>/virginia_20160201_flooded.tif``; returns the path."""
    source = source or demo_catalog(ASSETS_DIR).get("demo/virginia")
    data, transform = altered_pixels(source)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "virginia_20160201_flooded.tif"
    profile = {
        "driver": "GTiff", "width": CROP_SIZE, "height": CROP_SIZE, "count": len(S2_L1C_BANDS),
        "dtype": "uint16", "crs": source.crs, "transform": transform, "nodata": 0,
        "tiled": True, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, band in enumerate(S2_L1C_BANDS, start=1):
            ds.set_band_description(i, band)
        ds.update_tags(ACQUISITION_DATE=DATE, SOFTMAP_DERIVED_FROM=source.id)
    return path


def register_second_date(ws: object, path: Path) -> SceneSource:
    """Register the copy as ``test/virginia-flooded`` (what ``softmap sources add`` does)."""
    from backend.service.catalog import AddSourceRequest, add_source
    from backend.service.workspace import Workspace

    assert isinstance(ws, Workspace)
    req = AddSourceRequest(
        path=path, bands=S2_L1C_BANDS, source_id=SOURCE_ID, title=TITLE, date=DATE
    )
    return add_source(ws, req)


def main(argv: list[str] | None = None) -> int:
    from backend.service.workspace import Workspace

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the GeoTIFF")
    parser.add_argument("--db", type=Path, help="also register it in this cache")
    args = parser.parse_args(argv)
    path = write_second_date(args.out)
    print(path)
    if args.db is not None:
        source = register_second_date(Workspace(db_path=args.db), path)
        print(f"registered {source.id} ({source.date})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
