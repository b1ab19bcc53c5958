"""Embedding a region end to end: cache reuse, equality with direct inference, crash safety."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.embedding.pipeline import embed_region
from backend.errors import RasterReadError, RegionOutsideSourceError
from backend.imagery.bands import S2_L1C_BANDS
from backend.imagery.reader import SceneReader
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine, Progress
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

from .conftest import VIRGINIA_SMALL_BBOX


def test_second_run_computes_nothing_and_vectors_match_direct_inference(
    virginia: SceneSource, small_region: Region, settings: Settings, db_path: Path
) -> None:
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=4)
    seen: list[Progress] = []
    with EmbeddingCache(db_path) as cache:
        first = embed_region(
            small_region,
            virginia,
            model,
            cache,
            engine=engine,
            settings=settings,
            progress=seen.append,
        )
        assert first.tiles > 4 and first.computed == first.tiles and first.cached == 0
        assert seen[-1].done == seen[-1].total == first.tiles
        second = embed_region(
            small_region, virginia, model, cache, engine=engine, settings=settings
        )
        assert second.computed == 0 and second.cached == first.tiles
        assert second.tile_ids == first.tile_ids
        eset = cache.embedding_sets()[0]
        ids, vectors = cache.embeddings(eset, list(first.tile_ids[:3]))
        tiles = cache.tiles(ids)
        runs = cache.runs()
    assert [r["status"] for r in runs] == ["completed", "completed"]
    with SceneReader(virginia) as reader, torch.inference_mode():
        from backend.imagery.reader import PixelWindow

        chips = np.stack(
            [
                reader.read(PixelWindow(t["col_off"], t["row_off"], 112, 112), S2_L1C_BANDS)
                for t in tiles
            ]
        )
        x = model.meta.normalization.apply(torch.from_numpy(chips))
        cls, tokens = model.embed(x)
    np.testing.assert_allclose(vectors, cls.numpy(), rtol=1e-5, atol=1e-5)
    assert tokens is not None and tokens.shape == (3, 8, 8, 48)


def test_region_outside_is_refused_before_any_work(
    virginia: SceneSource, settings: Settings, db_path: Path
) -> None:
    model = create_model("test-vit")
    with EmbeddingCache(db_path) as cache, pytest.raises(RegionOutsideSourceError):
        embed_region(
            parse_bbox("12.6,52.48,12.63,52.49"), virginia, model, cache, settings=settings
        )
    with EmbeddingCache(db_path) as cache:
        assert cache.stats().runs == 0


_KILL_AFTER_BATCHES = textwrap.dedent(
    """
    import os, signal, sys
    from backend.store.cache import EmbeddingCache
    from backend.models.inference import EmbeddingEngine
    from backend.models import create_model
    from backend.embedding.pipeline import embed_region
    from backend.imagery.regions import parse_bbox
    from backend.settings import Settings
    from backend.imagery.sources import demo_catalog

    db, bbox, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=2)
    batches = 0

    def progress(p):
        global batches
        if p.done == 0:
            return
        batches += 1
        if batches == kill_after:  # the batch is committed: die without any cleanup
            os.kill(os.getpid(), signal.SIGKILL)

    with EmbeddingCache(db) as cache:
        embed_region(parse_bbox(bbox), demo_catalog().get("demo/virginia"), model, cache,
                     engine=engine, settings=Settings(db_path=db), progress=progress)
    """
)


def test_killed_run_keeps_finished_batches_and_rerun_completes(
    tmp_path: Path, virginia: SceneSource, small_region: Region, settings: Settings
) -> None:
    db = tmp_path / "crash.duckdb"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_BATCHES, str(db), VIRGINIA_SMALL_BBOX, "3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    model = create_model("test-vit")
    with EmbeddingCache(db) as cache:
        runs = cache.runs()
        assert [r["status"] for r in runs] == ["interrupted"]
        eset = cache.embedding_sets()[0]
        ids, vectors = cache.embeddings(eset)
        assert len(ids) == 6 == runs[0]["computed"]  # three committed batches of two
        assert np.isfinite(vectors).all()
        result = embed_region(
            small_region, virginia, model, cache,
            engine=EmbeddingEngine(model, device="cpu", batch_size=4), settings=settings,
        )  # fmt: skip
        assert result.cached == 6 and result.computed == result.tiles - 6
        all_ids, _ = cache.embeddings(eset)
    assert sorted(all_ids) == sorted(result.tile_ids)


def test_cli_killed_from_outside_leaves_a_consistent_cache(tmp_path: Path, venv_bin: Path) -> None:
    db = tmp_path / "killed.duckdb"
    cmd = [
        str(venv_bin / "softmap"), "embed", "--source", "demo/virginia",
        "--bbox", "-75.72,37.59,-75.52,37.75", "--model", "test-vit", "--batch-size", "1",
        "--device", "cpu", "--db", str(db), "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    progressed = re.compile(r"\b[1-9]\d*/\d+ \[")
    seen = ""
    while not progressed.search(seen):
        ch = proc.stderr.read(1)
        assert ch, f"the CLI ended before showing progress: {seen}"
        seen += ch
    proc.send_signal(signal.SIGKILL)  # mid-run, at whatever point it has reached
    proc.wait(timeout=30)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    out = json.loads(rerun.stdout)
    assert out["cached"] > 0 and out["computed"] > 0
    assert out["cached"] + out["computed"] == out["tiles"]
    with EmbeddingCache(db) as cache:
        statuses = sorted(r["status"] for r in cache.runs())
        ids, vectors = cache.embeddings(cache.embedding_sets()[0])
    assert statuses == ["completed", "interrupted"]
    assert len(ids) == out["tiles"] and np.isfinite(vectors).all()


@pytest.mark.gpu
def test_cuda_bf16_matches_cpu(virginia: SceneSource, small_region: Region, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model = create_model("test-vit")
    vecs = {}
    for device in ("cpu", "cuda"):
        engine = EmbeddingEngine(model, device=device, batch_size=8)
        with EmbeddingCache(tmp_path / f"{device}.duckdb") as cache:
            embed_region(small_region, virginia, model, cache, engine=engine,
                         settings=Settings(db_path=tmp_path / "x.duckdb"))  # fmt: skip
            vecs[device] = cache.embeddings(cache.embedding_sets()[0])[1]
    assert engine.precision == "bf16"
    cos = (vecs["cpu"] * vecs["cuda"]).sum(1) / (
        np.linalg.norm(vecs["cpu"], axis=1) * np.linalg.norm(vecs["cuda"], axis=1)
    )
    assert cos.min() > 0.99


@pytest.mark.parametrize("readers", [1, 3])
def test_reader_threads_give_the_same_embeddings(
    readers: int, virginia: SceneSource, small_region: Region, tmp_path: Path
) -> None:
    model = create_model("test-vit")
    vectors = {}
    for n in (0, readers):
        engine = EmbeddingEngine(model, device="cpu", batch_size=3, readers=n, prefetch_batches=1)
        with EmbeddingCache(tmp_path / f"r{n}.duckdb") as cache:
            result = embed_region(
                small_region, virginia, model, cache, engine=engine,
                settings=Settings(db_path=tmp_path / "unused.duckdb"),
            )  # fmt: skip
            assert result.computed == result.tiles
            vectors[n] = cache.embeddings(cache.embedding_sets()[0])
    assert vectors[0][0] == vectors[readers][0]
    np.testing.assert_array_equal(vectors[0][1], vectors[readers][1])


@pytest.mark.parametrize("readers", [0, 2])
def test_a_read_error_fails_the_run_and_keeps_finished_batches(
    readers: int, virginia: SceneSource, tmp_path: Path
) -> None:
    # A copy of the scene whose file is cut short: the first rows read, later ones fail.
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in {b.file for b in virginia.bands}:
        data = (virginia.root / f).read_bytes()
        (broken / f).write_bytes(data[: int(len(data) * 0.45)])
    source = virginia.model_copy(update={"root": broken})
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=4, readers=readers)
    region = parse_bbox("-75.72,37.59,-75.52,37.75")
    settings = Settings(db_path=tmp_path / "unused.duckdb", max_nodata_fraction=1.0)
    with EmbeddingCache(tmp_path / "broken.duckdb") as cache:
        with pytest.raises(RasterReadError):
            embed_region(region, source, model, cache, engine=engine, settings=settings)
        (run,) = cache.runs()
        kept = len(cache.embeddings(cache.embedding_sets()[0])[0])
    assert run["status"] == "failed"
    assert "Cannot read raster" in run["error"]
    assert run["computed"] == kept


@pytest.mark.parametrize("readers", [0, 2])
def test_ctrl_c_marks_the_run_interrupted_and_keeps_finished_batches(
    readers: int, virginia: SceneSource, small_region: Region, settings: Settings, db_path: Path
) -> None:
    model = create_model("test-vit")
    engine = EmbeddingEngine(model, device="cpu", batch_size=2, readers=readers)

    def interrupt_after_two_batches(p: Progress) -> None:
        if p.done >= 4:
            raise KeyboardInterrupt

    with EmbeddingCache(db_path) as cache:
        with pytest.raises(KeyboardInterrupt):
            embed_region(
                small_region, virginia, model, cache, engine=engine, settings=settings,
                progress=interrupt_after_two_batches,
            )  # fmt: skip
        (run,) = cache.runs()
        ids, _ = cache.embeddings(cache.embedding_sets()[0])
        assert run["status"] == "interrupted"
        assert run["computed"] == len(ids) == 4
        resumed = embed_region(
            small_region, virginia, model, cache, engine=engine, settings=settings
        )
    assert resumed.cached == 4
    assert resumed.computed == resumed.tiles - 4
