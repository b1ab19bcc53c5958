"""Measure which storage layout reads 13-band 224x224 windows of a Sentinel-2 L1C scene fastest.

The script builds every candidate layout of the Virginia demo scene (18SVG, 2016-01-12) in a
temporary folder, reads the same random windows from each, checks that every layout returns the
same pixels as the per-band files as shipped, prints a table and writes
``bench/results/layout.json``.

Every read lands on the 10 m B02 grid. The 20 m and 60 m bands are resampled with nearest
neighbour, each through its own transform: Virginia's 20 m grid starts 10 m west of the 10 m grid
and its 60 m grid 10 m west and 20 m north, so the bands do not nest by integer factors.

Columns: ``open ms`` opens the files (13 datasets and 9 warped VRTs for the per-band layout);
``window ms`` opens, reads one 13-band window and closes, so the block cache starts empty;
``RGB window ms`` does the same for B04, B03, B02 only; ``scan s`` reads the whole scene as
non-overlapping 224 px windows through one open reader, as an embedding pass does; ``preview ms``
opens and reads B04, B03, B02 at 1/8 resolution (from overviews where the file has them).
The files are freshly written, so they sit in the page cache: the numbers measure decoding and
GDAL overhead, not disk.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader, MemoryFile
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from backend.bands import S2_L1C_BANDS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
SCENE_FOLDER = "s2_l1c_virginia_18SVG_20160112"
RESULTS_PATH = REPO_ROOT / "bench" / "results" / "layout.json"

REFERENCE_BAND = "B02"
WINDOW_PX = 224
PREVIEW_BANDS = ("B04", "B03", "B02")
PREVIEW_INDEX = tuple(S2_L1C_BANDS.index(b) for b in PREVIEW_BANDS)
PREVIEW_FACTOR = 8
OVERVIEW_LEVELS = (2, 4, 8)
PREVIEW_REPEAT = 5


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: the 10 m reference onto which every band is read."""

    crs: CRS
    transform: Affine
    width: int
    height: int


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
# Resampling and building


def scene_dir_from(data: Path) -> Path:
    """The Virginia scene folder: ``data`` itself if it holds the bands, else the child folder."""
    return data if (data / f"{REFERENCE_BAND}.tif").exists() else data / SCENE_FOLDER


def band_paths(scene_dir: Path) -> dict[str, Path]:
    """Paths of the 13 per-band GeoTIFFs, in L1C band order.

    Raises:
        FileNotFoundError: if a band file is missing.
    """
    paths = {band: scene_dir / f"{band}.tif" for band in S2_L1C_BANDS}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"Missing band files {missing}; pass --data pointing at the shared data folder."
        )
    return paths


def reference_grid(path: Path) -> Grid:
    """The grid of the reference (B02) band."""
    with rasterio.open(path) as ds:
        return Grid(crs=ds.crs, transform=ds.transform, width=ds.width, height=ds.height)


def nearest_onto_grid(data: np.ndarray, src_transform: Affine, grid: Grid) -> np.ndarray:
    """Resample a north-up band onto ``grid`` by nearest neighbour, filling outside pixels with 0.

    Each target pixel takes the source pixel that contains its centre, computed from both
    transforms, so grids that do not nest by integer factors are handled exactly.

    Args:
        data: Source band, shape ``(rows, cols)``.
        src_transform: Affine transform of ``data`` (no rotation), in the CRS of ``grid``.
        grid: Target grid.

    Returns:
        Array of shape ``(grid.height, grid.width)`` and the dtype of ``data``.
    """
    if src_transform.b or src_transform.d or grid.transform.b or grid.transform.d:
        raise ValueError("Only north-up grids without rotation are supported.")
    t = grid.transform
    xs = t.c + t.a * (np.arange(grid.width) + 0.5)
    ys = t.f + t.e * (np.arange(grid.height) + 0.5)
    cols = np.floor((xs - src_transform.c) / src_transform.a).astype(np.int64)
    rows = np.floor((ys - src_transform.f) / src_transform.e).astype(np.int64)
    ok_cols = (cols >= 0) & (cols < data.shape[1])
    ok_rows = (rows >= 0) & (rows < data.shape[0])
    out = np.zeros((grid.height, grid.width), dtype=data.dtype)
    out[np.ix_(ok_rows, ok_cols)] = data[np.ix_(rows[ok_rows], cols[ok_cols])]
    return out


def stack_on_grid(paths: dict[str, Path], grid: Grid) -> np.ndarray:
    """All bands as one ``uint16`` array ``[13, H, W]`` on ``grid`` (nearest, 0 outside)."""
    layers = []
    for path in paths.values():
        with rasterio.open(path) as ds:
            if ds.crs != grid.crs:
                raise ValueError(f"{path.name} is in {ds.crs}, not {grid.crs}.")
            layers.append(nearest_onto_grid(ds.read(1), ds.transform, grid))
    return np.stack(layers)


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


