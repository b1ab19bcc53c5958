"""Embedding throughput: the full pipeline against the model alone, measured in the same run.

    .venv/bin/python bench/bench_embed.py [--model softcon-vits14-s2] [--tiles 64] [--batch-size 32]
        [--device auto] [--precision auto] [--skip-memory]

* model only: the same batches, already read and held as tensors, through the same engine
  forward pass (normalisation + model + copy back);
* pipeline_time_in_model: inside each pipeline run, the share of wall time spent in that same
  forward pass; the rest is reading, queueing and DuckDB writes. Unlike the throughput ratio it
  does not move with the machine's load between two runs;
* pipeline: ``embed_region`` on a region of the Virginia scene with an empty cache (reading,
  prefetch queue, inference, DuckDB writes);
* memory: peak RSS of a fresh process embedding a small region and the whole scene.

Weights are a random initialisation of the real architecture (throughput does not depend on
the values), so the benchmark runs offline. Results are printed and written to
``bench/results/embed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from backend.embedding.pipeline import embed_region  # noqa: E402
from backend.imagery.reader import SceneReader  # noqa: E402
from backend.imagery.regions import Region, parse_bbox  # noqa: E402
from backend.imagery.sources import SceneSource, demo_catalog  # noqa: E402
from backend.imagery.tiling import Tile, plan_tiles  # noqa: E402
from backend.models import EmbeddingModel, create_model  # noqa: E402
from backend.models.inference import EmbeddingEngine, describe_device  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.store.cache import EmbeddingCache  # noqa: E402

WHOLE_VIRGINIA = "-75.74,37.58,-75.50,37.77"


def region_with_tiles(source: SceneSource, chip: int, n: int) -> tuple[Region, list[Tile]]:
    """A region of the scene holding at least ``n`` complete tiles (rows from the top-left)."""
    whole = parse_bbox(WHOLE_VIRGINIA)
    with SceneReader(source) as reader:
        tiles = plan_tiles(whole, source, reader, chip=chip, max_nodata_fraction=0.0).tiles
    chosen = list(tiles[:n])
    lons = [c for t in chosen for c in t.footprint.exterior.xy[0]]
    lats = [c for t in chosen for c in t.footprint.exterior.xy[1]]
    # Shrink by a hair so the region touches exactly the chosen tiles' rows and columns.
    eps = 1e-4
    bbox = f"{min(lons) + eps},{min(lats) + eps},{max(lons) - eps},{max(lats) - eps}"
    return parse_bbox(bbox), chosen


def model_only(engine: EmbeddingEngine, batches: list[torch.Tensor]) -> float:
    """Images/s of normalisation + model on batches already in memory."""
    start = time.perf_counter()
    for b in batches:
        engine.forward(b)
    _sync(engine)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def preload(engine: EmbeddingEngine, source: SceneSource, tiles: list[Tile]) -> list[torch.Tensor]:
    """The tiles' raw chips as batches in memory (pinned on CUDA), read once up front."""
    bands = engine.model.meta.bands
    with SceneReader(source) as reader:
        chips = np.stack([reader.read(t.window, bands) for t in tiles])
    size = engine.batch_size
    batches = [torch.from_numpy(chips[i : i + size]) for i in range(0, len(chips), size)]
    return [b.pin_memory() for b in batches] if engine.device.type == "cuda" else batches


@dataclass
class PipelineRun:
    tiles_per_s: float
    tiles: int
    model_share: float  # fraction of the run's wall time spent inside engine.forward


def pipeline(
    engine: EmbeddingEngine, model: EmbeddingModel, source: SceneSource, region: Region
) -> PipelineRun:
    """The whole pipeline (read, infer, write) into an empty cache, timing the model inside it."""
    in_model = 0.0
    forward = engine.forward

    def timed_forward(raw: torch.Tensor, *, return_tokens: bool = False) -> Any:
        nonlocal in_model
        start = time.perf_counter()
        try:
            return forward(raw, return_tokens=return_tokens)
        finally:
            in_model += time.perf_counter() - start

    engine.forward = timed_forward  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(db_path=Path(tmp) / "bench.duckdb", max_nodata_fraction=0.0)
            with EmbeddingCache(settings.db_path) as cache:
                result = embed_region(
                    region, source, model, cache, engine=engine, settings=settings
                )
    finally:
        del engine.forward
    return PipelineRun(result.computed / result.seconds, result.computed, in_model / result.seconds)


