"""The endpoints the app's client mode needs, through the typed client against uvicorn in a
thread: each answer equals the application layer's own result on the same cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.client import SoftMapClient
from backend.errors import NotFoundError, SoftMapError
from backend.imagery.regions import parse_bbox
from backend.imagery.sources import SceneSource
from backend.server import ServerConfig
from backend.server.run import start_in_thread
from backend.service import (
    EmbedRequest,
    LandCoverRequest,
    RegionSpec,
    ReportRequest,
    SearchRequest,
    Workspace,
    map_landcover,
    region_tiles,
    result_heatmap,
    tile_records,
    tile_under,
)
from backend.settings import Settings
from tests.conftest import VIRGINIA_SMALL_BBOX

MODEL = "test-vit"
ENGINE = {"device": "cpu", "batch_size": 8}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str]]:
    """A kept-open workspace, served by the service and asked in-process (same connection)."""
    tmp = tmp_path_factory.mktemp("views")
    db = tmp / "cache.duckdb"
    settings = Settings(db_path=db, models_dir=tmp / "models", offline=True)
    workspace = Workspace(settings=settings, db_path=db, keep_open=True)
    service = start_in_thread(ServerConfig(db_path=db, port=0), settings, workspace)
    try:
        yield workspace, service.url
    finally:
        service.stop()
        workspace.close()


@pytest.fixture(scope="module")
def ws(served: tuple[Workspace, str]) -> Workspace:
    return served[0]


@pytest.fixture(scope="module")
def remote(served: tuple[Workspace, str]) -> Iterator[SoftMapClient]:
    with SoftMapClient(served[1]) as c:
        req = EmbedRequest(
            source="demo/virginia",
            region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX),
            model=MODEL,
            engine=ENGINE,
        )
        assert c.embed(req).tiles == 16
        yield c


def test_landcover_map_with_its_arrays(
    remote: SoftMapClient, ws: Workspace, virginia: SceneSource
) -> None:
    req = LandCoverRequest(
        source="demo/virginia", region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX), model=MODEL
    )
    seen: list[Any] = []
    got = remote.map_landcover_result(req, virginia, progress=seen.append)
    want = map_landcover(ws, req)
    assert got.source is virginia and got.tile_ids == want.tile_ids
    np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)
    assert got.token_probabilities is not None and want.token_probabilities is not None
    assert got.token_probabilities.shape == (16, 9, 8, 8)
    np.testing.assert_allclose(got.token_probabilities, want.token_probabilities, atol=1e-6)
    assert [a.name for a in got.areas] == [a.name for a in want.areas]
    assert sum(a.expected_km2 for a in got.areas) == pytest.approx(want.region_km2)
    assert got.head == want.head and got.embed.tiles == 16
    # The rasters the app draws come out the same.
    np.testing.assert_allclose(
        got.probability_raster().data, want.probability_raster().data, atol=1e-6
    )
    # Its downloads, as the Report page offers them, from the same map.
    job = remote.jobs(state="completed")[0]
    assert job.kind == "landcover"
    rows = remote.landcover_export(job.id, "areas_csv").decode().splitlines()
    assert rows[0].startswith("source,model,head,") and "expected_km2" in rows[0]
    assert len(rows) == 1 + len(got.areas)
    assert remote.landcover_export(job.id, "probability_cog")[:2] in (b"II", b"MM")
    with pytest.raises(SoftMapError):
        remote.landcover_export(job.id, "nope")  # type: ignore[arg-type]
    html = remote.report_html(
        ReportRequest(source="demo/virginia", region=req.region, model=MODEL, classes=())
    )
    assert html.lstrip().lower().startswith("<!doctype")
    # A job without a map: one 404 with what to do.
    embed_job = remote.jobs(state="completed")[-1]
    with pytest.raises(NotFoundError, match="no land-cover map"):
        remote._request("GET", f"/jobs/{embed_job.id}/landcover.npz")
    with pytest.raises(SoftMapError, match="No job nope"):
        remote._request("GET", "/jobs/nope/landcover.npz")


def test_tiles_region_point_and_heatmap(remote: SoftMapClient, ws: Workspace) -> None:
    region = parse_bbox(VIRGINIA_SMALL_BBOX)
    got = remote.region_tiles(MODEL, "demo/virginia", RegionSpec.of(region), limit=100)
    want = region_tiles(ws, MODEL, "demo/virginia", region, 100)
    assert [t["tile_id"] for t in got] == [t["tile_id"] for t in want]
    assert len(got) == 16 and got[0]["footprint"] == want[0]["footprint"]
    ids = [t["tile_id"] for t in want[:5]]
    assert remote.tile_records(ids) == tile_records(ws, ids)

    lon, lat = region.geometry.centroid.x, region.geometry.centroid.y
    assert remote.tile_under(MODEL, lon, lat) == tile_under(ws, MODEL, lon, lat)
    assert remote.tile_under(MODEL, 10.0, 10.0) is None
    with pytest.raises(SoftMapError, match="not a lon/lat"):
        remote.tile_under(MODEL, 200.0, 0.0)

    found = remote.find_similar(SearchRequest(model=MODEL, tiles=(ids[0],), k=3))
    assert found.query is not None
    top = found.results[0].tile_id
    hm = remote.result_heatmap(MODEL, found.preprocessing_hash, top, found.query.vector)
    local = result_heatmap(ws, MODEL, found.preprocessing_hash, top, found.query.vector)
    assert hm is not None and local is not None
    assert hm.scores.shape == local.scores.shape == (8, 8)
    np.testing.assert_allclose(hm.scores, local.scores, atol=1e-4)
    assert (hm.best_row, hm.best_col) == (local.best_row, local.best_col)
    assert remote.result_heatmap(MODEL, "no-such-set", top, found.query.vector) is None


def test_cache_stats_and_heads(remote: SoftMapClient) -> None:
    stats = remote.cache_stats()
    assert stats.embeddings >= 16 and Path(stats.path).name == "cache.duckdb"
    heads = remote.landcover_heads(MODEL)
    assert heads and all(h["model_id"] == MODEL for h in heads)


def test_projection_and_scope_rebuilt_by_the_client(remote: SoftMapClient, ws: Workspace) -> None:
    from backend.service import ProjectRequest, ScopeRequest, resolve_scope, scope_projection

    named = ScopeRequest(
        model=MODEL, source="demo/virginia", region=RegionSpec.of(parse_bbox(VIRGINIA_SMALL_BBOX))
    )
    outcome = remote.project_scope(ProjectRequest(scope=named, method="pca"))
    local = resolve_scope(ws, named)
    assert outcome.scope.tile_ids == local.tile_ids and outcome.scope.key == local.key
    assert outcome.scope.kind == local.kind and outcome.scope.source_id == local.source_id
    here = scope_projection(ws, local, ProjectRequest(scope=named, method="pca").params)
    assert outcome.projection.tile_ids == here.tile_ids
    assert outcome.projection.projection_id == here.projection_id
    np.testing.assert_allclose(outcome.projection.xy, here.xy, atol=1e-4)


def test_classes_classify_and_suggest_as_the_service_layer(
    remote: SoftMapClient, ws: Workspace
) -> None:
    from backend.server.schemas import LabelRequest
    from backend.service import (
        ClassifyRequest,
        ScopeRequest,
        SuggestRequest,
        class_labels,
        list_classes,
        resolve_scope,
    )

    ids = resolve_scope(ws, ScopeRequest(model=MODEL)).tile_ids
    created = remote.create_class("views marsh")
    assert created.name == "views marsh" and created.positives == 0
    assert created in list_classes(ws)
    remote.add_labels("views marsh", LabelRequest(tiles=ids[:3]))
    remote.add_labels("views marsh", LabelRequest(tiles=ids[-3:], negative=True))
    assert remote.class_labels("views marsh") == class_labels(ws, "views marsh")
    named = ScopeRequest(model=MODEL)
    classification, areas = remote.classify_scope(ClassifyRequest(name="views marsh", scope=named))
    # The probabilities the service stored are the ones the client rebuilt.
    from backend.service import class_predictions

    stored_ids, stored = class_predictions(ws, "views marsh", resolve_scope(ws, named))
    got = dict(zip(classification.tile_ids, classification.probabilities.tolist(), strict=True))
    assert set(got) == set(stored_ids)
    np.testing.assert_allclose([got[t] for t in stored_ids], stored, atol=1e-9)
    assert classification.report.positives == 3 and classification.report.negatives == 3
    assert {a.name for a in areas} == {"views marsh", "not views marsh"}
    found = remote.suggest_labels(SuggestRequest(name="views marsh", scope=named, k=4))
    assert len(found.suggestions) == 4 and found.candidates == len(ids) - 6
    assert not {s.tile_id for s in found.suggestions} & set(ids[:3] + ids[-3:])
    remote.remove_labels("views marsh", LabelRequest(tiles=ids[:1]))
    assert remote.rename_class("views marsh", "views wetland").name == "views wetland"
    assert remote.delete_class("views wetland") == 5
    remote.create_class("views dup")
    with pytest.raises(SoftMapError) as taken:
        remote.create_class("views dup")
    assert "views dup" in str(taken.value)


def test_a_comparison_travels_whole(tmp_path: Path) -> None:
    """The ``compare`` job's JSON (``backend.server.change_map``) rebuilds the same ChangeMap."""
    import json

    from backend.server.change_map import pack, unpack
    from backend.service import ChangeRequest, compare_dates
    from scripts.second_date import SOURCE_ID, register_second_date, write_second_date

    settings = Settings(db_path=tmp_path / "c.duckdb", models_dir=tmp_path / "m", offline=True)
    ws = Workspace(settings=settings, db_path=tmp_path / "c.duckdb")
    register_second_date(ws, write_second_date(tmp_path / "files"))
    ws.catalog_changed()
    req = ChangeRequest(
        before="demo/virginia",
        after=SOURCE_ID,
        region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX),
        model=MODEL,
        engine=ENGINE,
    )
    here = compare_dates(ws, req)
    there = unpack(json.loads(json.dumps(pack(here))), here.before, here.after)
    assert there.tiles == here.tiles and there.region.geometry.equals(here.region.geometry)
    assert there.to_csv() == here.to_csv() and there.to_geojson() == here.to_geojson()
    assert (there.computed, there.cached) == (here.computed, here.cached)
    assert there.result.pairs == here.result.pairs and there.result.top == here.result.top
    np.testing.assert_allclose(there.result.distances, here.result.distances)
    assert here.result.raster is not None and there.result.raster is not None
    np.testing.assert_allclose(there.result.raster.data, here.result.raster.data, equal_nan=True)
    assert there.result.raster.transform == here.result.raster.transform
    assert there.write_map(tmp_path / "there.tif").stat().st_size > 0