def write_stack(stack: np.ndarray, grid: Grid, path: Path, spec: StackSpec) -> None:
    """Write a 13-band cloud-optimised GeoTIFF with average overviews.

    Pixel-interleaved files come from GDAL's COG driver. GDAL before 3.11 has no INTERLEAVE
    option in that driver, so band-interleaved files are written the classic way: a tiled
    GeoTIFF with internal overviews, copied with ``COPY_SRC_OVERVIEWS=YES``. That copy has the
    same IFD-first, overviews-before-full-resolution structure.

    Args:
        stack: ``uint16`` array ``[13, H, W]`` on ``grid``.
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
        "crs": grid.crs,
        "transform": grid.transform,
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
# Readers


class _Reader:
    """Base class: a context manager holding open datasets, reading onto the 10 m grid."""

    def __init__(self) -> None:
        self._stack = ExitStack()

    def __enter__(self) -> _Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def read_window(self, window: Window, bands: Sequence[str] = S2_L1C_BANDS) -> np.ndarray:
        """The given bands (default all 13) of ``window`` as ``uint16 [bands, h, w]``."""
        raise NotImplementedError

    def read_preview(self, shape: tuple[int, int]) -> np.ndarray:
        """The preview bands of the whole scene, averaged down to ``shape``."""
        raise NotImplementedError


class PerBandReader(_Reader):
    """The shipped layout: one native-resolution GeoTIFF per band.

    Bands already on the 10 m grid are read directly. The others are read through a
    :class:`~rasterio.vrt.WarpedVRT` onto the grid with nearest neighbour.
    """

    def __init__(self, paths: dict[str, Path], grid: Grid) -> None:
        super().__init__()
        self._bands: dict[str, DatasetReader | WarpedVRT] = {}
        for band, path in paths.items():
            ds = self._stack.enter_context(rasterio.open(path))
            same_grid = (ds.transform, ds.width, ds.height) == (
                grid.transform,
                grid.width,
                grid.height,
            )
            if not same_grid:
                ds = self._stack.enter_context(
                    WarpedVRT(
                        ds,
                        crs=grid.crs,
                        transform=grid.transform,
                        width=grid.width,
                        height=grid.height,
                        resampling=Resampling.nearest,
                    )
                )
            self._bands[band] = ds

    def read_window(self, window: Window, bands: Sequence[str] = S2_L1C_BANDS) -> np.ndarray:
        return np.stack([self._bands[b].read(1, window=window) for b in bands])

    def read_preview(self, shape: tuple[int, int]) -> np.ndarray:
        return np.stack(
            [
                self._bands[b].read(1, out_shape=shape, resampling=Resampling.average)
                for b in PREVIEW_BANDS
            ]
        )


class StackReader(_Reader):
    """A single 13-band file on the 10 m grid."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._ds = self._stack.enter_context(rasterio.open(path))

    def read_window(self, window: Window, bands: Sequence[str] = S2_L1C_BANDS) -> np.ndarray:
        indexes = [S2_L1C_BANDS.index(b) + 1 for b in bands]
        return np.asarray(self._ds.read(indexes, window=window))

    def read_preview(self, shape: tuple[int, int]) -> np.ndarray:
        indexes = [S2_L1C_BANDS.index(b) + 1 for b in PREVIEW_BANDS]
        return np.asarray(
            self._ds.read(indexes, out_shape=(len(indexes), *shape), resampling=Resampling.average)
        )


# ---------------------------------------------------------------------------------------------
# Measuring


def random_windows(rng: np.random.Generator, grid: Grid, count: int) -> list[Window]:
    """``count`` random full-size windows lying inside the grid."""
    cols = rng.integers(0, grid.width - WINDOW_PX + 1, size=count)
    rows = rng.integers(0, grid.height - WINDOW_PX + 1, size=count)
    return [Window(int(c), int(r), WINDOW_PX, WINDOW_PX) for c, r in zip(cols, rows, strict=True)]


def scan_windows(grid: Grid) -> Iterator[Window]:
    """Non-overlapping windows that tile the grid row by row (clipped at the right and bottom)."""
    for row in range(0, grid.height, WINDOW_PX):
        for col in range(0, grid.width, WINDOW_PX):
            width = min(WINDOW_PX, grid.width - col)
            height = min(WINDOW_PX, grid.height - row)
            yield Window(col, row, width, height)