def peak_rss_mb(model_id: str, bbox: str, device: str, batch_size: int) -> tuple[float, int]:
    """Peak RSS (MB) of a fresh process embedding ``bbox``, and the tiles it computed."""
    code = f"""
import json, resource, tempfile
from pathlib import Path
from backend.store.cache import EmbeddingCache
from backend.models.inference import EmbeddingEngine
from backend.models import create_model
from backend.embedding.pipeline import embed_region
from backend.imagery.regions import parse_bbox
from backend.settings import Settings
from backend.imagery.sources import demo_catalog
model = create_model({model_id!r}, pretrained=False)
engine = EmbeddingEngine(model, device={device!r}, batch_size={batch_size})
with tempfile.TemporaryDirectory() as tmp:
    s = Settings(db_path=Path(tmp) / "m.duckdb")
    with EmbeddingCache(s.db_path) as cache:
        r = embed_region(parse_bbox({bbox!r}), demo_catalog().get("demo/virginia"), model, cache,
                         engine=engine, settings=s)
rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rss_kb": rss_kb, "tiles": r.computed}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["rss_kb"] / 1024, int(data["tiles"])


def _sync(engine: EmbeddingEngine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="softcon-vits14-s2")
    parser.add_argument("--tiles", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--readers", type=int, help="reader threads (default: by device)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "embed.json")
    args = parser.parse_args()

    source = demo_catalog().get("demo/virginia")
    model = create_model(args.model, pretrained=False)
    engine = EmbeddingEngine(
        model,
        device=args.device,
        batch_size=args.batch_size,
        precision=args.precision,
        readers=args.readers,
    )
    region, tiles = region_with_tiles(source, model.meta.chip_size, args.tiles)
    tiles = tiles[: args.tiles]
    batches = preload(engine, source, tiles)
    engine.forward(batches[0])  # warm-up: kernels, allocator, autocast caches
    # Alternate the two measurements so that drift in machine load hits both alike, and report
    # the median of the paired ratios.
    only_runs: list[float] = []
    runs: list[PipelineRun] = []
    for _ in range(args.repeat):
        only_runs.append(model_only(engine, batches))
        runs.append(pipeline(engine, model, source, region))
    ratios = [r.tiles_per_s / o for r, o in zip(runs, only_runs, strict=True)]
    only = statistics.median(only_runs)
    piped = statistics.median(r.tiles_per_s for r in runs)
    n = runs[-1].tiles
    report: dict[str, object] = {
        "model": args.model,
        "device": describe_device(engine.device),
        "precision": engine.precision,
        "readers": engine.readers,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "tiles": n,
        "model_only_img_s": round(only, 2),
        "pipeline_tiles_s": round(piped, 2),
        "pipeline_over_model_only": round(statistics.median(ratios), 3),
        "ratio_runs": [round(r, 3) for r in ratios],
        "pipeline_time_in_model": round(statistics.median(r.model_share for r in runs), 3),
    }
    if not args.skip_memory:
        small_mb, small_n = peak_rss_mb(
            args.model, "-75.66,37.64,-75.64,37.66", args.device, args.batch_size
        )
        whole_mb, whole_n = peak_rss_mb(args.model, WHOLE_VIRGINIA, args.device, args.batch_size)
        report.update(
            {
                "peak_rss_small_region_mb": round(small_mb, 1),
                "small_region_tiles": small_n,
                "peak_rss_whole_scene_mb": round(whole_mb, 1),
                "whole_scene_tiles": whole_n,
                "peak_rss_ratio_whole_over_small": round(whole_mb / small_mb, 3),
            }
        )
    for key, value in report.items():
        print(f"{key:34s} {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
