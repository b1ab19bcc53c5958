"""The service as a real process (``softmap serve`` under uvicorn on a loopback port): the CLI
goes through it, a token is required off loopback, and a job killed with the service resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.server.locator import locator_path, read_locator
from tests.conftest import VIRGINIA_SMALL_BBOX

MODEL = "test-vit"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "SOFTMAP_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **extra}
    for key in ("SOFTMAP_BACKEND_URL", "SOFTMAP_BACKEND_TOKEN", "SOFTMAP_SERVER_TOKEN"):
        if key not in extra:
            env.pop(key, None)
    return env


@contextmanager
def service(
    venv_bin: Path, db: Path, *args: str, **env: str
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``softmap serve --port 0`` on ``db``; yields the process and its URL (from the locator)."""
    log = db.parent / f"serve-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(venv_bin / "softmap"), "serve", "--db", str(db), "--port", "0", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(**env),
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            found = read_locator(db)
            if found is not None and found.pid == proc.pid:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"service did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield proc, found.url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def softmap(venv_bin: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_bin / "softmap"), *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=180,
    )


def wait_job(url: str, job_id: str, timeout: float = 180, **kw: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/jobs/{job_id}", **kw).json()
        if job["state"] in ("completed", "failed", "cancelled"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.slow
def test_cli_goes_through_the_service_that_owns_the_cache(venv_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "cache.duckdb"
    with service(venv_bin, db) as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        assert json.loads(locator_path(db).read_text())["pid"] == proc.pid
        runs = softmap(venv_bin, "runs", "--db", str(db))
        assert runs.returncode == 0, runs.stderr
        assert f"via {url}" in runs.stdout
        embed = softmap(
            venv_bin, "embed", "--db", str(db), "--source", "demo/virginia",
            "--bbox", VIRGINIA_SMALL_BBOX, "--model", MODEL, "--device", "cpu", "--json",
        )  # fmt: skip
        assert embed.returncode == 0, embed.stderr
        out = json.loads(embed.stdout)
        assert out["tiles"] == 16 and out["computed"] == 16 and out["db"] == str(db.resolve())
        again = softmap(
            venv_bin, "embed", "--db", str(db), "--source", "demo/virginia",
            "--bbox", VIRGINIA_SMALL_BBOX, "--model", MODEL, "--json",
        )  # fmt: skip
        assert json.loads(again.stdout)["cached"] == 16
        search = softmap(
            venv_bin, "search", "--db", str(db), "--model", MODEL,
            "--point", "-75.64,37.65", "--k", "3", "--json",
        )  # fmt: skip
        assert search.returncode == 0, search.stderr
        assert len(json.loads(search.stdout)["results"]) == 3
        listed = softmap(venv_bin, "runs", "--db", str(db), "--json")
        assert len(json.loads(listed.stdout)["runs"]) == 2
        # Mistakes come back as the same one line as in-process.
        bad = softmap(venv_bin, "search", "--db", str(db), "--model", "nope", "--tile", "x")
        assert bad.returncode == 2 and bad.stderr.startswith("softmap: No cached embeddings")
        assert "Traceback" not in bad.stderr
        # Other commands still need the file: one line naming the service and what to do.
        other = softmap(venv_bin, "label", "list", "--db", str(db))
        assert other.returncode == 2
        assert "Cache database in use" in other.stderr and url in other.stderr
        # A second service on the same cache is refused in one line naming the first.
        second = softmap(venv_bin, "serve", "--db", str(db), "--port", "0")
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith("softmap: Cannot start the service: A SoftMap service")
        assert len(second.stderr.strip().splitlines()) == 1
        # --server / SOFTMAP_BACKEND_URL name a service explicitly.
        named = softmap(venv_bin, "--server", url, "runs", "--db", str(tmp_path / "other.duckdb"))
        assert named.returncode == 0 and f"via {url}" in named.stdout
        env = softmap(venv_bin, "runs", "--json", SOFTMAP_BACKEND_URL=url)
        assert json.loads(env.stdout)["cache"]["embeddings"] == 16
    # A clean exit removes the locator; the CLI then opens the file itself.
    assert proc.returncode == 0
    assert not locator_path(db).exists()
    local = softmap(venv_bin, "runs", "--db", str(db))
    assert local.returncode == 0 and "via" not in local.stdout and "16 embeddings" in local.stdout


def test_stale_locator_is_ignored(venv_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "cache.duckdb"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    locator_path(db).write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": dead.pid, "db": str(db), "started_at": ""})
    )
    assert read_locator(db) is None and not locator_path(db).exists()
    locator_path(db).write_text("{not json")
    r = softmap(venv_bin, "embed", "--db", str(db), "--source", "demo/virginia",
                "--bbox", VIRGINIA_SMALL_BBOX, "--model", MODEL, "--quiet")  # fmt: skip
    assert r.returncode == 0 and "via" not in r.stdout, r.stderr
    down = softmap(venv_bin, "--server", "http://127.0.0.1:9", "runs")
    assert down.returncode == 2
    assert down.stderr.startswith("softmap: SoftMap service unreachable: Cannot reach")


def test_token_required_off_loopback(venv_bin: Path, tmp_path: Path) -> None:
    refused = softmap(venv_bin, "serve", "--db", str(tmp_path / "a.duckdb"), "--host", "0.0.0.0")
    assert refused.returncode == 2
    assert refused.stderr.startswith("softmap: Token required: Binding to 0.0.0.0")
    assert len(refused.stderr.strip().splitlines()) == 1
    db = tmp_path / "cache.duckdb"
    with service(venv_bin, db, "--host", "0.0.0.0", SOFTMAP_SERVER_TOKEN="tok-123") as (_, url):
        assert httpx.get(f"{url}/health/live").status_code == 200
        r = httpx.get(f"{url}/runs")
        assert r.status_code == 401 and r.json()["title"] == "Unauthorized"
        ok = httpx.get(f"{url}/runs", headers={"Authorization": "Bearer tok-123"})
        assert ok.status_code == 200
        # The CLI on the same machine reads the token from the locator (mode 0600).
        assert locator_path(db).stat().st_mode & 0o777 == 0o600
        runs = softmap(venv_bin, "runs", "--db", str(db))
        assert runs.returncode == 0, runs.stderr
        wrong = softmap(venv_bin, "--server", url, "runs", SOFTMAP_BACKEND_TOKEN="nope")
        assert wrong.returncode == 2 and wrong.stderr.startswith("softmap: Unauthorized")


@pytest.mark.slow
def test_job_killed_with_the_service_resumes_and_computes_only_the_rest(
    venv_bin: Path, tmp_path: Path
) -> None:
    import duckdb

    db = tmp_path / "cache.duckdb"
    body = {
        "source": "demo/virginia",
        "region": {"bbox": "-75.70,37.60,-75.62,37.68"},
        "model": MODEL,
        "engine": {"device": "cpu", "batch_size": 2, "readers": 0},
    }
    with service(venv_bin, db) as (proc, url):
        job = httpx.post(f"{url}/embed", json=body).json()
        deadline = time.monotonic() + 120
        while True:
            progress = httpx.get(f"{url}/jobs/{job['id']}").json()["progress"]
            if progress["done"] >= 6:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen, total = progress["done"], progress["total"]
    assert seen < total
    assert locator_path(db).exists() and read_locator(db) is None  # stale: ignored
    with service(venv_bin, db) as (_, url):
        done = wait_job(url, job["id"])
        assert done["state"] == "completed" and done["resumes"] == 1, done
        result = done["result"]
        assert result["cached"] >= seen
        assert result["computed"] == total - result["cached"] > 0
        runs = httpx.get(f"{url}/runs").json()["runs"]
        assert [r["status"] for r in runs] == ["completed", "interrupted"]
        assert runs[1]["computed"] == result["cached"]
    con = duckdb.connect(str(db), read_only=True)
    (table,) = con.execute("SELECT table_name FROM embedding_sets").fetchone() or ("",)
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT tile_id) FROM {table}").fetchone()
    con.close()
    assert n == distinct == total
