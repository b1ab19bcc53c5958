"""Start the app on loopback and drive it with Debian's Chromium (Playwright, no download).

Used by ``tests/test_browser.py`` (marker ``browser``). Every request to a host other than this
machine is aborted and recorded; tests fail if there was any.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backend.settings import PROJECT_ROOT
from scripts.screenshot import CHROMIUM

SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"


def chromium_or_skip() -> str:
    """The browser binary; a skip without it, a failure when ``SOFTMAP_REQUIRE_BROWSER=1`` (CI)."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    if os.environ.get("SOFTMAP_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_app(db_path: Path, timeout: float = 90.0) -> Iterator[str]:
    """``streamlit run app/main.py`` on a free loopback port; yields its URL once healthy."""
    port = free_port()
    env = {
        **os.environ,
        "SOFTMAP_DB_PATH": str(db_path),
        "SOFTMAP_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    log = db_path.with_suffix(".log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", "app/main.py",
            "--server.address=127.0.0.1", f"--server.port={port}", "--server.headless=true",
        ],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}: see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy after {timeout:.0f} s: see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass
class NetworkLog:
    """Requests the page tried to send off the machine (all aborted)."""

    off_machine: list[str] = field(default_factory=list)
