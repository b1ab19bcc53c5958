"""The ``softmap`` console script, run as a user would: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import VIRGINIA_SMALL_BBOX, another_process_holding


def softmap(
    venv_bin: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SOFTMAP_OFFLINE": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [str(venv_bin / "softmap"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=full_env,
    )


def test_sources_and_models(venv_bin: Path) -> None:
    out = json.loads(softmap(venv_bin, "sources", "--json").stdout)
    ids = {s["id"]: s for s in out["sources"]}
    assert set(ids) == {"demo/brandenburg", "demo/virginia"}
    assert ids["demo/virginia"]["crs"] == "EPSG:32618"
    assert ids["demo/virginia"]["bands"]["B05"] == 20
    table = softmap(venv_bin, "sources").stdout
    assert "demo/virginia" in table and "L1C" in table

    models = json.loads(softmap(venv_bin, "models", "--json").stdout)["models"]
    by_id = {m["id"]: m for m in models}
    assert {"softcon-vits14-s2", "softcon-vitb14-s2", "softcon-rn50-s2", "softcon-vits14-s1",
            "softcon-vitb14-s1", "softcon-rn50-s1", "test-vit"} <= set(by_id)  # fmt: skip
    assert by_id["softcon-vits14-s2"]["normalization"] == "ssl4eo"
    assert by_id["softcon-rn50-s1"]["bands"] == ["VV", "VH"]


def test_embed_json_then_cached(venv_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    args = ("embed", "--source", "demo/virginia", "--bbox", VIRGINIA_SMALL_BBOX,
            "--model", "test-vit", "--db", str(db), "--json")  # fmt: skip
    first = softmap(venv_bin, *args)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    for key in ("tiles", "computed", "cached", "skipped", "seconds", "tiles_per_s", "db"):
        assert key in result
    assert result["computed"] == result["tiles"] > 0 and result["db"] == str(db)
    assert "tile" in first.stderr  # the progress bar went to stderr, not stdout
    second = json.loads(softmap(venv_bin, *args).stdout)
    assert second["computed"] == 0 and second["cached"] == result["tiles"]
    aoi = tmp_path / "aoi.geojson"
    w, s, e, n = (float(v) for v in VIRGINIA_SMALL_BBOX.split(","))
    aoi.write_text(json.dumps({"type": "Feature", "geometry": {"type": "Polygon",
        "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}}))  # fmt: skip
    third = softmap(venv_bin, "embed", "--source", "demo/virginia", "--aoi", str(aoi),
                    "--model", "test-vit", "--db", str(db), "--json")  # fmt: skip
    assert json.loads(third.stdout)["cached"] == result["tiles"]
    runs = json.loads(softmap(venv_bin, "runs", "--db", str(db), "--json").stdout)
    assert runs["cache"]["embeddings"] == result["tiles"]
    assert [r["status"] for r in runs["runs"]] == ["completed"] * 3
    assert [r["computed"] for r in runs["runs"]] == [0, 0, result["tiles"]]  # newest first
    assert "completed" in softmap(venv_bin, "runs", "--db", str(db)).stdout


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"--bbox": "1,2,3"}, "four numbers"),
        ({"--bbox": "12.6,52.48,12.63,52.49"}, "Sources that cover it: demo/brandenburg"),
        ({"--bbox": "-80,30,-70,40"}, "more than the limit"),
        ({"--source": "demo/nowhere"}, "There is no source 'demo/nowhere'"),
        ({"--model": "softcon-vits15-s2"}, "Did you mean 'softcon-vits14-s2'"),
        ({"--model": "softcon-vits14-s2"}, "B13_vits14_softcon.pth"),
        ({"--checkpoint": "/nonexistent.pth"}, "/nonexistent.pth"),
        ({"--device": "cuda:7"}, "CUDA"),
        ({"--bbox": None, "--aoi": "/nonexistent.geojson"}, "does not exist"),
        ({"--batch-size": "0"}, "at least 1"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    venv_bin: Path, tmp_path: Path, options: dict[str, str | None], fragment: str
) -> None:
    args = {
        "--source": "demo/virginia",
        "--bbox": VIRGINIA_SMALL_BBOX,
        "--model": "test-vit",
        "--db": str(tmp_path / "x.duckdb"),
        **options,
    }
    proc = softmap(
        venv_bin, "embed", *[x for k, v in args.items() if v is not None for x in (k, v)]
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]


def test_locked_database_exits_2(venv_bin: Path, tmp_path: Path) -> None:
    db = tmp_path / "locked.duckdb"
    with another_process_holding(db) as pid:
        proc = softmap(
            venv_bin, "embed", "--source", "demo/virginia", "--bbox", VIRGINIA_SMALL_BBOX,
            "--model", "test-vit", "--db", str(db),
        )  # fmt: skip
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"in use by process {pid}" in proc.stderr
    assert "--db" in proc.stderr
