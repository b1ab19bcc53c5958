"""Embedding on a Ray cluster: a local Ray (2 CPUs) started here, offline, shut down at the end.

The Ray path must give the local path's tile ids and embeddings, record runs the same way,
compute nothing on a re-run, survive a killed replica with every tile written once, and report
worker errors as the same one-line messages.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.embedding.distributed import RayEmbeddingEngine, embed_distributed, embed_together
from backend.embedding.pipeline import embed_region
from backend.embedding.ray_cluster import RayOptions, plan_cluster, require_ray
from backend.errors import ClusterError, RasterReadError, RayUnavailableError
from backend.imagery.regions import Region, parse_bbox
from backend.imagery.sources import SceneSource
from backend.models import create_model
from backend.models.inference import EmbeddingEngine, Progress
from backend.settings import Settings
from backend.store.cache import EmbeddingCache

from .conftest import VIRGINIA_SMALL_BBOX

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'softmap[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'softmap[ray]')")
psutil = pytest.importorskip("psutil")

OPTIONS = RayOptions(actors=2, batch_size=4)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """A 2-CPU Ray with a small object store for this module (token auth off: local only)."""
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False)  # fmt: skip
    try:
        yield
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before


def _settings(tmp_path: Path, **kw: float) -> Settings:
    return Settings(db_path=tmp_path / "unused.duckdb", models_dir=tmp_path / "m", offline=True,
                    **kw)  # fmt: skip


def _all_embeddings(db: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    with EmbeddingCache(db, read_only=True) as cache:
        return {s.preprocessing_hash: cache.embeddings(s) for s in cache.embedding_sets()}


def _rows_per_tile(db: Path) -> list[int]:
    with EmbeddingCache(db, read_only=True) as cache, cache.cursor() as cur:
        (eset,) = cache.embedding_sets()
        rows = cur.execute(f"SELECT count(*) FROM {eset.table_name} GROUP BY tile_id").fetchall()
    return [int(r[0]) for r in rows]


@pytest.mark.slow
def test_two_sources_through_ray_equal_the_local_path_resume_and_rerun_nothing(
    virginia: SceneSource, small_region: Region, tmp_path: Path
) -> None:
    # A second source on the same imagery under another id: one job plans and embeds both.
    twin = virginia.model_copy(update={"id": "test/virginia-twin"})
    model = create_model("test-vit")
    settings = _settings(tmp_path)
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    with EmbeddingCache(local_db) as cache:
        local = [
            embed_region(small_region, s, model, cache, settings=settings,
                         engine=EmbeddingEngine(model, device="cpu", batch_size=4))
            for s in (virginia, twin)
        ]  # fmt: skip

    def interrupt_after_the_first_batch(p: Progress) -> None:
        if p.done:
            raise KeyboardInterrupt

    seen: list[Progress] = []
    with EmbeddingCache(ray_db) as cache:
        with pytest.raises(KeyboardInterrupt):
            embed_distributed(
                small_region,
                [virginia, twin],
                model,
                cache,
                options=OPTIONS,
                settings=settings,
                progress=interrupt_after_the_first_batch,
            )
        kept = sum(len(cache.embeddings(s)[0]) for s in cache.embedding_sets())
        first = embed_distributed(small_region, [virginia, twin], model, cache, options=OPTIONS,
                                  settings=settings, progress=seen.append)  # fmt: skip
        again = embed_distributed(small_region, [virginia, twin], model, cache, options=OPTIONS,
                                  settings=settings)  # fmt: skip
        runs = cache.runs()
    # The interrupted job kept its finished batch; the resumed one computed only the rest.
    assert 4 <= kept < 32
    assert first.computed == 32 - kept and sum(r.cached for r in first.runs) == kept
    for mine, theirs in zip(first.runs, local, strict=True):
        assert mine.tile_ids == theirs.tile_ids and mine.tiles == theirs.tiles == 16
        assert mine.preprocessing_hash == theirs.preprocessing_hash
        assert mine.computed + mine.cached == 16 and mine.skipped == 0
        assert mine.device == "ray (2 x 1 CPU thread)"
    assert first.workers == 2 and seen[0] == Progress(0, 32 - kept, 0.0, 2, 0)
    assert seen[-1].done == seen[-1].total == 32 - kept
    assert all(p.workers == 2 and p.workers_busy is not None for p in seen)
    # Same tile ids, embeddings within 1e-5.
    ours, reference = _all_embeddings(ray_db), _all_embeddings(local_db)
    assert ours.keys() == reference.keys()
    for key, (ids, vectors) in reference.items():
        assert ours[key][0] == ids and len(ids) == 32
        np.testing.assert_allclose(ours[key][1], vectors, rtol=1e-5, atol=1e-5)
    # A re-run computes nothing; every run is recorded like a local one.
    assert again.computed == 0 and [r.cached for r in again.runs] == [16, 16]
    statuses = sorted(r["status"] for r in runs)
    assert statuses == ["completed"] * 4 + ["interrupted"] * 2
    assert sum(r["computed"] for r in runs if r["status"] == "interrupted") == kept
    assert {json.loads(r["params"])["precision"] for r in runs} == {"fp32"}


@pytest.mark.slow
def test_killing_a_replica_mid_run_still_writes_every_tile_once(
    virginia: SceneSource, tmp_path: Path
) -> None:
    model = create_model("test-vit")
    region = parse_bbox("-75.68,37.63,-75.62,37.68")  # about 50 tiles: several batches each
    killed: list[int] = []

    def kill_one_replica(p: Progress) -> None:
        if killed or p.done == 0:
            return
        replicas = [
            proc for proc in psutil.process_iter(["cmdline"])
            if "_EmbedReplica" in " ".join(proc.info["cmdline"] or [])
        ]  # fmt: skip
        if replicas:
            killed.append(replicas[0].pid)
            os.kill(replicas[0].pid, signal.SIGKILL)

    db = tmp_path / "killed.duckdb"
    with EmbeddingCache(db) as cache:
        result = embed_distributed(
            region,
            [virginia],
            model,
            cache,
            options=OPTIONS,
            settings=_settings(tmp_path),
            progress=kill_one_replica,
        )
        (run,) = cache.runs()
    assert killed, "no replica process was found to kill"
    (only,) = result.runs
    assert only.computed == only.tiles > 20 and run["status"] == "completed"
    assert run["computed"] == only.tiles
    counts = _rows_per_tile(db)
    assert len(counts) == only.tiles and set(counts) == {1}


def test_a_corrupt_raster_on_a_worker_is_the_local_one_line_error(
    virginia: SceneSource, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in {b.file for b in virginia.bands}:
        data = (virginia.root / f).read_bytes()
        (broken / f).write_bytes(data[: int(len(data) * 0.45)])
    source = virginia.model_copy(update={"root": broken})
    model = create_model("test-vit")
    region = parse_bbox("-75.72,37.59,-75.52,37.75")
    settings = _settings(tmp_path, max_nodata_fraction=1.0)
    with EmbeddingCache(tmp_path / "broken.duckdb") as cache:
        with pytest.raises(RasterReadError, match=r"^Tile demo/virginia/112/112/\d+_\d+: ") as e:
            embed_region(
                region,
                source,
                model,
                cache,
                settings=settings,
                engine=RayEmbeddingEngine(model, RayOptions(actors=1, batch_size=8)),
            )
        (run,) = cache.runs()
        kept = len(cache.embeddings(cache.embedding_sets()[0])[0])
    assert "\n" not in e.value.one_line() and e.value.one_line().startswith("Cannot read raster")
    assert run["status"] == "failed" and run["error"] == e.value.one_line()
    assert run["computed"] == kept and run["device"] == "ray (1 x 2 CPU threads)"


def test_the_same_job_runs_locally_under_one_bar(
    virginia: SceneSource, small_region: Region, tmp_path: Path
) -> None:
    twin = virginia.model_copy(update={"id": "test/virginia-twin"})
    model = create_model("test-vit")
    seen: list[Progress] = []
    with EmbeddingCache(tmp_path / "local.duckdb") as cache:
        result = embed_together(small_region, [virginia, twin], model, cache,
                                engine=EmbeddingEngine(model, device="cpu", batch_size=8),
                                settings=_settings(tmp_path), progress=seen.append)  # fmt: skip
    assert [r.computed for r in result.runs] == [16, 16] and result.workers is None
    assert [p.done for p in seen] == [0, 8, 16, 24, 32] and {p.total for p in seen} == {32}


def test_pool_sizing_fits_the_cluster() -> None:
    cpu = plan_cluster(RayOptions(), {"CPU": 2.0})
    assert (cpu.actors, cpu.gpus_per_actor, cpu.threads_per_actor) == (1, 0.0, 2)
    two = plan_cluster(RayOptions(actors=2), {"CPU": 2.0})
    assert (two.threads_per_actor, two.readers) == (1, 2) and two.describe().startswith("ray (2")
    gpu = plan_cluster(RayOptions(), {"CPU": 32.0, "GPU": 4.0})
    assert (gpu.actors, gpu.gpus_per_actor, gpu.readers, gpu.read_cpus) == (4, 1.0, 16, 1.0)
    assert gpu.describe() == "ray (4 x 1 GPU)"
    with pytest.raises(ClusterError, match="GPU"):
        plan_cluster(RayOptions(gpus_per_actor=1), {"CPU": 8.0})
    with pytest.raises(ClusterError, match="fewer replicas"):
        plan_cluster(RayOptions(actors=4, cpus_per_actor=1), {"CPU": 2.0})


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayUnavailableError) as e:
        require_ray()
    assert e.value.one_line() == (
        "Ray not installed: --ray needs Ray Data, which is not installed here: "
        "pip install 'softmap[ray]'."
    )


def test_a_bad_region_is_refused_before_joining_a_cluster(
    virginia: SceneSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.embedding import distributed
    from backend.errors import RegionOutsideSourceError

    def no_cluster(_options: RayOptions) -> None:
        raise AssertionError("joined the cluster for a region it refuses")

    monkeypatch.setattr(distributed, "connect", no_cluster)
    model = create_model("test-vit")
    with EmbeddingCache(tmp_path / "c.duckdb") as cache, pytest.raises(RegionOutsideSourceError):
        embed_region(parse_bbox("12.6,52.48,12.63,52.49"), virginia, model, cache,
                     settings=_settings(tmp_path), engine=RayEmbeddingEngine(model))  # fmt: skip


@pytest.mark.slow
def test_cli_embeds_on_the_test_cluster_with_a_progress_bar_showing_workers(
    venv_bin: Path, tmp_path: Path
) -> None:
    import subprocess

    address = ray.get_runtime_context().gcs_address
    db = tmp_path / "cli.duckdb"
    args = [str(venv_bin / "softmap"), "embed", "--source", "demo/virginia,auto",
            f"--bbox={VIRGINIA_SMALL_BBOX}", "--model", "test-vit", "--db", str(db),
            "--ray", address, "--ray-actors", "1", "--batch-size", "8", "--json"]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SOFTMAP_OFFLINE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "There is no source 'auto'" in done.stderr  # `auto` stands alone, not in a list
    args[3] = "auto"
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["sources"] == ["demo/virginia"] and out["computed"] == 16
    assert out["device"] == "ray (1 x 2 CPU threads)" and out["workers"] == 1
    assert "workers busy" in done.stderr and "16/16" in done.stderr


def test_cli_without_ray_says_how_to_install_it_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from backend.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    code = main(["embed", "--source", "demo/virginia", f"--bbox={VIRGINIA_SMALL_BBOX}",
                 "--model", "test-vit", "--db", str(tmp_path / "c.duckdb"), "--ray"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "softmap: Ray not installed: --ray needs Ray Data, which is not installed here: "
        "pip install 'softmap[ray]'.\n"
    )


def test_every_service_operation_that_embeds_gets_the_cluster_engine(tmp_path: Path) -> None:
    from backend.service import EngineOptions, Workspace

    ws = Workspace(_settings(tmp_path), tmp_path / "ws.duckdb")
    engine = ws.engine("test-vit", EngineOptions(ray_address="local", ray_actors=2, batch_size=8))
    assert isinstance(engine, RayEmbeddingEngine)
    assert (engine.options.address, engine.options.actors, engine.batch_size) == (None, 2, 8)
    assert engine._cluster is None  # joined only when tiles are due
    remote = ws.engine("test-vit", EngineOptions(ray_address="ray://head:10001"))
    assert isinstance(remote, RayEmbeddingEngine) and remote.options.address == "ray://head:10001"
    assert not isinstance(ws.engine("test-vit", EngineOptions()), RayEmbeddingEngine)


@pytest.mark.slow
def test_read_tasks_read_cogs_over_http_range_requests(
    virginia: SceneSource, small_region: Region, tmp_path: Path
) -> None:
    from backend.imagery.stac_items import configure_remote_gdal

    from .stac_server import StacTestServer

    configure_remote_gdal()  # as `softmap stac add` does; read tasks set it for themselves
    server = StacTestServer(virginia.root).start()
    try:
        bands = [b.model_copy(update={"file": server.data_url(b.file)}) for b in virginia.bands]
        remote = virginia.model_copy(update={"id": "test/virginia-http", "bands": bands})
        model = create_model("test-vit")
        with EmbeddingCache(tmp_path / "http.duckdb") as cache:
            local = embed_region(
                small_region,
                virginia,
                model,
                cache,
                settings=_settings(tmp_path),
                engine=EmbeddingEngine(model, device="cpu", batch_size=8),
            )
            got = embed_region(
                small_region,
                remote,
                model,
                cache,
                settings=_settings(tmp_path),
                engine=RayEmbeddingEngine(model, RayOptions(actors=1, batch_size=8)),
            )
            (eset,) = cache.embedding_sets()
            _, want = cache.embeddings(eset, list(local.tile_ids))
            _, have = cache.embeddings(eset, list(got.tile_ids))
    finally:
        server.stop()
    assert got.computed == local.computed == 16
    assert [t.split("/", 2)[2] for t in got.tile_ids] == [
        t.split("/", 2)[2] for t in local.tile_ids
    ]
    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)
    assert server.range_requests > 0 and server.full_requests == 0


def test_an_address_where_nothing_listens_is_one_line_at_once() -> None:
    from backend.embedding.ray_cluster import _check_reachable

    with pytest.raises(ClusterError, match=r"at ray://127\.0\.0\.1:1: nothing answers there"):
        _check_reachable("ray://127.0.0.1:1")
    _check_reachable("auto")  # resolved by Ray itself


@pytest.mark.slow
def test_a_land_cover_map_through_ray_equals_the_local_one(tmp_path: Path) -> None:
    from backend.service import (
        EngineOptions,
        LandCoverRequest,
        RegionSpec,
        Workspace,
        map_landcover,
    )

    def land_cover(db: str, engine: EngineOptions) -> Any:
        ws = Workspace(_settings(tmp_path), tmp_path / db)
        req = LandCoverRequest(source="demo/virginia", region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX),
                               model="test-vit", engine=engine)  # fmt: skip
        return map_landcover(ws, req)

    local = land_cover("local.duckdb", EngineOptions(device="cpu", batch_size=8))
    on_ray = land_cover("ray.duckdb", EngineOptions(ray_address="local", ray_actors=1,
                                                    batch_size=8))  # fmt: skip
    assert on_ray.tile_ids == local.tile_ids and on_ray.embed.device == "ray (1 x 2 CPU threads)"
    assert on_ray.embed.computed == 16
    np.testing.assert_allclose(on_ray.probabilities, local.probabilities, rtol=1e-4, atol=1e-5)
    if local.token_probabilities is not None:
        assert on_ray.token_probabilities is not None
        np.testing.assert_allclose(on_ray.token_probabilities, local.token_probabilities,
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
    assert [a.expected_km2 for a in on_ray.areas] == pytest.approx(
        [a.expected_km2 for a in local.areas], rel=1e-4, abs=1e-6
    )
