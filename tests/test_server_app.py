"""The app serves its own workspace on loopback, so the CLI on the same cache goes through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.server.locator import locator_path, read_locator
from tests.conftest import VIRGINIA_SMALL_BBOX
from tests.test_server_process import softmap


@pytest.mark.slow
def test_cli_goes_through_the_running_app(
    venv_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "app.duckdb"
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(db))
    monkeypatch.delenv("SOFTMAP_APP_SERVICE", raising=False)
    from app import resources

    at = AppTest.from_file(
        str(Path(__file__).parent.parent / "app" / "main.py"), default_timeout=120
    )
    at.run()
    assert not at.exception
    ws = resources.workspace()  # the app's one workspace: it holds the file
    try:
        found = read_locator(db)
        assert found is not None and found.url.startswith("http://127.0.0.1:")
        embed = softmap(
            venv_bin, "embed", "--db", str(db), "--source", "demo/virginia",
            "--bbox", VIRGINIA_SMALL_BBOX, "--model", "test-vit", "--json",
        )  # fmt: skip
        assert embed.returncode == 0, embed.stderr
        assert json.loads(embed.stdout)["computed"] == 16
        runs = softmap(venv_bin, "runs", "--db", str(db))
        assert runs.returncode == 0 and f"via {found.url}" in runs.stdout
        search = softmap(venv_bin, "search", "--db", str(db), "--model", "test-vit",
                         "--point", "-75.64,37.65", "--json")  # fmt: skip
        assert search.returncode == 0 and json.loads(search.stdout)["results"]
        # The app sees what the CLI embedded through it (one connection, one cache).
        assert ws.shared_cache().stats().embeddings == 16
    finally:
        resources._workspace.clear()  # releases the workspace: stops its service
    assert not locator_path(db).exists()
