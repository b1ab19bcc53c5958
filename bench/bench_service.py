"""Latency of small requests to the HTTP service while an embedding job runs.

Starts ``softmap serve`` on a fresh cache (a real uvicorn process on a loopback port), embeds a
small region for the searches to find, then measures, in one run:

* **idle**: ``GET /health`` and ``GET /search`` (k=10 over the cached tiles), one at a time,
  with nothing else running;
* **busy**: the same requests while an ``embed`` job computes a large region in the service's
  job thread (test-vit on the CPU: the cores are busy with the model).

Reports p50/p95/max in milliseconds and the ratio busy/idle, prints a Markdown table and writes
``bench/results/service.json``. Figures from a shared machine are noisy: compare within a run.

    .venv/bin/python bench/bench_service.py [--requests 200] [--model test-vit]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results"
SMALL = "-75.66,37.64,-75.625,37.67"
LARGE = "-75.72,37.59,-75.52,37.75"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(http: httpx.Client, path: str, params: dict[str, object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = http.get(path, params=params)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def start(db: Path) -> tuple[subprocess.Popen[bytes], str]:
    from backend.server.locator import read_locator

    env = {**os.environ, "SOFTMAP_OFFLINE": "1"}
    softmap = Path(sys.executable).parent / "softmap"
    proc = subprocess.Popen(
        [str(softmap), "serve", "--db", str(db), "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (found := read_locator(db)) is None or found.pid != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the service did not start")
        time.sleep(0.1)
    return proc, found.url


def wait(http: httpx.Client, job_id: str) -> dict[str, object]:
    while True:
        job = http.get(f"/jobs/{job_id}").json()
        if job["state"] in ("completed", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="requests per endpoint and phase")
    ap.add_argument("--model", default="test-vit")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-service-"))
    proc, url = start(folder / "cache.duckdb")
    rows: dict[str, dict[str, float]] = {}
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            body = {"source": "demo/virginia", "region": {"bbox": SMALL}, "model": args.model}
            warm = wait(http, http.post("/embed", json=body).json()["id"])
            tile = warm["result"]["tile_ids"][0]  # type: ignore[index]
            search = {"model": args.model, "tile": tile, "k": 10}
            samples: dict[str, list[float]] = {}
            samples["health idle"] = measure(http, "/health", {}, args.requests)
            samples["search idle"] = measure(http, "/search", search, args.requests)
            big = {**body, "region": {"bbox": LARGE}, "engine": {"batch_size": 4}}
            job = http.post("/embed", json=big).json()
            while http.get(f"/jobs/{job['id']}").json()["state"] != "running":
                time.sleep(0.05)
            # Alternate the two while the job runs; stop when it ends or both have N samples.
            samples["health busy"], samples["search busy"] = [], []
            while len(samples["search busy"]) < args.requests:
                samples["health busy"] += measure(http, "/health", {}, 1)
                samples["search busy"] += measure(http, "/search", search, 1)
                if (
                    len(samples["search busy"]) % 10 == 0
                    and http.get(f"/jobs/{job['id']}").json()["state"] != "running"
                ):
                    break
            still_running = http.get(f"/jobs/{job['id']}").json()["state"] == "running"
            done = wait(http, job["id"])
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    for name, values in samples.items():
        rows[name] = {
            "p50_ms": round(statistics.median(values), 2),
            "p95_ms": round(percentile(values, 0.95), 2),
            "max_ms": round(max(values), 2),
            "n": len(values),
        }
    for what in ("health", "search"):
        rows[f"{what} busy"]["p50_ratio"] = round(
            rows[f"{what} busy"]["p50_ms"] / rows[f"{what} idle"]["p50_ms"], 2
        )
    out = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "model": args.model,
        "requests": args.requests,
        "job_still_running_after_busy_phase": still_running,
        "job": {"tiles": done["result"]["tiles"], "progress": done["progress"]},  # type: ignore[index]
        "latency": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(out, indent=2) + "\n")
    print("| request | n | p50 ms | p95 ms | max ms | busy/idle p50 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        ratio = f"{r['p50_ratio']:.2f}" if "p50_ratio" in r else ""
        n = len(samples[name])
        print(
            f"| {name} | {n} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} "
            f"| {ratio} |"
        )
    print(f"embed job: {out['job']}; still running after the busy phase: {still_running}")


if __name__ == "__main__":
    main()
