"""Every ``softmap`` command with bad arguments: a non-zero exit, at most a few lines on stderr, no
traceback, and the cache still opens with every table unchanged.

The table runs in-process through ``backend.cli.main`` (fast); a few rows run again as real
subprocesses through the installed ``softmap`` script.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from backend.cli import main
from tests.conftest import VIRGINIA_SMALL_BBOX

BOX = VIRGINIA_SMALL_BBOX
#: Placeholders filled per test: {db} the cache, {tmp} a folder, {file} a plain file,
#: {bad_json} a file that is not JSON, {dir_html} a folder named *.html, {tile} a cached tile id.
MAX_STDERR_LINES = 3


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple[str, ...]
    expect: str  # a fragment of stderr
    db: bool = True  # append --db {db} unless the row names its own

    def __str__(self) -> str:
        return self.name


def case(name: str, line: str, expect: str, *, db: bool = True) -> Case:
    return Case(name, tuple(line.split()), expect, db)


EMBED = f"embed --source demo/virginia --bbox {BOX} --model test-vit"
REGION = f"--source demo/virginia --bbox {BOX} --model test-vit"
CASES = [
    # numbers: refused with the allowed range, never reinterpreted
    case("stride 0", f"{EMBED} --stride 0", "--stride: must be a whole number, at least 1"),
    case("stride negative", f"{EMBED} --stride -3", "at least 1"),
    case("stride not a number", f"{EMBED} --stride two", "'two' is not a whole number"),
    case("chip 0", f"{EMBED} --chip 0", "--chip"),
    case("batch size 0", f"{EMBED} --batch-size 0", "--batch-size"),
    case("readers negative", f"{EMBED} --readers -1", "at least 0"),
    case("max cloud above 1", f"{EMBED} --max-cloud 1.5", "in [0, 1]"),
    case("max nodata negative", f"{EMBED} --max-nodata -0.1", "in [0, 1]"),
    case("max cloud nan", f"{EMBED} --max-cloud nan", "not a finite number"),
    case("runs limit 0", "runs --limit 0", "--limit"),
    case("search k 0", "search --model test-vit --tile {tile} --k 0", "--k"),
    case("search threshold 2", "search --model test-vit --tile {tile} --threshold 2", "[-1, 1]"),
    case("suggest k 0", "suggest town --model test-vit --k 0", "--k"),
    case(
        "change k 0",
        f"change --before demo/virginia --after demo/virginia --bbox {BOX} --model test-vit --k 0",
        "--k",
    ),
    case("project neighbours 1", "project --model test-vit --neighbors 1", "at least 2"),
    case("project min-dist negative", "project --model test-vit --min-dist -1", "in [0, 1]"),
    case("project pca dims negative", "project --model test-vit --pca-dims -1", "at least 0"),
    case("project seed negative", "project --model test-vit --seed -1", "--seed"),
    case("landcover min-labelled 2", f"landcover {REGION} --min-labelled 2", "in [0, 1]"),
    case(
        "stac max cloud 150",
        f"stac search --bbox {BOX} --dates 2024-06-01 --max-cloud 150",
        "in [0, 100]",
        db=False,
    ),
    case(
        "stac limit 0",
        f"stac search --bbox {BOX} --dates 2024-06-01 --limit 0",
        "--limit",
        db=False,
    ),
    case("train epochs 0", "train softcon --out {tmp}/t --epochs 0", "--epochs", db=False),
    case("train lr 0", "train softcon --out {tmp}/t --lr 0", "--lr: must be > 0", db=False),
    case("train mask ratio 1", "train softcon --out {tmp}/t --mask-ratio 1", "[0, 1)", db=False),
    case("train batch 1", "train softcon --out {tmp}/t --batch-size 1", "at least 2", db=False),
    case("evaluate c 0", "eval --c 0", "--c", db=False),
    # paths: checked before any work
    case("db under /proc", f"{EMBED} --db /proc/softmap/c.duckdb", "cannot be created"),
    case("db is a folder", f"{EMBED} --db {{tmp}}", "is a folder"),
    case("db under a file", f"{EMBED} --db {{file}}/c.duckdb", "is a file"),
    case(
        "report out under /proc", f"report {REGION} --out /proc/softmap/r.html", "cannot be created"
    ),
    case("report out pdf", f"report {REGION} --out {{tmp}}/r.pdf", ".html"),
    case("report out is a folder", f"report {REGION} --out {{dir_html}}", "is a folder"),
    case(
        "export xlsx",
        "export embeddings --model test-vit --out {tmp}/e.xlsx",
        ".parquet (GeoParquet)",
    ),
    case("export no extension", "export embeddings --model test-vit --out {tmp}/e", "no extension"),
    case("export map png", "export map --class town --model test-vit --out {tmp}/m.png", ".tif"),
    case(
        "export predictions csv",
        "export predictions --class town --model test-vit --out {tmp}/p.csv",
        ".geojson",
    ),
    case("export unknown kind", "export pictures --out {tmp}/x.parquet", "invalid choice"),
    case("classify map png", "classify town --model test-vit --map {tmp}/m.png", ".tif"),
    case("classify areas xlsx", "classify town --model test-vit --areas {tmp}/a.xlsx", ".csv"),
    case("project out txt", "project --model test-vit --out {tmp}/p.txt", ".geojson"),
    case("landcover out png", f"landcover {REGION} --out {{tmp}}/m.png", ".tif"),
    case(
        "change out png",
        f"change --before demo/virginia --after demo/virginia --bbox {BOX} "
        "--model test-vit --out {tmp}/c.png",
        ".tif",
    ),
    case("label export txt", "label export --out {tmp}/l.txt", ".geojson"),
    case("label import missing", "label import {tmp}/missing.geojson", "does not exist"),
    case(
        "aoi missing",
        "embed --source demo/virginia --aoi {tmp}/none.geojson --model test-vit",
        "does not exist",
    ),
    case(
        "aoi is a folder",
        "embed --source demo/virginia --aoi {tmp} --model test-vit",
        "is a folder",
    ),
    case(
        "aoi not json",
        "embed --source demo/virginia --aoi {bad_json} --model test-vit",
        "not valid JSON",
    ),
    case("checkpoint missing", f"{EMBED} --checkpoint {{tmp}}/w.pth", "does not exist"),
    case("train out is a file", "train softcon --out {file}", "is a file", db=False),
    case("sources add missing", "sources add {tmp}/nothing.tif", "does not exist"),
    # regions, ids, names
    case(
        "whole world",
        "embed --source demo/virginia --bbox -180,-90,180,90 --model test-vit",
        "510,065,622 km², more than the limit of 2,500 km²",
    ),
    case(
        "outside the scene",
        "embed --source demo/virginia --bbox 10,10,10.1,10.1 --model test-vit",
        "does not overlap demo/virginia",
    ),
    case(
        "bbox three numbers",
        "embed --source demo/virginia --bbox 1,2,3 --model test-vit",
        "four numbers",
    ),
    case(
        "bbox words", "embed --source demo/virginia --bbox a,b,c,d --model test-vit", "not a number"
    ),
    case(
        "bbox inverted",
        "embed --source demo/virginia --bbox -75.6,37.7,-75.7,37.6 --model test-vit",
        "inverted",
    ),
    case(
        "bbox in metres",
        "embed --source demo/virginia --bbox 400000,4160000,401000,4161000 --model test-vit",
        "projected coordinates",
    ),
    case(
        "unknown source",
        f"embed --source demo/nowhere --bbox {BOX} --model test-vit",
        "demo/nowhere",
    ),
    case(
        "unknown model",
        f"embed --source demo/virginia --bbox {BOX} --model softcon-vits15-s2",
        "Did you mean",
    ),
    case("absent device", f"{EMBED} --device cuda:7", "CUDA"),
    case("search point 3 numbers", "search --model test-vit --point 1,2,3", "LON,LAT"),
    case("search point off earth", "search --model test-vit --point 200,0", "outside lon/lat"),
    case("search bad tile id", "search --model test-vit --tile nope", "Tile nope"),
    case("search no query", "search --model test-vit", "Give a query"),
    case("search unknown model", "search --model nope --tile {tile}", "nope"),
    Case("label empty name", ("label", "add", " ", "--tile", "{tile}"), "class name"),
    case("label bad tile", "label add town --tile demo/virginia/1/1/x", "is not in the cache"),
    case("label bad point", "label add town --point north", "LON,LAT"),
    case("label rename unknown", "label rename nope other", "nope"),
    case("classify unknown class", "classify nope --model test-vit", "nope"),
    case("landcover unknown head", f"landcover {REGION} --head nope", "nope"),
    case(
        "change unknown source",
        f"change --before demo/virginia --after demo/nowhere --bbox {BOX} --model test-vit",
        "demo/nowhere",
    ),
    case("stac month 13", f"stac search --bbox {BOX} --dates 2024-13-01", "not a date", db=False),
    case(
        "stac backwards",
        f"stac search --bbox {BOX} --dates 2024-06-30/2024-06-01",
        "ends before it starts",
        db=False,
    ),
    case("sources remove unknown", "sources remove local/nope", "not a registered source"),
    case("sources remove bundled", "sources remove demo/virginia", "bundled"),
    case("unknown command", "paint --all", "invalid choice", db=False),
    case("unknown option", "models --colour", "unrecognized arguments", db=False),
]


def table_checksums(db: Path) -> dict[str, str]:
    """Rows of every table of the cache, hashed (opening it read-only proves it still opens)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        out = {}
        for t in sorted(tables):
            rows = con.execute(f'SELECT CAST(x AS VARCHAR) FROM "{t}" x').fetchall()
            blob = "\n".join(sorted(r[0] for r in rows)).encode()
            out[t] = hashlib.sha256(blob).hexdigest()
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def workdir(embedded_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad_input")
    db = root / "cache.duckdb"
    shutil.copy(embedded_db, db)
    (root / "plain.txt").write_text("not a folder")
    (root / "bad.geojson").write_text("{ this is not json")
    (root / "folder.html").mkdir()
    from backend.store.cache import EmbeddingCache

    with EmbeddingCache(db, read_only=True) as cache:
        (eset,) = cache.embedding_sets()
        ids, _ = cache.embeddings(eset)
    tmp = root / "scratch"
    tmp.mkdir()
    return {
        "db": str(db),
        "tmp": str(tmp),
        "file": str(root / "plain.txt"),
        "bad_json": str(root / "bad.geojson"),
        "dir_html": str(root / "folder.html"),
        "tile": ids[0],
    }


def argv_of(c: Case, where: dict[str, str]) -> list[str]:
    argv = [a.format(**where) for a in c.argv]
    if c.db and "--db" not in argv:
        argv += ["--db", where["db"]]
    return argv


@pytest.mark.parametrize("c", CASES, ids=str)
def test_bad_arguments_fail_cleanly(
    c: Case,
    workdir: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOFTMAP_DB_PATH", workdir["db"])
    before = table_checksums(Path(workdir["db"]))
    scratch_before = sorted(os.listdir(workdir["tmp"]))
    try:
        code = main(argv_of(c, workdir))
    except SystemExit as e:  # argparse's refusals
        code = e.code if isinstance(e.code, int) else 2
    err = capsys.readouterr().err
    assert code != 0, err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= MAX_STDERR_LINES, err
    assert "Traceback" not in err
    assert c.expect in err, err
    after = table_checksums(Path(workdir["db"]))
    assert [t for t in sorted(set(before) | set(after)) if before.get(t) != after.get(t)] == []
    assert sorted(os.listdir(workdir["tmp"])) == scratch_before  # no stray outputs or probes


SUBPROCESS_CASES = ["stride 0", "db under /proc", "export xlsx", "whole world", "unknown command"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_arguments_in_a_real_process(
    name: str, workdir: dict[str, str], venv_bin: Path
) -> None:
    c = next(x for x in CASES if x.name == name)
    before = table_checksums(Path(workdir["db"]))
    env = {**os.environ, "SOFTMAP_OFFLINE": "1", "SOFTMAP_DB_PATH": workdir["db"]}
    proc = subprocess.run(
        [str(venv_bin / "softmap"), *argv_of(c, workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert c.expect in proc.stderr
    assert table_checksums(Path(workdir["db"])) == before
