"""The HTTP service through FastAPI's TestClient: every endpoint, every error shape, security."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.server import ServerConfig, create_app
from backend.server.errors import STATUS_BY_ERROR, status_for
from backend.server.security import check_bind, confine, is_loopback
from backend.settings import Settings
from tests.conftest import BRANDENBURG_SMALL_BBOX, VIRGINIA_SMALL_BBOX

MODEL = "test-vit"
ENGINE = {"device": "cpu", "batch_size": 8}
TERMINAL = ("completed", "failed", "cancelled", "interrupted")


def make_client(tmp: Path, **config: Any) -> TestClient:
    db = tmp / "cache.duckdb"
    settings = Settings(db_path=db, models_dir=tmp / "models", offline=True)
    return TestClient(create_app(ServerConfig(db_path=db, **config), settings))


def wait_job(client: TestClient, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in TERMINAL:
            return dict(job)
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def assert_error(response: Any, status: int, title: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"title", "message"}, body
    assert body["message"] and "Traceback" not in body["message"]
    if title is not None:
        assert body["title"] == title
    return dict(body)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("service")) as c:
        yield c


@pytest.fixture(scope="module")
def embedded(client: TestClient) -> dict[str, Any]:
    """The small Virginia region embedded through the API (the job's result)."""
    body = {
        "source": "demo/virginia",
        "region": {"bbox": VIRGINIA_SMALL_BBOX},
        "model": MODEL,
        "engine": ENGINE,
    }
    r = client.post("/embed", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "queued"
    job = wait_job(client, r.json()["id"])
    assert job["state"] == "completed", job
    return job


# --- system ----------------------------------------------------------------------------------
def test_health_docs_models_sources(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["device"] == "cpu" and h["auth"] is False
    assert client.get("/health/live").json() == {"status": "ok"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text  # offline: Swagger UI's files are served here
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/embed", "/jobs/{job_id}", "/jobs/{job_id}/events", "/search", "/classify"):
        assert path in paths
    models = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert models[MODEL]["embed_dim"] == 48
    sources = {s["id"] for s in client.get("/sources").json()["sources"]}
    assert {"demo/virginia", "demo/brandenburg"} <= sources
    assert client.get("/sources/demo/virginia").json()["registered"] is False
    assert_error(client.get("/sources/demo/nowhere"), 404, "Unknown source")
    assert_error(client.delete("/sources/demo/virginia"), 404, "Unknown source")


# --- jobs ------------------------------------------------------------------------------------
def test_embed_job_progress_result_and_runs(client: TestClient, embedded: dict[str, Any]) -> None:
    p = embedded["progress"]
    assert p["done"] == p["total"] == 16 and p["tiles_per_s"] > 0 and p["eta_s"] == 0
    result = embedded["result"]
    assert result["tiles"] == 16 and result["computed"] == 16 and len(result["tile_ids"]) == 16
    runs = client.get("/runs", params={"limit": 5}).json()
    assert runs["cache"]["embeddings"] == 16
    assert runs["runs"][0]["status"] == "completed"
    listed = client.get("/jobs").json()["jobs"]
    assert embedded["id"] in {j["id"] for j in listed}
    # A second run of the same region computes nothing.
    again = client.post(
        "/embed",
        json={"source": "demo/virginia", "region": {"bbox": VIRGINIA_SMALL_BBOX}, "model": MODEL},
    )
    job = wait_job(client, again.json()["id"])
    assert job["result"]["computed"] == 0 and job["result"]["cached"] == 16


def test_event_stream_ends_with_the_finished_job(
    client: TestClient, embedded: dict[str, Any]
) -> None:
    events = []
    with client.stream("GET", f"/jobs/{embedded['id']}/events") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert events[-1]["state"] == "completed"
    assert_error(client.get("/jobs/nope/events"), 404, "Unknown job")


def test_job_errors(client: TestClient, embedded: dict[str, Any]) -> None:
    assert_error(client.get("/jobs/nope"), 404, "Unknown job")
    assert_error(client.post(f"/jobs/{embedded['id']}/cancel"), 400, "Job not in that state")
    assert_error(client.post(f"/jobs/{embedded['id']}/resume"), 400, "Job not in that state")
    region = {"bbox": VIRGINIA_SMALL_BBOX}
    # User mistakes are answered at once, before anything is queued.
    bad = {"source": "demo/virginia", "region": region, "model": "nope"}
    assert_error(client.post("/embed", json=bad), 404, "Unknown model")
    bad = {"source": "demo/virginia", "region": {"bbox": "1,2,3"}, "model": MODEL}
    assert_error(client.post("/embed", json=bad), 422, "Invalid region")
    bad = {"source": "demo/virginia", "region": {"bbox": BRANDENBURG_SMALL_BBOX}, "model": MODEL}
    assert_error(client.post("/embed", json=bad), 422, "Region outside the imagery")
    bad = {"source": "demo/virginia", "region": {"bbox": "-80,30,-70,40"}, "model": MODEL}
    assert_error(client.post("/embed", json=bad), 413, "Region too large")
    bad = {"source": "demo/virginia", "region": region, "model": MODEL, "typo": 1}
    body = assert_error(client.post("/embed", json=bad), 422, "Invalid request")
    assert "typo" in body["message"]
    bad = {"source": "demo/virginia", "region": {"bbox": "1,2,3,4", "path": "x"}, "model": MODEL}
    assert_error(client.post("/embed", json=bad), 422, "Invalid request")
    assert_error(client.post("/embed", content=b"{not json"), 422, "Invalid request")
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.delete("/health"), 405)


def test_failed_job_carries_the_error(client: TestClient) -> None:
    body = {
        "source": "demo/virginia",
        "region": {"bbox": VIRGINIA_SMALL_BBOX},
        "model": MODEL,
        "chip": 100,  # not a multiple of the patch size: refused by the pipeline
    }
    job = wait_job(client, client.post("/embed", json=body).json()["id"])
    assert job["state"] == "failed"
    assert job["error"]["title"] == "Invalid chip size"
    resumed = client.post(f"/jobs/{job['id']}/resume")
    assert resumed.status_code == 202 and resumed.json()["resumes"] == 1


def test_landcover_report_and_change_jobs(client: TestClient, embedded: dict[str, Any]) -> None:
    region = {"bbox": VIRGINIA_SMALL_BBOX}
    lc = {"source": "demo/virginia", "region": region, "model": MODEL, "out": "lc/map.tif"}
    job = wait_job(client, client.post("/landcover", json=lc).json()["id"])
    assert job["state"] == "completed", job
    assert job["result"]["out"] == "outputs/lc/map.tif"
    assert sum(a["share"] for a in job["result"]["areas"]) == pytest.approx(1, abs=1e-3)
    tif = client.get("/files/outputs/lc/map.tif")
    assert tif.status_code == 200 and tif.content[:2] in (b"II", b"MM")
    rep = {"source": "demo/virginia", "region": region, "model": MODEL, "out": "report.html"}
    job = wait_job(client, client.post("/report", json=rep).json()["id"])
    assert job["state"] == "completed", job
    assert client.get("/files/outputs/report.html").text.lstrip().lower().startswith("<!doctype")
    bad = {**rep, "out": "report.pdf"}
    assert_error(client.post("/report", json=bad), 400, "Invalid option")
    heads = client.get("/landcover/heads", params={"model": MODEL}).json()["heads"]
    assert heads and heads[0]["model_id"] == MODEL
    change = {"before": "demo/virginia", "after": "demo/brandenburg", "region": region}
    assert_error(
        client.post("/change", json={**change, "model": MODEL}), 422, "Region outside the imagery"
    )
    same = {"before": "demo/virginia", "after": "demo/virginia", "region": region, "model": MODEL}
    assert_error(client.post("/change", json=same), 422, "Cannot compare dates")


def test_register_uploaded_imagery_then_change(client: TestClient, brandenburg: Any) -> None:
    """A copy of the Brandenburg scene, uploaded and registered, compared with the original."""
    from backend.settings import ASSETS_DIR

    scene = ASSETS_DIR / "scenes" / "brandenburg" / brandenburg.bands[0].file
    r = client.put("/files/uploads/copy.tif", content=scene.read_bytes())
    assert r.status_code == 201
    bands = [b.name for b in brandenburg.bands]
    add = {"path": "uploads/copy.tif", "bands": bands, "source_id": "local/copy"}
    r = client.post("/sources", json={**add, "date": "2017-02-17"})
    assert r.status_code == 201, r.text
    assert r.json()["registered"] is True
    assert "local/copy" in {s["id"] for s in client.get("/sources").json()["sources"]}
    assert_error(client.post("/sources", json={**add, "bands": bands[:3]}), 422)
    change = {
        "before": "demo/brandenburg",
        "after": "local/copy",
        "region": {"bbox": BRANDENBURG_SMALL_BBOX},
        "model": MODEL,
        "engine": ENGINE,
        "out": "change.tif",
    }
    job = wait_job(client, client.post("/change", json=change).json()["id"])
    assert job["state"] == "completed", job
    assert job["result"]["distance"]["max"] == pytest.approx(0, abs=1e-4)
    assert job["result"]["out"] == "outputs/change.tif"
    removed = client.delete("/sources/local/copy").json()
    assert removed["removed"] == "local/copy" and removed["tiles_dropped"] > 0


def test_cancel_a_running_job_then_resume_it(client: TestClient) -> None:
    body = {
        "source": "demo/virginia",
        "region": {"bbox": "-75.72,37.70,-75.66,37.76"},
        "model": MODEL,
        "engine": {"device": "cpu", "batch_size": 2, "readers": 0},
    }
    job = client.post("/embed", json=body).json()
    deadline = time.monotonic() + 60
    while client.get(f"/jobs/{job['id']}").json()["progress"]["done"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 200
    cancelled = wait_job(client, job["id"])
    assert cancelled["state"] == "cancelled", cancelled
    assert cancelled["error"]["title"] == "Job cancelled"
    done_before = cancelled["progress"]["done"]
    total = cancelled["progress"]["total"]
    assert 2 <= done_before < total
    run = client.get("/runs", params={"limit": 1}).json()["runs"][0]
    assert run["status"] == "cancelled" and run["computed"] == done_before
    client.post(f"/jobs/{job['id']}/resume")
    resumed = wait_job(client, job["id"])
    assert resumed["state"] == "completed" and resumed["resumes"] == 1
    assert resumed["result"]["computed"] == total - done_before
    # A queued job is cancelled at once.
    first = client.post("/embed", json={**body, "region": {"bbox": "-75.72,37.59,-75.69,37.61"}})
    queued = client.post("/embed", json={**body, "region": {"bbox": "-75.60,37.60,-75.58,37.62"}})
    c = client.post(f"/jobs/{queued.json()['id']}/cancel").json()
    assert c["state"] in ("cancelled", "running")
    wait_job(client, first.json()["id"])
    assert wait_job(client, queued.json()["id"])["state"] == "cancelled"


# --- reads -----------------------------------------------------------------------------------
def test_search_get_and_post(client: TestClient, embedded: dict[str, Any]) -> None:
    tile = embedded["result"]["tile_ids"][0]
    got = client.get("/search", params={"model": MODEL, "tile": tile, "k": 3}).json()
    assert len(got["results"]) == 3 and tile not in {r["tile_id"] for r in got["results"]}
    posted = client.post("/search", json={"model": MODEL, "tiles": [tile], "k": 3}).json()
    assert [r["tile_id"] for r in posted["results"]] == [r["tile_id"] for r in got["results"]]
    by_point = client.get(
        "/search", params={"model": MODEL, "point": "-75.64,37.65", "bbox": VIRGINIA_SMALL_BBOX}
    ).json()
    assert by_point["scope"].startswith("region")
    assert_error(client.get("/search", params={"model": MODEL}), 400, "Invalid query")
    assert_error(client.get("/search", params={"model": MODEL, "point": "x"}), 400)
    assert_error(client.get("/search", params={"model": "nope", "tile": tile}), 404)
    assert_error(client.get("/search", params={"model": MODEL, "tile": "demo/x/1/1/0_0"}), 404)
    assert_error(client.get("/search", params={"model": MODEL, "tile": tile, "k": 0}), 422)
    records = client.get("/tiles", params={"id": embedded["result"]["tile_ids"][:3]}).json()
    assert [r["tile_id"] for r in records["tiles"]] == embedded["result"]["tile_ids"][:3]
    assert records["tiles"][0]["footprint"]["type"] == "Polygon"
    assert_error(client.get("/tiles"), 400, "Invalid query")


def test_classes_projection_and_exports(client: TestClient, embedded: dict[str, Any]) -> None:
    ids = embedded["result"]["tile_ids"]
    r = client.post("/classes/marsh/labels", json={"tiles": ids[:3]})
    assert r.status_code == 200 and r.json()["created_class"] is True
    r = client.post("/classes/marsh/labels", json={"tiles": ids[-3:], "negative": True})
    assert r.json()["positive"] is False
    classes = {c["name"]: c for c in client.get("/classes").json()["classes"]}
    assert classes["marsh"]["positives"] == 3 and classes["marsh"]["negatives"] == 3
    assert len(client.get("/classes/marsh/labels").json()["labels"]) == 6
    assert client.get("/classes/marsh/labels.geojson").json()["type"] == "FeatureCollection"
    scope = {"model": MODEL, "source": "demo/virginia", "region": {"bbox": VIRGINIA_SMALL_BBOX}}
    out = client.post("/classify", json={"name": "marsh", "scope": scope}).json()
    assert out["tiles"] == 16 and 0 <= out["mean_probability"] <= 1
    sug = client.post("/suggest", json={"name": "marsh", "scope": scope, "k": 3}).json()
    assert len(sug["suggestions"]) == 3
    proj = client.post("/projection", json={"scope": scope, "method": "pca"}).json()
    assert proj["scope"]["tiles"] == 16
    ex = client.post(
        "/exports", json={"kind": "embeddings", "scope": scope, "out": "emb.parquet"}
    ).json()
    assert ex["path"] == "outputs/emb.parquet" and ex["rows"] == 16
    ex = client.post(
        "/exports",
        json={"kind": "predictions", "class_name": "marsh", "scope": scope, "out": "p.geojson"},
    ).json()
    assert ex["rows"] == 16
    for kind, name in (("map", "p.tif"),):
        body = {"kind": kind, "class_name": "marsh", "scope": scope, "out": name}
        assert client.post("/exports", json=body).json()["path"] == f"outputs/{name}"
    bad = {"kind": "map", "class_name": "marsh", "scope": scope, "out": "a.xlsx"}
    assert_error(client.post("/exports", json=bad), 400)
    files = {f["path"] for f in client.get("/files").json()["files"]}
    assert {"outputs/emb.parquet", "outputs/p.geojson", "outputs/p.tif"} <= files
    r = client.post("/classes/marsh/labels/remove", json={"tiles": ids[:1]})
    assert r.status_code == 200
    assert client.patch("/classes/marsh", json={"name": "wetland"}).json()["class"]["name"]
    assert client.delete("/classes/wetland").json()["labels"] == 5
    assert_error(client.get("/classes/nope/labels"), 404, "Unknown class")
    assert_error(client.post("/classify", json={"name": "nope", "scope": scope}), 404)
    assert_error(client.post("/classes/x/labels", json={}), 400)


# --- files and security ----------------------------------------------------------------------
def test_upload_geojson_then_embed_it(client: TestClient, embedded: dict[str, Any]) -> None:
    w, s, e, n = (float(v) for v in VIRGINIA_SMALL_BBOX.split(","))
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    aoi = {"type": "Polygon", "coordinates": [ring]}
    r = client.put("/files/uploads/aoi.geojson", content=json.dumps(aoi))
    assert r.status_code == 201 and r.json()["path"] == "uploads/aoi.geojson"
    body = {"source": "demo/virginia", "region": {"path": "uploads/aoi.geojson"}, "model": MODEL}
    job = wait_job(client, client.post("/embed", json=body).json()["id"])
    assert job["state"] == "completed" and job["result"]["cached"] == 16
    bad = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}
    assert_error(client.put("/files/uploads/bad.geojson", content=json.dumps(bad)), 422)
    assert "uploads/bad.geojson" not in {f["path"] for f in client.get("/files").json()["files"]}
    missing = {**body, "region": {"path": "uploads/none.geojson"}}
    assert_error(client.post("/embed", json=missing), 404, "File not found")
    assert_error(client.get("/files/outputs/none.tif"), 404, "File not found")


@pytest.mark.parametrize(
    ("method", "url", "payload"),
    [
        ("GET", "/files/%2e%2e/%2e%2e/etc/passwd", None),
        ("GET", "/files/%2Fetc%2Fpasswd", None),
        ("PUT", "/files/uploads/%2e%2e/%2e%2e/evil.txt", b"x"),
        ("PUT", "/files/outputs/evil.txt", b"x"),
        ("POST", "/embed", {"region": {"path": "/etc/passwd"}}),
        ("POST", "/embed", {"region": {"path": "../../etc/passwd"}}),
        ("POST", "/embed", {"engine": {"checkpoint": "/etc/passwd"}}),
        ("POST", "/report", {"out": "../../evil.html"}),
        ("POST", "/report", {"out": "/tmp/evil.html"}),
        ("POST", "/sources", None),
    ],
)
def test_traversal_refused(
    client: TestClient, method: str, url: str, payload: dict[str, Any] | bytes | None
) -> None:
    if url in ("/embed", "/report") and isinstance(payload, dict):
        base: dict[str, Any] = {
            "source": "demo/virginia",
            "region": {"bbox": VIRGINIA_SMALL_BBOX},
            "model": MODEL,
        }
        if url == "/report":
            base["out"] = "r.html"
        for key, value in payload.items():
            base[key] = value
        response = client.request(method, url, json=base)
    elif url == "/sources":
        response = client.post("/sources", json={"path": "../../../etc"})
    else:
        response = client.request(method, url, content=payload)
    body = assert_error(response, 400, "Path not allowed")
    assert "/etc" not in client.get("/files").text
    assert "root:" not in body["message"]


def test_body_limit(tmp_path: Path) -> None:
    with make_client(tmp_path, max_body_bytes=4096) as c:
        assert_error(c.put("/files/uploads/big.bin", content=b"x" * 5000), 413, "Request too large")

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"y" * 1000

        assert_error(c.put("/files/uploads/big2.bin", content=chunks()), 413)
        assert c.put("/files/uploads/small.bin", content=b"z" * 100).status_code == 201


def test_token(tmp_path: Path) -> None:
    with make_client(tmp_path, token="s3cret") as c:
        body = assert_error(c.get("/health"), 401, "Unauthorized")
        assert "Bearer" in body["message"]
        assert_error(c.get("/runs", headers={"Authorization": "Bearer wrong"}), 401)
        assert_error(c.get("/runs", headers={"Authorization": "Basic s3cret"}), 401)
        ok = c.get("/runs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert c.get("/health/live").status_code == 200  # liveness only, for containers


def test_bind_rules_and_confine(tmp_path: Path) -> None:
    from backend.server.security import PathNotAllowedError, TokenRequiredError

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "t")
    with pytest.raises(TokenRequiredError):
        check_bind("0.0.0.0", None)
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "link").symlink_to(tmp_path / "out")
    assert confine(tmp_path / "in", "a/b.txt") == (tmp_path / "in" / "a" / "b.txt").resolve()
    for bad in ("../out/x", "/etc/passwd", "link/x", "", "a/../../x", "C:/x"):
        with pytest.raises(PathNotAllowedError):
            confine(tmp_path / "in", bad)


def test_one_status_table() -> None:
    from backend import errors

    classes = [
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, errors.SoftMapError)
    ]
    for cls in classes:
        status = status_for(cls("x"))
        assert 400 <= status < 600
        if cls not in (errors.CacheError, errors.CatalogueUnreachableError, errors.DeviceError):
            assert status < 500 or cls.__mro__[1] in (errors.CacheError,), cls
    assert STATUS_BY_ERROR[-1] == (errors.SoftMapError, 400)


def test_typed_client_against_uvicorn_in_a_thread(tmp_path: Path) -> None:
    """The client (httpx) against a real uvicorn on a loopback port: the application layer's own
    result types come back, and its errors are raised as the same classes."""
    from backend.client import SoftMapClient, error_from
    from backend.embedding.pipeline import EmbedResult
    from backend.errors import InvalidRegionError, NoEmbeddingsError, UnknownSourceError
    from backend.search.query import SearchResponse
    from backend.server.locator import locator_path
    from backend.server.run import start_in_thread
    from backend.server.schemas import ErrorBody
    from backend.service import EmbedRequest, RegionSpec, SearchRequest

    db = tmp_path / "cache.duckdb"
    settings = Settings(db_path=db, models_dir=tmp_path / "models", offline=True)
    running = start_in_thread(ServerConfig(db_path=db, port=0), settings)
    try:
        assert running.url.startswith("http://127.0.0.1:") and locator_path(db).exists()
        with SoftMapClient(running.url) as remote:
            seen: list[Any] = []
            req = EmbedRequest(
                source="demo/virginia",
                region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX),
                model=MODEL,
                engine={"device": "cpu", "batch_size": 4},
            )
            result = remote.embed(req, progress=seen.append)
            assert isinstance(result, EmbedResult) and result.computed == 16
            assert seen and seen[-1].done == seen[-1].total == 16
            found = remote.find_similar(SearchRequest(model=MODEL, tiles=result.tile_ids[:1], k=4))
            assert isinstance(found, SearchResponse) and len(found.results) == 4
            assert found.results[0].rank == 1
            report = remote.recent_runs(3)
            assert report.stats.embeddings == 16 and report.runs[0]["started_at"].year > 2000
            assert remote.health().status == "ok"
            assert MODEL in {m.id for m in remote.models().models}
            with pytest.raises(NoEmbeddingsError):
                remote.find_similar(SearchRequest(model="nope", tiles=("x",)))
            with pytest.raises(UnknownSourceError):
                remote.embed(req.model_copy(update={"source": "demo/none"}))
            with pytest.raises(InvalidRegionError):
                remote.embed(req.model_copy(update={"region": RegionSpec(bbox="9,9,9")}))
    finally:
        running.stop()
    assert not locator_path(db).exists()
    err = error_from(ErrorBody(title="Something new", message="m"))
    assert type(err).__name__ == "SoftMapError" and err.title == "Something new"
