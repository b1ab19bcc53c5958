"""Embedding throughput on Ray against the local engine, measured in one run, as ratios.

    .venv/bin/python bench/bench_ray.py [--model softcon-vits14-s2] [--tiles 96]
        [--batch-size 16] [--actors 1,2] [--repeats 1]

One local Ray cluster (all CPUs of this machine, dashboard off) serves every Ray measurement.
Each configuration embeds the same region of the Virginia scene into an empty cache through the
real path (``embed_region``: planning, reading, inference, DuckDB writes), in rotating order:

* **local**: ``EmbeddingEngine`` on this process's device (PyTorch uses every core);
* **ray N**: ``RayEmbeddingEngine`` with N CPU replicas (Ray Data read tasks → an
  ``ActorPoolStrategy`` pool → the driver writes).

Two rates per run: **job** (tiles / wall time of the run, Ray's actor start-up included: what a
small job costs) and **steady** (tiles after the first batch / time after it). On Ray the
first result can reach the driver after several batches are already done (replicas start
together, results stream in bursts), so *steady* flatters Ray; *job* is the robust figure.
Ratios are to the local run of the same repeat. On a GPU
cluster replicas take one GPU each (``gpus_per_actor=1``); this machine has none, so every
figure here is CPU. Weights are a seeded random initialisation of the real architecture
(throughput does not depend on the values), so the benchmark runs offline. Results go to
``bench/results/ray.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_embed import region_with_tiles  # noqa: E402

from backend.embedding.distributed import RayEmbeddingEngine  # noqa: E402
from backend.embedding.pipeline import embed_region  # noqa: E402
from backend.embedding.ray_cluster import RayOptions, require_ray  # noqa: E402
from backend.imagery.regions import Region  # noqa: E402
from backend.imagery.sources import SceneSource, demo_catalog  # noqa: E402
from backend.models import EmbeddingModel, create_model  # noqa: E402
from backend.models.inference import EmbeddingEngine, Progress  # noqa: E402
from backend.settings import Settings  # noqa: E402
from backend.store.cache import EmbeddingCache  # noqa: E402


@dataclass
class Run:
    config: str
    repeat: int
    tiles: int
    seconds: float
    job_tiles_per_s: float
    steady_tiles_per_s: float | None
    device: str


def one_run(
    config: str,
    repeat: int,
    engine: EmbeddingEngine,
    model: EmbeddingModel,
    source: SceneSource,
    region: Region,
) -> Run:
    seen: list[tuple[float, int]] = []

    def progress(p: Progress) -> None:
        seen.append((time.perf_counter(), p.done))

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        settings = Settings(db_path=db, models_dir=Path(tmp), offline=True,
                            max_nodata_fraction=1.0)  # fmt: skip
        with EmbeddingCache(db) as cache:
            start = time.perf_counter()
            result = embed_region(region, source, model, cache, engine=engine,
                                  settings=settings, progress=progress)  # fmt: skip
            seconds = time.perf_counter() - start
    batches = [(t, d) for t, d in seen if d > 0]
    steady = None
    if len(batches) >= 2 and batches[-1][0] > batches[0][0]:
        steady = (batches[-1][1] - batches[0][1]) / (batches[-1][0] - batches[0][0])
    return Run(config, repeat, result.computed, round(seconds, 2),
               round(result.computed / seconds, 2), steady and round(steady, 2),
               result.device)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="softcon-vits14-s2")
    ap.add_argument("--tiles", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--actors", default="1,2", help="replica counts to measure")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--object-store-mb", type=int, default=512)
    args = ap.parse_args()

    ray = require_ray()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a cluster of this process only
    cpus = os.cpu_count() or 1
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=args.object_store_mb * 2**20)  # fmt: skip
    source = demo_catalog().get("demo/virginia")
    model = create_model(args.model, pretrained=False)
    region, _ = region_with_tiles(source, model.meta.chip_size, args.tiles)
    actor_counts = [int(a) for a in args.actors.split(",")]
    engines: dict[str, EmbeddingEngine] = {
        "local": EmbeddingEngine(model, device="auto", batch_size=args.batch_size)
    }
    for n in actor_counts:
        engines[f"ray {n}"] = RayEmbeddingEngine(
            model, RayOptions(actors=n, batch_size=args.batch_size)
        )
    names = list(engines)
    runs: list[Run] = []
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            run = one_run(name, r, engines[name], model, source, region)
            print(f"  {name:8s} {run.tiles} tiles in {run.seconds:6.1f} s: "
                  f"job {run.job_tiles_per_s:6.2f}/s, steady {run.steady_tiles_per_s}/s "
                  f"on {run.device}", flush=True)  # fmt: skip
            runs.append(run)
    ray.shutdown()

    def ratio(name: str, field: str) -> float | None:
        values = []
        for r in range(args.repeats):
            mine = next(x for x in runs if x.config == name and x.repeat == r)
            base = next(x for x in runs if x.config == "local" and x.repeat == r)
            a, b = getattr(mine, field), getattr(base, field)
            if a is not None and b:
                values.append(a / b)
        return round(statistics.median(values), 3) if values else None

    summary: list[dict[str, Any]] = []
    for name in names:
        mine = [x for x in runs if x.config == name]
        steady = [x.steady_tiles_per_s for x in mine if x.steady_tiles_per_s is not None]
        summary.append({
            "config": name,
            "device": mine[0].device,
            "job_tiles_per_s": round(statistics.median(x.job_tiles_per_s for x in mine), 2),
            "steady_tiles_per_s": round(statistics.median(steady), 2) if steady else None,
            "job_ratio_to_local": ratio(name, "job_tiles_per_s"),
            "steady_ratio_to_local": ratio(name, "steady_tiles_per_s"),
        })  # fmt: skip
    out = {
        "model": args.model,
        "chip": model.meta.chip_size,
        "tiles": runs[0].tiles,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpus": cpus,
        "machine": platform.processor() or platform.machine(),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "runs": [asdict(r) for r in runs],
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{args.model}, {out['tiles']} tiles of {model.meta.chip_size} px, batch "
          f"{args.batch_size}, {cpus} CPUs, load {out['load_average_1m']}\n")  # fmt: skip
    print("| config | device | job tiles/s | × local | steady tiles/s | × local |")
    print("|---|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['config']} | {s['device']} | {s['job_tiles_per_s']:.2f} | "
              f"{s['job_ratio_to_local'] or 1:.2f} | {s['steady_tiles_per_s']} | "
              f"{s['steady_ratio_to_local'] or 1:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
