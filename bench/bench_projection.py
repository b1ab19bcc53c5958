"""Projection timings: the fresh-process JIT cost before and after the on-disk JIT cache, UMAP
fit time by size (SoftMap's fit against the previous one, in the same run), and a cached view.

    .venv/bin/python bench/bench_projection.py [--sizes 10000,50000] [--skip-jit] [--epochs N]
        [--no-seed] [--repeat 2]

* data: clustered synthetic 384-d vectors (40 Gaussian clusters around random unit centres,
  seed 0), the shape of real embeddings, where random uniform data would be unrealistically hard;
* jit: fresh subprocesses each timing ``import umap`` and a warm-up fit + transform (what a first
  fit pays): ``before`` = the previous code (plain umap-learn, pynndescent, no on-disk cache),
  ``first after install`` = SoftMap with an empty JIT cache folder (compiles and stores),
  ``every later process`` = SoftMap with that folder filled. Wall and CPU seconds: CPU time moves
  less with the load of a shared machine;
* fit: ``fit_reducer`` with the app's defaults (seeded, PCA-50, n_neighbors 15, min_dist 0.1,
  UMAP's default epochs) against ``legacy_fit`` (the previous fit_reducer: pynndescent inside
  UMAP), alternated per size and repeat, after a warm-up of both in the same process, so JIT is
  excluded; ratios new/legacy are per pair;
* cached view: ``project`` on a temporary DuckDB cache holding a stored projection of the largest
  size, median of 5 calls.

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
import resource, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
if sys.argv[1] == "before":
    import umap
    t1 = time.perf_counter()
    sys.path.insert(0, "bench")
    from bench_projection import legacy_warm_up
    legacy_warm_up()
else:
    from backend.analysis.projection import import_umap, warm_up
    import_umap()
    t1 = time.perf_counter()
    warm_up()
t2 = time.perf_counter()
r = resource.getrusage(resource.RUSAGE_SELF)
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {r.ru_utime + r.ru_stime:.3f}")
"""


def legacy_fit(x: np.ndarray, params: ProjectionParams) -> np.ndarray:
    """The previous ``fit_reducer`` (UMAP computing its own neighbours with pynndescent)."""
    import umap
    from sklearn.decomposition import PCA

    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if params.pca_dims and x.shape[1] > params.pca_dims:
        u = PCA(n_components=params.pca_dims, random_state=params.seed).fit_transform(u)
    reducer = umap.UMAP(n_components=2, n_neighbors=params.n_neighbors, min_dist=params.min_dist,
                        n_epochs=params.n_epochs, init="pca", random_state=params.seed,
                        n_jobs=1 if params.seed is not None else -1)  # fmt: skip
    return np.asarray(reducer.fit_transform(u.astype(np.float32)), dtype=np.float32)


def legacy_warm_up() -> None:
    """The previous warm-up (4,500 random 8-d points, 20 epochs, one transform)."""
    import umap

    x = np.random.default_rng(0).normal(size=(4500, 8)).astype(np.float32)
    reducer = umap.UMAP(n_components=2, n_neighbors=15, n_epochs=20, init="pca", random_state=0,
                        n_jobs=1).fit(x)  # fmt: skip
    reducer.transform(x[:8] + 0.01)


def clustered(n: int, dim: int = 384, clusters: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, size=n)
    return (centres[labels] + rng.normal(scale=0.35 / np.sqrt(dim) * 4, size=(n, dim))).astype(
        np.float32
    )


def _jit_run(mode: str, cache_dir: Path) -> dict[str, float]:
    env = {**os.environ, "SOFTMAP_JIT_CACHE_DIR": str(cache_dir)}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", _JIT, mode], capture_output=True, text=True,
                         cwd=ROOT, check=True, env=env)  # fmt: skip
    imp, warm, cpu = (float(v) for v in out.stdout.split()[-3:])
    return {"import_umap_s": imp, "warm_up_s": warm, "cpu_s": cpu, "wall_s": round(imp + warm, 3)}


def jit_cost() -> dict[str, dict[str, float]]:
    """Fresh-process cost: previous code, SoftMap's first process after install, a later one."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jit"
        out = {"before": _jit_run("before", folder)}
        out["first_after_install"] = _jit_run("softmap", folder)
        out["every_later_process"] = _jit_run("softmap", folder)
        out["before_again"] = _jit_run("before", folder)  # the load may have changed meanwhile
        out["later_again"] = _jit_run("softmap", folder)
    return out


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
    ap.add_argument("--sizes", default="10000,50000")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--no-seed", action="store_true", help="unseeded (parallel) UMAP")
    ap.add_argument("--skip-jit", action="store_true")
    ap.add_argument("--repeat", type=int, default=2, help="alternated pairs per size")
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
        print(f"JIT (fresh processes): {json.dumps(report['jit'])}", flush=True)
        _save(report)
    warm_up()
    legacy_warm_up()
    fits = []
    for n in sizes:
        x = clustered(n)
        params = ProjectionParams(n_epochs=args.epochs, seed=seed)
        for _ in range(args.repeat):
            t = time.perf_counter()
            _, xy = fit_reducer(x, params)
            new_s = time.perf_counter() - t
            t = time.perf_counter()
            old_xy = legacy_fit(x, params)
            old_s = time.perf_counter() - t
            assert xy.shape == old_xy.shape == (n, 2)
            fits.append({"n": n, "softmap_s": round(new_s, 2), "legacy_s": round(old_s, 2),
                         "ratio": round(new_s / old_s, 3), "load_avg": os.getloadavg()[0],
                         "trustworthiness_softmap": _trust(x, xy),
                         "trustworthiness_legacy": _trust(x, old_xy)})  # fmt: skip
            print(f"n={n}: softmap {new_s:.1f} s, previous {old_s:.1f} s, ratio "
                  f"{new_s / old_s:.2f} (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
            report["fits"] = fits
            _save(report)
    n_view = max(sizes)
    report["cached_view"] = cached_view(
        n_view, clustered(n_view), ProjectionParams(method="pca", seed=seed)
    )
    print(f"cached view: {report['cached_view']}", flush=True)
    _save(report)
    print("\n| n | SoftMap fit s | previous fit s | ratio | trustworthiness SoftMap / previous |")
    print("|---|---|---|---|---|")
    for f in fits:
        print(f"| {f['n']} | {f['softmap_s']} | {f['legacy_s']} | {f['ratio']} | "
              f"{f['trustworthiness_softmap']} / {f['trustworthiness_legacy']} |")  # fmt: skip


def _trust(x: np.ndarray, xy: np.ndarray, sample: int = 2000) -> float:
    """Trustworthiness (k=10) of the layout on a sample: how well it keeps local neighbours."""
    from sklearn.manifold import trustworthiness

    idx = np.random.default_rng(0).choice(len(x), min(sample, len(x)), replace=False)
    u = x[idx] / np.linalg.norm(x[idx], axis=1, keepdims=True)
    return round(float(trustworthiness(u, xy[idx], n_neighbors=10)), 4)


if __name__ == "__main__":
    main()
