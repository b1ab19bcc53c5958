"""Similarity search: latency and recall@10 of SoftMap's engines against NumPy and faiss.

Clustered synthetic 384-d vectors (Gaussian clusters in a 32-d subspace plus isotropic noise, like
real embeddings; pure random data is a worst case no HNSW handles). For each size, in one run:

* ``numpy``: brute force ``X @ q`` + ``argpartition`` over the unit-normalised matrix (the
  ground truth for recall);
* ``faiss-flat``: faiss-cpu ``IndexFlatIP`` (exact);
* ``softmap-exact``: ``VectorIndex.top(engine="exact")``;
* ``softmap-hnsw``: ``VectorIndex.top(engine="hnsw")`` (usearch graph, exact re-scoring).

One query at a time (as the app asks), queries are perturbed data points. Prints a Markdown table
and writes ``bench/results/search.json``.

    .venv/bin/python bench/bench_search.py --sizes 10000,100000 [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from backend.search.index import (
    HNSW_CONNECTIVITY,
    HNSW_EXPANSION_ADD,
    HNSW_EXPANSION_SEARCH,
    VectorIndex,
    normalise,
)

DIM = 384
RESULTS = Path(__file__).parent / "results"


def clustered(n: int, seed: int = 0, clusters: int = 200, sub: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, sub)) * 2.5
    proj = (rng.normal(size=(sub, DIM)) / np.sqrt(sub)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for i in range(0, n, 100_000):  # in chunks: bounded temporary memory at 1M
        m = min(100_000, n - i)
        low = centers[rng.integers(0, clusters, m)] + rng.normal(size=(m, sub))
        out[i : i + m] = low.astype(np.float32) @ proj
        out[i : i + m] += 0.35 * rng.normal(size=(m, DIM)).astype(np.float32)
    return out


def timed(fn, queries: np.ndarray) -> tuple[list[float], list[np.ndarray]]:  # type: ignore[no-untyped-def]
    lat, out = [], []
    fn(queries[0])  # warm up
    for q in queries:
        t = time.perf_counter()
        out.append(fn(q))
        lat.append((time.perf_counter() - t) * 1e3)
    return lat, out


def recall(found: list[np.ndarray], truth: list[np.ndarray]) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (10 * len(truth))


def bench_size(n: int, n_queries: int) -> list[dict[str, object]]:
    import faiss

    x = clustered(n)
    rng = np.random.default_rng(1)
    queries = normalise(x[rng.choice(n, n_queries, replace=False)]
                        + 0.1 * rng.normal(size=(n_queries, DIM)).astype(np.float32))  # fmt: skip
    rows: list[dict[str, object]] = []

    t = time.perf_counter()
    index = VectorIndex.from_arrays([str(i) for i in range(n)], x)
    load_s = time.perf_counter() - t
    unit = index.matrix
    del x

    def numpy_top(q: np.ndarray) -> np.ndarray:
        s = unit @ q
        part = np.argpartition(-s, 10)[:10]
        return part[np.argsort(-s[part])]

    lat, truth = timed(numpy_top, queries)
    rows.append(_row(n, "numpy", lat, 1.0, 0.0, unit.nbytes))

    t = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(unit)
    build = time.perf_counter() - t
    lat, found = timed(lambda q: flat.search(q.reshape(1, -1), 10)[1][0], queries)
    rows.append(_row(n, "faiss-flat", lat, recall(found, truth), build, unit.nbytes))
    flat.reset()  # frees its copy of the vectors

    lat, found = timed(lambda q: index.top(q, 10, engine="exact").rows, queries)
    rows.append(_row(n, "softmap-exact", lat, recall(found, truth), load_s, unit.nbytes))

    t = time.perf_counter()
    index.build_hnsw()
    build = time.perf_counter() - t
    lat, found = timed(lambda q: index.top(q, 10, engine="hnsw").rows, queries)
    rows.append(_row(n, "softmap-hnsw", lat, recall(found, truth), build, index.memory_bytes()))
    return rows


def _row(n: int, engine: str, lat: list[float], rec: float, build_s: float, mem: int
         ) -> dict[str, object]:  # fmt: skip
    return {
        "n": n,
        "engine": engine,
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "recall_at_10": round(rec, 4),
        "build_s": round(build_s, 2),
        "memory_mb": round(mem / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="comma-separated vector counts")
    p.add_argument("--queries", type=int, default=200)
    args = p.parse_args()
    rows: list[dict[str, object]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += bench_size(n, args.queries)
        print(f"done {n}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "dim": DIM,
        "queries": args.queries,
        "hnsw": {
            "connectivity": HNSW_CONNECTIVITY,
            "expansion_add": HNSW_EXPANSION_ADD,
            "expansion_search": HNSW_EXPANSION_SEARCH,
            "dtype": "f16",
        },
    }
    (RESULTS / "search.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("| vectors | engine | p50 ms | p95 ms | recall@10 | build s | memory MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['engine']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['recall_at_10']} | {r['build_s']} | {r['memory_mb']} |")  # fmt: skip


if __name__ == "__main__":
    main()
