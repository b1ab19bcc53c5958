"""Eight clients at once against one service: each embeds its own region with ``test-vit`` and
then searches, while the others' jobs run and a ninth labels, classifies and projects; bounded to
well under a minute of traffic."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.test_server_process import service

MODEL = "test-vit"
#: Eight regions of about 2-3 km, far enough apart that no tile is shared.
REGIONS = [
    ("demo/virginia", "-75.72,37.60,-75.69,37.63"),
    ("demo/virginia", "-75.66,37.60,-75.63,37.63"),
    ("demo/virginia", "-75.60,37.60,-75.57,37.63"),
    ("demo/virginia", "-75.72,37.68,-75.69,37.71"),
    ("demo/brandenburg", "12.50,52.46,12.53,52.48"),
    ("demo/brandenburg", "12.56,52.46,12.59,52.48"),
    ("demo/brandenburg", "12.62,52.46,12.65,52.48"),
    ("demo/brandenburg", "12.50,52.50,12.53,52.52"),
]
#: Traffic stops this long after the last job finished (or at the deadline).
TAIL_S = 5.0
DEADLINE_S = 120.0


@pytest.mark.slow
def test_eight_clients_embed_and_search_at_once(venv_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "cache.duckdb"
    problems: list[str] = []
    results: dict[int, dict[str, Any]] = {}
    counts = {"search": 0, "health": 0, "poll": 0, "writes": 0}
    lock = threading.Lock()
    finished = threading.Event()
    start_gate = threading.Barrier(len(REGIONS))

    def client(i: int, url: str) -> None:
        source, bbox = REGIONS[i]
        body = {
            "source": source,
            "region": {"bbox": bbox},
            "model": MODEL,
            "engine": {"device": "cpu", "batch_size": 4},
        }
        with httpx.Client(base_url=url, timeout=60) as http:
            start_gate.wait()
            r = http.post("/embed", json=body)
            if r.status_code != 202:
                problems.append(f"client {i}: POST /embed {r.status_code} {r.text}")
                return
            job_id = r.json()["id"]
            while True:  # poll the job and the health check while it is queued or runs
                job = http.get(f"/jobs/{job_id}").json()
                health = http.get("/health")
                with lock:
                    counts["poll"] += 1
                    counts["health"] += 1
                if health.status_code != 200:
                    problems.append(f"client {i}: health {health.status_code}")
                if job["state"] in ("completed", "failed", "cancelled", "interrupted"):
                    break
                time.sleep(0.05)
            if job["state"] != "completed":
                problems.append(f"client {i}: job {job['state']}: {job['error']}")
                return
            results[i] = job["result"]
            tiles = job["result"]["tile_ids"]
            n = 0
            while not finished.is_set():  # search its own tiles while others still embed
                q = {"model": MODEL, "tile": tiles[n % len(tiles)], "k": 5, "source": source}
                s = http.get("/search", params=q)
                if s.status_code != 200:
                    problems.append(f"client {i}: search {s.status_code} {s.text}")
                    return
                hits = s.json()["results"]
                if not hits or any(h["source_id"] != source for h in hits):
                    problems.append(f"client {i}: bad hits {hits}")
                n += 1
                with lock:
                    counts["search"] += 1

    def labeller(url: str) -> None:
        """Small writes (labels, a classifier, a projection) while the others' jobs run."""
        with httpx.Client(base_url=url, timeout=60) as http:
            while 0 not in results and not finished.is_set():
                time.sleep(0.1)
            if 0 not in results:
                return
            ids = results[0]["tile_ids"]
            scope = {"model": MODEL, "region": {"bbox": REGIONS[0][1]}}
            calls = [
                ("/classes/probe/labels", {"tiles": ids[:3]}),
                ("/classes/probe/labels", {"tiles": ids[-3:], "negative": True}),
                ("/classify", {"name": "probe", "scope": scope}),
                ("/projection", {"scope": scope, "method": "pca", "refit": True}),
            ]
            while not finished.is_set():
                for path, body in calls:
                    r = http.post(path, json=body)
                    if r.status_code != 200:
                        problems.append(f"labeller: {path} {r.status_code} {r.text}")
                        return
                    with lock:
                        counts["writes"] += 1

    with service(venv_bin, db) as (_, url):
        threads = [threading.Thread(target=client, args=(i, url)) for i in range(len(REGIONS))]
        threads.append(threading.Thread(target=labeller, args=(url,)))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # Stop the traffic TAIL_S after every job is done (or at the deadline).
        while time.monotonic() - t0 < DEADLINE_S and len(results) + len(problems) < len(REGIONS):
            time.sleep(0.2)
        time.sleep(TAIL_S)
        finished.set()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - t0
        assert not problems, "\n".join(problems)
        assert len(results) == len(REGIONS)
        runs = httpx.get(f"{url}/runs", params={"limit": 50}).json()
        assert [r["status"] for r in runs["runs"]].count("completed") == len(REGIONS)
        stats = runs["cache"]

    print(f"\n8 clients: {counts} requests in {elapsed:.1f} s")
    assert elapsed < DEADLINE_S + 60
    assert counts["search"] >= len(REGIONS) and counts["writes"] > 0
    tile_sets = [set(r["tile_ids"]) for r in results.values()]
    union = set().union(*tile_sets)
    assert sum(len(s) for s in tile_sets) == len(union)  # the regions share no tile
    assert all(r["computed"] == r["tiles"] and r["cached"] == 0 for r in results.values())
    assert stats["embeddings"] == len(union)
    # The cache afterwards, opened on its own: every tile once, every run closed.
    con = duckdb.connect(str(db), read_only=True)
    (table,) = con.execute("SELECT table_name FROM embedding_sets").fetchone() or ("",)
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT tile_id) FROM {table}").fetchone()
    stored = {r[0] for r in con.execute(f"SELECT tile_id FROM {table}").fetchall()}
    open_runs = con.execute("SELECT count(*) FROM runs WHERE status <> 'completed'").fetchone()
    con.close()
    assert n == distinct == len(union) and stored == union
    assert open_runs == (0,)