def crop(stack: np.ndarray, window: Window) -> np.ndarray:
    """The part of a ``[bands, rows, cols]`` array that ``window`` covers."""
    rows, cols = window.toslices()
    return stack[:, rows, cols]


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
    layouts: dict[str, Callable[[], _Reader]],
    windows: Sequence[Window],
    grid: Grid,
    expected: np.ndarray,
) -> dict[str, Samples]:
    """Time every layout on the same windows and check every pixel against layout ``a``.

    Random windows: the layouts take turns window by window, in rotating order, so drift (a
    warming page cache, a busy neighbour) spreads over all of them. Each timed window opens the
    files, reads and closes them, so GDAL's block cache starts empty every time.

    Scan: one open reader reads the non-overlapping windows that tile the whole scene, as an
    embedding pass does; its output covers every pixel and is compared with ``expected``.

    Args:
        layouts: Reader factories keyed by layout key; ``"a"`` is the reference.
        windows: The random windows.
        grid: The 10 m grid.
        expected: The whole stack resampled in memory, an independent check of layout ``a``.

    Returns:
        Measurements per layout key.
    """
    keys = list(layouts)
    samples = {key: Samples() for key in keys}
    for i, window in enumerate(windows):
        arrays: dict[str, np.ndarray] = {}
        for key in keys[i % len(keys) :] + keys[: i % len(keys)]:
            start = time.perf_counter()
            with layouts[key]() as reader:
                opened = time.perf_counter()
                arrays[key] = reader.read_window(window)
            end = time.perf_counter()
            samples[key].window_s.append(end - start)
            samples[key].open_s.append(opened - start)
            start = time.perf_counter()
            with layouts[key]() as reader:
                rgb = reader.read_window(window, PREVIEW_BANDS)
            samples[key].rgb_window_s.append(time.perf_counter() - start)
            samples[key].identical &= np.array_equal(rgb, arrays[key][list(PREVIEW_INDEX)])
        if not np.array_equal(arrays["a"], crop(expected, window)):
            raise AssertionError(f"Layout a disagrees with in-memory resampling at {window}.")
        for key in keys:
            samples[key].identical &= np.array_equal(arrays[key], arrays["a"])

    preview_shape = (
        math.ceil(grid.height / PREVIEW_FACTOR),
        math.ceil(grid.width / PREVIEW_FACTOR),
    )
    tiles = list(scan_windows(grid))
    for key in keys:
        times = []
        for _ in range(PREVIEW_REPEAT):
            start = time.perf_counter()
            with layouts[key]() as reader:
                samples[key].preview = reader.read_preview(preview_shape)
            times.append(time.perf_counter() - start)
        samples[key].preview_s = float(np.median(times))

        read = []
        start = time.perf_counter()
        with layouts[key]() as reader:
            read = [reader.read_window(window) for window in tiles]
        samples[key].scan_s = time.perf_counter() - start
        samples[key].scan_tiles = len(tiles)
        samples[key].identical &= all(
            np.array_equal(array, crop(expected, window))
            for array, window in zip(read, tiles, strict=True)
        )
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
    scene_dir = scene_dir_from(args.data)
    try:
        paths = band_paths(scene_dir)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    grid = reference_grid(paths[REFERENCE_BAND])

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
    expected = stack_on_grid(paths, grid)
    with tempfile.TemporaryDirectory(prefix="softmap-layout-") as tmp:
        layouts: dict[str, Callable[[], _Reader]] = {"a": lambda: PerBandReader(paths, grid)}
        labels = {"a": "per-band native-resolution GeoTIFFs (shipped)"}
        files = {"a": list(paths.values())}
        build_s: dict[str, float] = {}
        for spec in specs:
            path = Path(tmp) / f"stack_{spec.key}.tif"
            t0 = time.perf_counter()
            write_stack(expected, grid, path, spec)
            build_s[spec.key] = round(time.perf_counter() - t0, 2)
            layouts[spec.key] = partial(StackReader, path)
            labels[spec.key] = spec.label
            files[spec.key] = [path]

        windows = random_windows(np.random.default_rng(args.seed), grid, args.repeat)
        samples = measure(layouts, windows, grid, expected)
        reference_preview = samples["a"].preview
        results = []
        for key, m in samples.items():
            window_s = np.asarray(m.window_s)
            preview_diff = np.abs(m.preview.astype(np.int32) - reference_preview.astype(np.int32))
            results.append(
                LayoutResult(
                    key=key,
                    label=labels[key],
                    files=len(files[key]),
                    size_mb=round(sum(p.stat().st_size for p in files[key]) / 1e6, 2),
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
        f"{WINDOW_PX}x{WINDOW_PX} windows x 13 bands (open + read + close each), "
        f"GDAL {rasterio.__gdal_version__}, {elapsed:.0f} s in all\n"
    )
    print(format_table(results))
    report = {
        "scene": SCENE_FOLDER,
        "grid": {"width": grid.width, "height": grid.height, "transform": list(grid.transform)[:6]},
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
