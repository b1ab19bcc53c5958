"""Numeric precision: how far bf16 autocast embeddings are from fp32 ones, on real demo tiles.

    .venv/bin/python bench/bench_precision.py [--models softmap-default softcon-vits14-s2]
        [--max-tiles 400] [--queries 200]

For each model, every complete tile of the bundled demo scenes (up to ``--max-tiles``) is
embedded twice by the same engine on the CPU: fp32, and bf16 autocast (what CUDA runs by
default). Reported, per model:

* ``1 - cos`` between the fp32 and bf16 vector of the same tile (mean, p50, p99, max);
* ``nn_gap``: ``1 - cos`` from each fp32 vector to its nearest *other* tile (p1, p50): the
  distances search has to resolve;
* ``control_fp32_batch7``: fp32 against fp32 in batches of 7, the noise of the kernels alone;
* top-10 overlap (cosine, self excluded) of each query's neighbours:
  ``pure``: bf16 query in an all-bf16 set against fp32 query in the fp32 set;
  ``mixed``: fp32 query in a set where every other tile is bf16 (what one mixed embedding set
  holds) against the pure fp32 answer.

``softcon-vits14-s2`` has no weights offline: it runs with the seeded random initialisation of the
real ViT-S/14 architecture (shape and numerics of the computation, not trained features). Results
go to ``bench/results/precision.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from backend.imagery.reader import SceneReader  # noqa: E402
from backend.imagery.regions import Region  # noqa: E402
from backend.imagery.sources import SceneSource, demo_catalog  # noqa: E402
from backend.imagery.tiling import Tile, plan_tiles  # noqa: E402
from backend.models import create_model  # noqa: E402
from backend.models.inference import EmbeddingEngine  # noqa: E402
from backend.settings import ASSETS_DIR  # noqa: E402


def scene_tiles(source: SceneSource, chip: int) -> list[Tile]:
    """Every tile of the scene without nodata."""
    region = Region(source.footprint_lonlat.buffer(-1e-4))
    with SceneReader(source) as reader:
        return list(plan_tiles(region, source, reader, chip=chip, max_nodata_fraction=0.0).tiles)


def embed(engine: EmbeddingEngine, tiles: list[Tile], source: SceneSource) -> np.ndarray:
    out: dict[str, np.ndarray] = {}

    def keep(ids: list[str], vectors: Any, _tokens: Any) -> None:
        out.update(zip(ids, vectors, strict=True))

    engine.embed_tiles(tiles, source, on_batch=keep)
    return np.stack([out[t.tile_id] for t in tiles]).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def top10(q: np.ndarray, base: np.ndarray, self_idx: int) -> set[int]:
    s = base @ q
    s[self_idx] = -np.inf
    return set(np.argpartition(-s, 10)[:10].tolist())


def compare(a32: np.ndarray, a16: np.ndarray, queries: int, seed: int = 0) -> dict[str, Any]:
    u32, u16 = unit(a32), unit(a16)
    d = 1.0 - np.sum(u32 * u16, axis=1)
    sims = u32 @ u32.T
    np.fill_diagonal(sims, -np.inf)
    nn = 1.0 - sims.max(axis=1)
    rng = np.random.default_rng(seed)
    qs = rng.choice(len(u32), size=min(queries, len(u32)), replace=False)
    pure, mixed = [], []
    for i in qs:
        ref = top10(u32[i], u32, i)
        pure.append(len(ref & top10(u16[i], u16, i)) / 10)
        base = u16.copy()
        base[i] = u32[i]
        mixed.append(len(ref & top10(u32[i], base, i)) / 10)
    return {
        "tiles": len(u32),
        "one_minus_cos": {
            "mean": float(d.mean()),
            "p50": float(np.median(d)),
            "p99": float(np.quantile(d, 0.99)),
            "max": float(d.max()),
        },
        "nn_gap": {"p1": float(np.quantile(nn, 0.01)), "p50": float(np.median(nn))},
        "top10_overlap_pure": float(np.mean(pure)),
        "top10_overlap_mixed": float(np.mean(mixed)),
        "queries": len(qs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["softmap-default", "softcon-vits14-s2"])
    ap.add_argument("--max-tiles", type=int, default=400, help="per scene")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    cat = demo_catalog(ASSETS_DIR)
    report: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        },
        "models": {},
    }
    for name in args.models:
        model = create_model(name, pretrained=name == "softmap-default")
        chip = model.meta.chip_size
        v32, v16, v32b = [], [], []
        seconds = {"fp32": 0.0, "bf16": 0.0, "fp32_batch7": 0.0}
        for source in cat.list():
            if not source.sensor.startswith("Sentinel-2"):
                continue
            tiles = scene_tiles(source, chip)
            step = max(1, len(tiles) // args.max_tiles)
            tiles = tiles[::step][: args.max_tiles]
            runs = (("fp32", v32, args.batch_size), ("bf16", v16, args.batch_size),
                    ("fp32_batch7", v32b, 7))  # fmt: skip
            for label, acc, batch in runs:
                engine = EmbeddingEngine(
                    model, device="cpu", batch_size=batch, readers=0,
                    precision="bf16" if label == "bf16" else "fp32",
                )  # fmt: skip
                t0 = time.perf_counter()
                acc.append(embed(engine, tiles, source))
                seconds[label] += time.perf_counter() - t0
        a32, a16 = np.concatenate(v32), np.concatenate(v16)
        result = compare(a32, a16, args.queries)
        # Control: the same fp32 computation in other batch sizes (kernel-level noise alone).
        control = compare(a32, np.concatenate(v32b), args.queries)
        result["control_fp32_batch7"] = {
            "one_minus_cos_mean": control["one_minus_cos"]["mean"],
            "one_minus_cos_max": control["one_minus_cos"]["max"],
            "top10_overlap": control["top10_overlap_pure"],
        }
        result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
        result["weights"] = "bundled" if name == "softmap-default" else "seeded random init"
        report["models"][name] = result
        print(name, json.dumps(result, indent=1), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(report, indent=2))
    print("\n| model | tiles | 1-cos mean | 1-cos p99 | 1-cos max | NN gap p1 | NN gap p50 "
          "| top-10 pure | top-10 mixed | control 1-cos mean | control top-10 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in report["models"].items():
        c, g, k = r["one_minus_cos"], r["nn_gap"], r["control_fp32_batch7"]
        print(
            f"| {name} | {r['tiles']} | {c['mean']:.2e} | {c['p99']:.2e} | {c['max']:.2e} "
            f"| {g['p1']:.2e} | {g['p50']:.2e} | {r['top10_overlap_pure']:.3f} "
            f"| {r['top10_overlap_mixed']:.3f} | {k['one_minus_cos_mean']:.2e} "
            f"| {k['top10_overlap']:.3f} |"
        )


if __name__ == "__main__":
    main()
