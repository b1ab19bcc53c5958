"""Similarity search: latency and recall@10 of SoftMap's engines against NumPy and faiss, and the
index kept beside the cache: build time, memory, reopening in a fresh process, one-shot CLI.

Clustered synthetic 384-d vectors (Gaussian clusters in a 32-d subspace plus isotropic noise, like
real embeddings; pure random data is a worst case no HNSW handles), written to a DuckDB cache as an
embedding set with tile records (``--workdir``, a temporary folder by default). For each size, in
one run:

* ``numpy``: brute force ``X @ q`` + ``argpartition`` over the unit-normalised matrix (the
  ground truth for recall);
* ``faiss-flat``: faiss-cpu ``IndexFlatIP`` (exact);
* ``softmap-exact``: ``VectorIndex.top(engine="exact")``; its build column is the time to read the
  set from DuckDB and write the index files beside the cache;
* ``softmap-hnsw``: ``VectorIndex.top(engine="hnsw")`` (usearch graph, exact re-scoring); build =
  building the graph and saving it beside the cache;
* ``softmap-hnsw-reopened``: the same after forgetting the in-memory index, as a fresh process
  does: the vectors and the graph are memory-mapped from disk (build = time to reopen);
* one-shot CLI: fresh ``softmap search --tile … --json`` processes against the cache (median of
  ``--cli-runs``), beside the start-up of the same interpreter importing the CLI, and once with the
  index files moved away (what every fresh process paid before: read the set, scan exactly).

One query at a time (as the app asks), queries are perturbed data points. Prints Markdown tables
and writes ``bench/results/search.json``.

    .venv/bin/python bench/bench_search.py --sizes 10000,100000 [--queries 200] [--cli-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.search import index_sync
from backend.search.index import (
    HNSW_CONNECTIVITY,
    HNSW_EXPANSION_ADD,
    HNSW_EXPANSION_SEARCH,
    HNSW_MAX_TAIL,
    normalise,
)
from backend.search.index_store import IndexStore, index_folder
from backend.search.index_sync import get_index, set_identity
from backend.store.cache import EmbeddingCache

DIM = 384
MODEL = "bench"
ROOT = Path(__file__).resolve().parent.parent
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


def write_cache(db: Path, x: np.ndarray) -> tuple[float, list[str]]:
    """An embedding set of ``x`` with non-overlapping tile records; returns (seconds, ids)."""
    n = len(x)
    ids = [f"bench/s/224/224/{i // 1000}_{i % 1000}" for i in range(n)]
    t = time.perf_counter()
    with EmbeddingCache(db) as cache:
        eset = cache.embedding_set(MODEL, "synthetic", DIM)
        assert eset is not None
        for s in range(0, n, 50_000):
            cache.write_embeddings(eset, ids[s : s + 50_000], x[s : s + 50_000])
        with cache.transaction() as cur:  # 0.01° squares on a 1000-wide grid: none touch
            cur.execute(
                """INSERT INTO tiles (tile_id, source_id, footprint, min_lon, min_lat, max_lon,
                    max_lat, lon, lat)
                SELECT 'bench/s/224/224/' || (i // 1000) || '_' || (i % 1000), 'bench/s',
                    json_object('type', 'Polygon', 'coordinates', [[[x0, y0], [x0 + 0.01, y0],
                        [x0 + 0.01, y0 + 0.01], [x0, y0 + 0.01], [x0, y0]]]),
                    x0, y0, x0 + 0.01, y0 + 0.01, x0 + 0.005, y0 + 0.005
                FROM (SELECT i, -170 + (i % 1000) * 0.3 AS x0, -80 + (i // 1000) * 0.015 AS y0
                      FROM range(?) t(i))""",
                [n],
            )
    return time.perf_counter() - t, ids


def _fresh(argv: list[str]) -> tuple[float, float]:
    """A fresh interpreter running ``softmap <argv>``: (seconds in ``main`` after importing the
    CLI, seconds the search itself reports, opening the index included)."""
    code = (
        "import contextlib, io, json, sys, time\n"
        "from backend.cli import main\n"
        "out = io.StringIO()\n"
        "t = time.perf_counter()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    rc = main(sys.argv[1:])\n"
        "print(time.perf_counter() - t, rc, json.loads(out.getvalue())['seconds'])\n"
    )
    env = {**os.environ, "SOFTMAP_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         cwd=ROOT, env=env, check=True)  # fmt: skip
    seconds, rc, search_s = out.stdout.split()
    assert rc == "0", out.stderr
    return float(seconds), float(search_s)


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, cwd=ROOT, check=True,
                   env={**os.environ, "SOFTMAP_OFFLINE": "1"})  # fmt: skip
    return time.perf_counter() - t


def one_shot_cli(db: Path, tile: str, runs: int) -> dict[str, float]:
    """Fresh ``softmap search`` processes: with the saved index, the start-up, and without it."""
    argv = ["search", "--db", str(db), "--model", MODEL, "--tile", tile, "--json"]
    script = [sys.executable, "-m", "backend.cli", *argv]
    startup = [sys.executable, "-c", "import backend.cli"]
    inside, searches, walls, starts = [], [], [], []
    for _ in range(runs):  # alternated, so load changes hit both alike
        starts.append(_wall(startup))
        walls.append(_wall(script))
        main_s, search_s = _fresh(argv)
        inside.append(main_s)
        searches.append(search_s)
    folder = index_folder(db)
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    try:
        without = _fresh([*argv[:-1], "--engine", "exact", "--json"])[1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        aside.rename(folder)
    return {
        "main_s_in_process": round(statistics.median(inside), 3),
        "search_s": round(statistics.median(searches), 3),
        "search_wall_s": round(statistics.median(walls), 3),
        "startup_wall_s": round(statistics.median(starts), 3),
        "search_beyond_startup_s": round(statistics.median(walls) - statistics.median(starts), 3),
        "search_without_saved_index_s": round(without, 3),
    }


def bench_size(n: int, n_queries: int, workdir: Path, cli_runs: int) -> dict[str, object]:
    import faiss

    x = clustered(n)
    rng = np.random.default_rng(1)
    queries = normalise(x[rng.choice(n, n_queries, replace=False)]
                        + 0.1 * rng.normal(size=(n_queries, DIM)).astype(np.float32))  # fmt: skip
    rows: list[dict[str, object]] = []
    db = workdir / f"search-{n}.duckdb"
    write_s, ids = write_cache(db, x)
    del x
    print(f"  {n}: cache written in {write_s:.1f} s", flush=True)

    cache = EmbeddingCache(db, read_only=True)
    eset = cache.embedding_sets()[0]
    t = time.perf_counter()
    index = get_index(cache, eset)
    load_s = time.perf_counter() - t
    unit = np.ascontiguousarray(index.matrix)

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
    unit = np.empty((0, DIM), np.float32)  # frees the copy

    lat, found = timed(lambda q: index.top(q, 10, engine="exact").rows, queries)
    rows.append(_row(n, "softmap-exact", lat, recall(found, truth), load_s, index.memory_bytes()))

    print(f"  {n}: building the graph", flush=True)
    t = time.perf_counter()
    index.build_hnsw()
    build = time.perf_counter() - t
    lat, found = timed(lambda q: index.top(q, 10, engine="hnsw").rows, queries)
    rows.append(_row(n, "softmap-hnsw", lat, recall(found, truth), build, index.memory_bytes()))
    index.reset()  # frees the graph
    index_sync._INDEXES.clear()  # as a fresh process: nothing in memory

    t = time.perf_counter()
    reopened = get_index(cache, eset)
    open_s = time.perf_counter() - t
    assert reopened.has_hnsw and reopened.tail == 0
    lat, found = timed(lambda q: reopened.top(q, 10, engine="hnsw").rows, queries)
    rows.append(_row(n, "softmap-hnsw-reopened", lat, recall(found, truth), open_s,
                     reopened.memory_bytes()))  # fmt: skip
    disk = IndexStore.beside(db.resolve(), set_identity(cache, eset)).size_bytes()
    reopened.reset()
    index_sync._INDEXES.clear()
    cache.close()

    print(f"  {n}: one-shot CLI runs", flush=True)
    cli = one_shot_cli(db, ids[n // 2], cli_runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "cli": {"n": n, **cli}, "disk_mb": round(disk / 2**20, 1),
            "cache_write_s": round(write_s, 1), "peak_rss_mb": round(peak)}  # fmt: skip


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
    p.add_argument("--cli-runs", type=int, default=3, help="fresh CLI processes per size")
    p.add_argument("--workdir", type=Path, help="where the caches go (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the caches (with --workdir)")
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="softmap-bench-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    extra: list[dict[str, object]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        out = bench_size(n, args.queries, workdir, args.cli_runs)
        rows += out.pop("rows")  # type: ignore[arg-type]
        extra.append(out)
        print(f"done {n}: {out}", flush=True)
        if not args.keep:
            for f in workdir.glob(f"search-{n}.duckdb*"):
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg_end": os.getloadavg(),
        "dim": DIM,
        "queries": args.queries,
        "hnsw": {
            "connectivity": HNSW_CONNECTIVITY,
            "expansion_add": HNSW_EXPANSION_ADD,
            "expansion_search": HNSW_EXPANSION_SEARCH,
            "dtype": "f16",
            "max_tail": HNSW_MAX_TAIL,
        },
    }
    (RESULTS / "search.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "sizes": extra}, indent=2)
    )
    print("| vectors | engine | p50 ms | p95 ms | recall@10 | build s | memory MB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['engine']} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['recall_at_10']} | {r['build_s']} | {r['memory_mb']} |")  # fmt: skip
    print(
        "\n| vectors | one-shot search s (in process) | wall s | start-up s | beyond start-up s "
        "| without saved index s | index on disk MB | peak RSS MB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in extra:
        c = e["cli"]
        assert isinstance(c, dict)
        print(f"| {c['n']:,} | {c['search_s']} | {c['main_s_in_process']} | "
              f"{c['search_wall_s']} | {c['startup_wall_s']} | {c['search_beyond_startup_s']} | "
              f"{c['search_without_saved_index_s']} | {e['disk_mb']} | "
              f"{e['peak_rss_mb']} |")  # fmt: skip


if __name__ == "__main__":
    main()
