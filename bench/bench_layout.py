"""Measure which storage layout reads 13-band 224x224 windows of a Sentinel-2 L1C scene fastest.

The script builds every candidate layout of the Virginia demo scene (18SVG, 2016-01-12) in a
temporary folder, reads the same random windows from each through the app's own read path
(``backend.imagery.reader.SceneReader``), checks that every layout returns the same pixels as the
per-band
files as shipped, prints a table and writes ``bench/results/layout.json``.

Each layout is described as a ``backend.imagery.sources.SceneSource``: the bundled ``demo/virginia``
source with its 10 m grid, its band files replaced by the candidate's. Every read lands on that
10 m (B02) grid. For the per-band files the reader resamples the 20 m and 60 m bands with nearest
neighbour, each through its own transform: Virginia's 20 m grid starts 10 m west of the 10 m grid
and its 60 m grid 10 m west and 20 m north, so the bands do not nest by integer factors.

Columns: ``open ms`` opens the files of the source (13 datasets and 9 warped VRTs for the per-band
layout); ``window ms`` opens, reads one 13-band window and closes, so the block cache starts
empty; ``RGB window ms`` does the same for B04, B03, B02 only (the reader opens only the files
those bands need); ``scan s`` reads the whole scene as non-overlapping 224 px windows through one
open reader, as an embedding pass does; ``preview ms`` opens and reads B04, B03, B02 at 1/8
resolution straight from the files with rasterio, since the reader has no reduced-resolution read
(from overviews where the file has them). The files are freshly written, so they sit in the page
cache: the numbers measure decoding and GDAL overhead, not disk.

Usage:
    .venv/bin/python bench/bench_layout.py [--data DIR] [--repeat N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import MemoryFile

from backend.imagery.bands import S2_L1C_BANDS, S2_RESOLUTION_M
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.sources import BandAsset, Grid, SceneSource, demo_catalog

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
SCENE_FOLDER = "s2_l1c_virginia_18SVG_20160112"
SOURCE_ID = "demo/virginia"
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "layout.json"

REFERENCE_BAND = "B02"
WINDOW_PX = 224
PREVIEW_BANDS = ("B04", "B03", "B02")
PREVIEW_INDEX = [S2_L1C_BANDS.index(b) for b in PREVIEW_BANDS]
PREVIEW_FACTOR = 8
OVERVIEW_LEVELS = (2, 4, 8)
PREVIEW_REPEAT = 5


@dataclass(frozen=True)
class StackSpec:
    """One candidate 13-band file on the 10 m grid.

    Attributes:
        key: Short label used in the table, e.g. ``"b"``.
        compress: GDAL ``COMPRESS`` value (``DEFLATE`` or ``ZSTD``).
        interleave: ``PIXEL`` (all bands in one tile) or ``BAND`` (one tile per band).
        blocksize: Tile edge in pixels.
    """

    key: str
    compress: str
    interleave: str
    blocksize: int

    @property
    def label(self) -> str:
        """Human-readable name of the layout."""
        return (
            f"13-band COG {self.compress.lower()}+pred2 {self.interleave.lower()} {self.blocksize}"
        )


@dataclass
class LayoutResult:
    """Timings and size of one layout (milliseconds unless the name says otherwise)."""

    key: str
    label: str
    files: int
    size_mb: float
    open_ms: float
    window_ms_median: float
    window_ms_p95: float
    rgb_window_ms_median: float
    scan_s: float
    scan_tiles: int
    preview_ms: float
    preview_max_abs_diff_vs_a: int
    identical_to_a: bool
    window_ms: list[float] = field(default_factory=list, repr=False)


# ---------------------------------------------------------------------------------------------
# Sources and building


def scene_dir_from(data: Path) -> Path:
    """The Virginia scene folder: ``data`` itself if it holds the bands, else the child folder."""
    return data if (data / f"{REFERENCE_BAND}.tif").exists() else data / SCENE_FOLDER


def per_band_source(bundled: SceneSource, scene_dir: Path) -> SceneSource:
    """Layout ``a``: the 13 per-band GeoTIFFs as shipped, on the bundled scene's 10 m grid.

    Raises:
        FileNotFoundError: if a band file is missing.
        ValueError: if B02 is not on the bundled grid (the folder holds another scene).
    """
    missing = [b for b in S2_L1C_BANDS if not (scene_dir / f"{b}.tif").exists()]
    if missing:
        raise FileNotFoundError(
            f"{scene_dir} lacks {missing}; pass --data pointing at the shared data folder."
        )
    grid = bundled.grid
    with rasterio.open(scene_dir / f"{REFERENCE_BAND}.tif") as ds:
        on_grid = (ds.width, ds.height) == (grid.width, grid.height)
        on_grid = on_grid and ds.transform.almost_equals(grid.affine)
    if not on_grid:
        raise ValueError(f"{scene_dir}: {REFERENCE_BAND} is not on the {bundled.id} 10 m grid.")
    bands = tuple(
        BandAsset(name=b, resolution_m=S2_RESOLUTION_M[b], file=f"{b}.tif") for b in S2_L1C_BANDS
    )
    return bundled.model_copy(update={"root": scene_dir, "bands": bands})


def stack_source(bundled: SceneSource, path: Path) -> SceneSource:
    """A 13-band file on the bundled 10 m grid, bands in L1C order."""
    bands = tuple(
        BandAsset(name=b, resolution_m=S2_RESOLUTION_M[b], file=path.name, index=i)
        for i, b in enumerate(S2_L1C_BANDS, start=1)
    )
    return bundled.model_copy(update={"root": path.parent, "bands": bands})


def source_files(source: SceneSource) -> list[Path]:
    """The distinct files a source reads from."""
    return [source.root / f for f in dict.fromkeys(b.file for b in source.bands)]


def zstd_available() -> bool:
    """Whether the GDAL inside rasterio can write ZSTD-compressed GeoTIFFs."""
    try:
        with MemoryFile() as mem:
            profile = {"driver": "GTiff", "width": 16, "height": 16, "count": 1, "dtype": "uint16"}
            georef = {"crs": "EPSG:32618", "transform": Affine(10, 0, 0, 0, -10, 160)}
            with mem.open(**profile, **georef, compress="ZSTD") as ds:
                ds.write(np.zeros((1, 16, 16), dtype=np.uint16))
            with mem.open() as ds:
                return str(ds.profile.get("compress", "")).upper() == "ZSTD"
    except RasterioError:
        return False


def write_stack(stack: np.ndarray, crs: str, grid: Grid, path: Path, spec: StackSpec) -> None:
    """Write a 13-band cloud-optimised GeoTIFF with average overviews.

    Pixel-interleaved files come from GDAL's COG driver. GDAL before 3.11 has no INTERLEAVE
    option in that driver, so band-interleaved files are written the classic way: a tiled
    GeoTIFF with internal overviews, copied with ``COPY_SRC_OVERVIEWS=YES``. That copy has the
    same IFD-first, overviews-before-full-resolution structure.

    Args:
        stack: ``uint16`` array ``[13, H, W]`` on ``grid``.
        crs: CRS of ``grid``.
        grid: The 10 m grid.
        path: Output file.
        spec: Compression, interleave and tile size.
    """
    plain = path.with_suffix(".plain.tif")
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": stack.shape[0],
        "dtype": "uint16",
        "crs": crs,
        "transform": grid.affine,
        "nodata": 0,
        "tiled": True,
        "blockxsize": spec.blocksize,
        "blockysize": spec.blocksize,
        "interleave": spec.interleave.lower(),
    }
    with rasterio.open(plain, "w", **profile) as ds:
        ds.write(stack)
        for index, band in enumerate(S2_L1C_BANDS, start=1):
            ds.set_band_description(index, band)
        if spec.interleave == "BAND":
            ds.build_overviews(list(OVERVIEW_LEVELS), Resampling.average)
    options = {"COMPRESS": spec.compress, "PREDICTOR": "2", "NUM_THREADS": "ALL_CPUS"}
    if spec.interleave == "PIXEL":
        rasterio.shutil.copy(
            plain,
            path,
            driver="COG",
            BLOCKSIZE=str(spec.blocksize),
            OVERVIEW_RESAMPLING="AVERAGE",
            OVERVIEW_COUNT=str(len(OVERVIEW_LEVELS)),
            **options,
        )
    else:
        rasterio.shutil.copy(
            plain,
            path,
            driver="GTiff",
            TILED="YES",
            BLOCKXSIZE=str(spec.blocksize),
            BLOCKYSIZE=str(spec.blocksize),
            INTERLEAVE="BAND",
            COPY_SRC_OVERVIEWS="YES",
            **options,
        )
    plain.unlink()


# ---------------------------------------------------------------------------------------------
# Reading


def read_full(source: SceneSource) -> np.ndarray:
    """The whole scene, all 13 bands, read through the reader as one window (``float32``)."""
    grid = source.grid
    with SceneReader(source) as reader:
        return reader.read(PixelWindow(0, 0, grid.width, grid.height), S2_L1C_BANDS)


def open_all(reader: SceneReader) -> None:
    """Open every file of the reader's source now, as its first 13-band read would.

    The reader opens files lazily inside :meth:`~backend.imagery.reader.SceneReader.read`; opening
    them
    first (through its own ``_dataset``, so with the same warped VRTs) times opening apart from
    reading without changing what the read does.
    """
    for file in dict.fromkeys(b.file for b in reader.source.bands):
        reader._dataset(file)


def read_preview(source: SceneSource, shape: tuple[int, int]) -> np.ndarray:
    """B04, B03, B02 of the whole scene averaged down to ``shape`` (``uint16 [3, h, w]``).

    The reader has no reduced-resolution read, so the files the source names are read directly
    with rasterio; GDAL serves the read from overviews where the file has them. The three bands
    are 10 m bands, so every file read must already be on the 10 m grid.
    """
    slots = {b.name: b for b in source.bands}
    by_file: dict[str, list[int]] = {}
    for i, band in enumerate(PREVIEW_BANDS):
        by_file.setdefault(slots[band].file, []).append(i)
    out = np.empty((len(PREVIEW_BANDS), *shape), dtype=np.uint16)
    for file, positions in by_file.items():
        with rasterio.open(source.root / file) as ds:
            if (ds.width, ds.height) != (source.grid.width, source.grid.height):
                raise ValueError(f"{file} is not on the 10 m grid.")
            out[positions] = ds.read(
                [slots[PREVIEW_BANDS[i]].index for i in positions],
                out_shape=(len(positions), *shape),
                resampling=Resampling.average,
            )
    return out


# ---------------------------------------------------------------------------------------------
# Measuring


def random_windows(rng: np.random.Generator, grid: Grid, count: int) -> list[PixelWindow]:
    """``count`` random full-size windows lying inside the grid."""
    cols = rng.integers(0, grid.width - WINDOW_PX + 1, size=count)
    rows = rng.integers(0, grid.height - WINDOW_PX + 1, size=count)
    return [
        PixelWindow(int(c), int(r), WINDOW_PX, WINDOW_PX) for c, r in zip(cols, rows, strict=True)
    ]


def scan_windows(grid: Grid) -> Iterator[PixelWindow]:
    """Non-overlapping full-size windows that tile the grid row by row, as the app's tiles do.

    The last row and column of windows extend past the scene; the reader fills that part with
    nodata.
    """
    for row in range(0, grid.height, WINDOW_PX):
        for col in range(0, grid.width, WINDOW_PX):
            yield PixelWindow(col, row, WINDOW_PX, WINDOW_PX)


def crop(stack: np.ndarray, window: PixelWindow) -> np.ndarray:
    """The part of a ``[bands, rows, cols]`` array that ``window`` covers."""
    r, c = window.row_off, window.col_off
    return stack[:, r : r + window.height, c : c + window.width]


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


@dataclass
class Samples:
    """Raw measurements of one layout, filled in by :func:`measure`."""

    window_s: list[float] = field(default_factory=list)
    open_s: list[float] = field(default_factory=list)
    rgb_window_s: list[float] = field(default_factory=list)
    identical: bool = True
    preview_s: float = 0.0
    preview: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint16))
    scan_s: float = 0.0
    scan_tiles: int = 0


def measure(
    sources: dict[str, SceneSource],
    windows: Sequence[PixelWindow],
    expected: np.ndarray,
) -> dict[str, Samples]:
    """Time every layout on the same windows and check every pixel against layout ``a``.

    Random windows: the layouts take turns window by window, in rotating order, so drift (a
    warming page cache, a busy neighbour) spreads over all of them. Each timed window opens a
    :class:`~backend.imagery.reader.SceneReader`, reads and closes it, so GDAL's block cache starts
    empty
    every time.

    Scan: one open reader reads the non-overlapping windows that tile the whole scene into one
    reused buffer, as an embedding pass does; only the reads are timed. Its output covers every
    pixel and is compared with ``expected`` (nodata past the scene edges).

    Args:
        sources: The layouts as scene sources, keyed by layout key; ``"a"`` is the reference.
        windows: The random windows.
        expected: The whole scene read from layout ``a`` as one window.

    Returns:
        Measurements per layout key.
    """
    keys = list(sources)
    grid = sources["a"].grid
    samples = {key: Samples() for key in keys}
    for i, window in enumerate(windows):
        arrays: dict[str, np.ndarray] = {}
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            start = time.perf_counter()
            with SceneReader(sources[key]) as reader:
                open_all(reader)
                opened = time.perf_counter()
                arrays[key] = reader.read(window, S2_L1C_BANDS)
            end = time.perf_counter()
            samples[key].window_s.append(end - start)
            samples[key].open_s.append(opened - start)
            start = time.perf_counter()
            with SceneReader(sources[key]) as reader:
                rgb = reader.read(window, PREVIEW_BANDS)
            samples[key].rgb_window_s.append(time.perf_counter() - start)
            samples[key].identical &= np.array_equal(rgb, arrays[key][PREVIEW_INDEX])
        reference = crop(expected, window)
        for key in keys:
            samples[key].identical &= np.array_equal(arrays[key], reference)

    preview_shape = (
        math.ceil(grid.height / PREVIEW_FACTOR),
        math.ceil(grid.width / PREVIEW_FACTOR),
    )
    tiles = list(scan_windows(grid))
    rows = max(w.row_off + w.height for w in tiles) - grid.height
    cols = max(w.col_off + w.width for w in tiles) - grid.width
    padded = np.pad(expected, ((0, 0), (0, rows), (0, cols)))
    buffer = np.empty((len(S2_L1C_BANDS), WINDOW_PX, WINDOW_PX), dtype=np.float32)
    for key in keys:
        times = []
        for _ in range(PREVIEW_REPEAT):
            start = time.perf_counter()
            samples[key].preview = read_preview(sources[key], preview_shape)
            times.append(time.perf_counter() - start)
        samples[key].preview_s = float(np.median(times))

        with SceneReader(sources[key]) as reader:
            for window in tiles:
                start = time.perf_counter()
                reader.read(window, S2_L1C_BANDS, out=buffer)
                samples[key].scan_s += time.perf_counter() - start
                samples[key].identical &= np.array_equal(buffer, crop(padded, window))
        samples[key].scan_tiles = len(tiles)
    return samples


def format_table(results: Sequence[LayoutResult]) -> str:
    """A Markdown table of the results, one row per layout."""
    header = (
        "| key | layout | files | size MB | open ms | window ms median | window ms p95 "
        "| RGB window ms | scan s | preview ms | identical |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r.key} | {r.label} | {r.files} | {r.size_mb:.1f} | {r.open_ms:.2f} "
            f"| {r.window_ms_median:.2f} | {r.window_ms_p95:.2f} | {r.rgb_window_ms_median:.2f} "
            f"| {r.scan_s:.2f} "
            f"| {r.preview_ms:.1f} | {'yes' if r.identical_to_a else 'NO'} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="shared data folder, or the Virginia scene folder itself (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat", type=int, default=100, help="random windows per layout (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="window RNG seed (default: 0)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_PATH, help="JSON output (default: %(default)s)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the layouts, measure them, print the table and write the JSON results."""
    args = parse_args(argv)
    if args.repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    bundled = demo_catalog(REPO_ROOT / "assets").get(SOURCE_ID)
    try:
        per_band = per_band_source(bundled, scene_dir_from(args.data))
    except (FileNotFoundError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    grid = bundled.grid

    specs = [
        StackSpec("b", "DEFLATE", "PIXEL", 256),
        StackSpec("b512", "DEFLATE", "PIXEL", 512),
        StackSpec("c", "DEFLATE", "BAND", 256),
    ]
    has_zstd = zstd_available()
    if has_zstd:
        specs += [
            StackSpec("d", "ZSTD", "PIXEL", 256),
            StackSpec("d128", "ZSTD", "PIXEL", 128),
            StackSpec("d-band", "ZSTD", "BAND", 256),
            StackSpec("d-band128", "ZSTD", "BAND", 128),
        ]
    else:
        print("GDAL in rasterio cannot write ZSTD; skipping the d layouts.", file=sys.stderr)

    started = time.perf_counter()
    expected = read_full(per_band)
    stack = expected.astype(np.uint16)
    with tempfile.TemporaryDirectory(prefix="softmap-layout-") as tmp:
        sources = {"a": per_band}
        labels = {"a": "per-band native-resolution GeoTIFFs (shipped)"}
        build_s: dict[str, float] = {}
        for spec in specs:
            path = Path(tmp) / f"stack_{spec.key}.tif"
            t0 = time.perf_counter()
            write_stack(stack, bundled.crs, grid, path, spec)
            build_s[spec.key] = round(time.perf_counter() - t0, 2)
            sources[spec.key] = stack_source(bundled, path)
            labels[spec.key] = spec.label

        windows = random_windows(np.random.default_rng(args.seed), grid, args.repeat)
        samples = measure(sources, windows, expected)
        reference_preview = samples["a"].preview
        results = []
        for key, m in samples.items():
            files = source_files(sources[key])
            window_s = np.asarray(m.window_s)
            preview_diff = np.abs(m.preview.astype(np.int32) - reference_preview.astype(np.int32))
            results.append(
                LayoutResult(
                    key=key,
                    label=labels[key],
                    files=len(files),
                    size_mb=round(sum(p.stat().st_size for p in files) / 1e6, 2),
                    open_ms=_ms(float(np.median(m.open_s))),
                    window_ms_median=_ms(float(np.median(window_s))),
                    window_ms_p95=_ms(float(np.percentile(window_s, 95))),
                    rgb_window_ms_median=_ms(float(np.median(m.rgb_window_s))),
                    scan_s=round(m.scan_s, 3),
                    scan_tiles=m.scan_tiles,
                    preview_ms=_ms(m.preview_s),
                    preview_max_abs_diff_vs_a=int(preview_diff.max()),
                    identical_to_a=m.identical,
                    window_ms=[_ms(float(s)) for s in window_s],
                )
            )
    elapsed = time.perf_counter() - started

    print(
        f"Virginia 18SVG, {grid.width}x{grid.height} px at 10 m, {len(windows)} random "
        f"{WINDOW_PX}x{WINDOW_PX} windows x 13 bands (open + read + close each) through "
        "backend.imagery.reader.SceneReader, "
        f"GDAL {rasterio.__gdal_version__}, {elapsed:.0f} s in all\n"
    )
    print(format_table(results))
    report = {
        "scene": SCENE_FOLDER,
        "source": SOURCE_ID,
        "read_path": "backend.imagery.reader.SceneReader (preview: rasterio overviews)",
        "grid": {"width": grid.width, "height": grid.height, "transform": list(grid.transform)},
        "windows": len(windows),
        "window_px": WINDOW_PX,
        "seed": args.seed,
        "preview": {"bands": list(PREVIEW_BANDS), "factor": PREVIEW_FACTOR},
        "versions": {
            "gdal": rasterio.__gdal_version__,
            "rasterio": rasterio.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "zstd": has_zstd,
        "build_s": build_s,
        "elapsed_s": round(elapsed, 1),
        "layouts": [asdict(r) for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if not all(r.identical_to_a for r in results):
        print("Some layouts returned different pixels from layout a.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
