"""Projection timings: UMAP fit time by size, with and without PCA-50 first, the first-call JIT
cost, and the latency of a cached view.

    .venv/bin/python bench/bench_projection.py [--sizes 10000,50000,100000] [--skip-jit]
        [--epochs N] [--no-seed]

* data: clustered synthetic 384-d vectors (40 Gaussian clusters around random unit centres,
  seed 0), the shape of real embeddings, where random uniform data would be unrealistically hard;
* fit: ``backend.analysis.projection.fit_reducer`` with the defaults the app uses (seeded,
  n_neighbors 15,
  min_dist 0.1, UMAP's default epochs), once per size and variant, after a warm-up in the same
  process, so JIT is excluded;
* jit: a fresh subprocess timing ``import umap`` and ``warm_up()`` (what a first fit pays);
* cached view: ``backend.analysis.projection.project`` on a temporary DuckDB cache holding a stored
  50k
  projection (or the largest size run), median of 5 calls.

Results are printed and written to ``bench/results/projection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from backend.analysis.projection import ProjectionParams, fit_reducer, project, warm_up  # noqa: E402
from backend.store.cache import EmbeddingCache  # noqa: E402
from backend.store.scopes import Scope  # noqa: E402

_JIT = """
import time
t0 = time.perf_counter()
import umap  # noqa: F401
t1 = time.perf_counter()
from backend.analysis.projection import warm_up
w = warm_up()
print(f"{t1 - t0:.3f} {w:.3f}")
"""


def clustered(n: int, dim: int = 384, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    return (centres[labels] + rng.normal(scale=0.35 / np.sqrt(dim) * 4, size=(n, dim))).astype(
        np.float32
    )


def jit_cost() -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _JIT], capture_output=True, text=True, cwd=ROOT, check=True
    )
    imp, warm = (float(v) for v in out.stdout.split())
    return {"import_umap_s": imp, "first_fit_warm_up_s": warm}


def cached_view(n: int, x: np.ndarray, params: ProjectionParams) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, EmbeddingCache(Path(tmp) / "b.duckdb") as cache:
        eset = cache.embedding_set("bench", "synthetic", x.shape[1])
        assert eset is not None
        ids = [f"bench/224/224/{i // 1000}_{i % 1000}" for i in range(n)]
        for s in range(0, n, 10000):
            cache.write_embeddings(eset, ids[s : s + 10000], x[s : s + 10000])
        scope = Scope("all", eset, tuple(sorted(ids)))
        first = project(cache, scope, params)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            again = project(cache, scope, params)
            times.append(time.perf_counter() - t)
            assert again.cached
        return {
            "n": n,
            "fit_and_store_s": first.seconds,
            "cached_view_median_s": statistics.median(times),
        }


def _save(report: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "projection.json").write_text(json.dumps(report, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,50000,100000")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--no-seed", action="store_true", help="unseeded (parallel) UMAP")
    ap.add_argument("--skip-jit", action="store_true")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    seed = None if args.no_seed else 0
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg(),
        },
        "params": {"epochs": args.epochs, "seed": seed},
    }
    if not args.skip_jit:
        report["jit"] = jit_cost()
        print(f"JIT (fresh process): {report['jit']}", flush=True)
    n_view = 50000 if 50000 in sizes else max(sizes)
    report["cached_view"] = cached_view(
        n_view, clustered(n_view), ProjectionParams(method="pca", seed=seed)
    )
    print(f"cached view: {report['cached_view']}", flush=True)
    warm_up()
    fits = []
    for n in sizes:
        x = clustered(n)
        for pca in (50, 0):
            params = ProjectionParams(pca_dims=pca, n_epochs=args.epochs, seed=seed)
            t = time.perf_counter()
            _, xy = fit_reducer(x, params)
            seconds = time.perf_counter() - t
            assert xy.shape == (n, 2)
            fits.append({"n": n, "pca_dims": pca, "seconds": round(seconds, 2),
                         "load_avg": os.getloadavg()[0]})  # fmt: skip
            print(f"n={n} pca={pca}: {seconds:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
            report["fits"] = fits
            _save(report)
    _save(report)
    print("\n| n | PCA-50 first | fit s |\n|---|---|---|")
    for f in fits:
        print(f"| {f['n']} | {'yes' if f['pca_dims'] else 'no'} | {f['seconds']} |")


if __name__ == "__main__":
    main()
