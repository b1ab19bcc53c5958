"""The app in client mode: ``SOFTMAP_BACKEND_URL`` names a real ``softmap serve`` (uvicorn on a
loopback port, its own cache), and the app, run headless with AppTest, analyses, maps land cover
and searches through it, never opening a DuckDB file itself."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from backend.landcover.labels import DW_TITLES, N_CLASSES
from backend.settings import PROJECT_ROOT, get_settings
from tests.conftest import VIRGINIA_SMALL_BBOX
from tests.test_server_process import service

MAIN = str(PROJECT_ROOT / "app" / "main.py")
TOKEN = "app-test-token-0123456789"
#: One of the 16 test-vit tiles of the small Virginia region.
QUERY = "demo/virginia/112/112/9_6"


@pytest.fixture(scope="module")
def served(venv_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A service with a token on its own cache; yields its URL and the cache file."""
    db = tmp_path_factory.mktemp("service") / "service.duckdb"
    with service(venv_bin, db, "--token", TOKEN, SOFTMAP_WARM_UP="0") as (_proc, url):
        yield url, db


@pytest.fixture
def no_duckdb_here(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Fail any DuckDB connection this (the app's) process tries to open."""
    opened: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        opened.append(args)
        raise AssertionError(f"the app opened DuckDB {args}")

    monkeypatch.setattr(duckdb, "connect", refuse)
    return opened


def client_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, token: str | None = TOKEN, **q: str
) -> AppTest:
    monkeypatch.setenv("SOFTMAP_DB_PATH", str(tmp_path / "never-opened.duckdb"))
    monkeypatch.setenv("SOFTMAP_BACKEND_URL", url)
    if token is None:
        monkeypatch.delenv("SOFTMAP_BACKEND_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SOFTMAP_BACKEND_TOKEN", token)
    get_settings.cache_clear()
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.query_params["model"] = "test-vit"
    for key, value in q.items():
        at.query_params[key] = value
    return at


def _fds_on(path: Path) -> list[str]:
    out = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(path)):
            out.append(target)
    return out


@pytest.mark.slow
def test_the_app_analyses_maps_and_searches_through_the_service(
    served: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_duckdb_here: list[Any],
) -> None:
    url, service_db = served
    at = client_app(tmp_path, monkeypatch, url)
    at.run()
    assert not at.exception
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert f"(service {url})" in captions  # the device is the service's
    assert f"Cache `{service_db}`" in captions

    # Explore → Analyse: the embed job (progress from its events), then the land-cover job.
    at.button(key="explore.analyse").click().run()
    assert not at.exception, at.exception
    assert "16 tiles analysed with test-vit: 16 computed, 0 from the cache" in at.success[0].value
    analysis = at.session_state["app.analysis"]
    assert len(analysis.tiles) == 16
    shown = at.session_state["explore.landcover_shown"]
    assert shown.error is None, shown.error
    result = shown.result
    assert len(result.tile_ids) == 16
    assert result.token_probabilities is not None
    assert result.token_probabilities.shape == (16, N_CLASSES, 8, 8)
    table = at.dataframe[0].value
    assert set(table["Class"]) == set(DW_TITLES)
    assert sum(table["Expected km²"]) == pytest.approx(result.region_km2, abs=0.05)
    # The layer was drawn from the service's probabilities.
    _choice, layer = at.session_state["explore.landcover_layer"]
    assert layer is not None

    # Similar places: the search runs on the service.
    similar = client_app(
        tmp_path, monkeypatch, url, page="similar", source="demo/virginia",
        bbox=VIRGINIA_SMALL_BBOX, q=QUERY, sup="0",
    )  # fmt: skip
    similar.run()
    assert not similar.exception, similar.exception
    response = similar.session_state["similar.query"]
    assert response.positives == (QUERY,)
    cards = [m.value for m in similar.markdown if m.value.startswith("**#")]
    assert len(cards) == 10
    assert any("10 results of 16 test-vit tiles" in c.value for c in similar.caption)
    # The top result's match heatmap comes from the service's model too.
    captions = [c for img in similar.image for c in img.captions]
    assert any("Where it matches" in c for c in captions)
    assert any("8 × 8 patches" in c.value for c in similar.caption)

    # Report & export: the report job's page and every download of the service's map.
    report = client_app(
        tmp_path, monkeypatch, url, page="report", source="demo/virginia",
        bbox=VIRGINIA_SMALL_BBOX, analysed="1",
    )  # fmt: skip
    report.run()
    assert not report.exception, report.exception
    files = {el.proto.label.split(" · ")[0] for el in report.get("download_button")}
    assert files == {
        "Report (HTML)", "Tiles (GeoJSON)", "Tiles (GeoParquet)", "Probability map (COG)",
        "Class areas (CSV)", "Embeddings (GeoParquet)",
    }  # fmt: skip
    (frame,) = report.get("iframe")
    assert "<html" in str(frame.proto.srcdoc).lower()

    # The app process never opened a cache: its own file does not exist, the service's is
    # not open here, and no DuckDB connection was attempted.
    assert not no_duckdb_here
    assert not (tmp_path / "never-opened.duckdb").exists()
    assert not _fds_on(service_db)


@pytest.mark.slow
def test_a_refused_token_and_an_unreachable_service_are_one_message(
    served: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_duckdb_here: list[Any],
) -> None:
    url, _db = served
    at = client_app(tmp_path, monkeypatch, url, token="wrong-token-0123456789")
    at.run()
    assert not at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    assert "token" in errors.lower()
    assert "Traceback" not in errors

    gone = client_app(tmp_path, monkeypatch, "http://127.0.0.1:9")  # discard port: refused
    gone.run()
    assert not gone.exception
    errors = " ".join(e.value for e in gone.sidebar.error)
    assert "SoftMap service unreachable" in errors
    assert "http://127.0.0.1:9" in errors
    assert not no_duckdb_here


@pytest.fixture(scope="module")
def served_two_dates(
    venv_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A service whose cache has the derived second date of Virginia registered (its files on
    this disk, so the app reads its pixels too); nothing embedded yet."""
    from backend.service import Workspace
    from scripts.second_date import register_second_date, write_second_date

    folder = tmp_path_factory.mktemp("two_dates_service")
    db = folder / "service.duckdb"
    register_second_date(Workspace(db_path=db), write_second_date(folder / "files"))
    with service(venv_bin, db, "--token", TOKEN, SOFTMAP_WARM_UP="0") as (_proc, url):
        yield url, db


@pytest.mark.slow
def test_change_compares_two_dates_through_the_service(
    served_two_dates: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_duckdb_here: list[Any],
) -> None:
    from scripts.second_date import CHANGED_TILES_112, SOURCE_ID

    url, service_db = served_two_dates
    changed = {f"demo/virginia/112/112/{r}_{c}" for r, c in CHANGED_TILES_112}
    at = client_app(
        tmp_path, monkeypatch, url, page="change", source="demo/virginia",
        bbox=VIRGINIA_SMALL_BBOX,
    )  # fmt: skip
    at.run()
    assert not at.exception, at.exception
    # The second date is registered on the service and its files are readable here.
    assert at.selectbox(key="change.after").value == SOURCE_ID
    at.button(key="change.compare").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tile pairs"] == "16"
    captions = " ".join(c.value for c in at.caption)
    assert "16 tile pairs (centroid matching)" in captions
    assert "32 embedded now, 0 from the cache" in captions
    ranked = [m.value.split("`")[1] for m in at.markdown if m.value.startswith("**0.")]
    assert len(ranked) == 10 and set(ranked[:4]) == changed
    downloads = [d.proto.label for d in at.get("download_button")]
    assert downloads == ["Change map (COG)", "Ranked list (GeoJSON)", "Ranked list (CSV)"]
    change = at.session_state["change.result"][1]
    assert change.result.raster is not None  # the COG is written from the service's raster
    assert not no_duckdb_here
    assert not _fds_on(service_db)


def _embedded(url: str) -> None:
    """The small Virginia region embedded on the service (a no-op when it is already)."""
    from backend.client import SoftMapClient
    from backend.service import EmbedRequest, RegionSpec

    with SoftMapClient(url, token=TOKEN) as c:
        c.embed(
            EmbedRequest(
                source="demo/virginia",
                region=RegionSpec(bbox=VIRGINIA_SMALL_BBOX),
                model="test-vit",
            )
        )


@pytest.mark.slow
def test_the_embedding_space_is_projected_by_the_service(
    served: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_duckdb_here: list[Any],
) -> None:
    from app.operations import ThroughService
    from backend.analysis.projection import ProjectionParams
    from backend.client import SoftMapClient
    from backend.imagery.regions import parse_bbox
    from backend.imagery.sources import demo_catalog
    from backend.service import RegionSpec, ScopeRequest

    url, _db = served
    _embedded(url)
    # The client rebuilds the scope and the projection from POST /projection.
    with SoftMapClient(url, token=TOKEN) as c:
        ops = ThroughService(c, demo_catalog())
        region = RegionSpec.of(parse_bbox(VIRGINIA_SMALL_BBOX))
        scope = ops.resolve_scope(
            ScopeRequest(model="test-vit", source="demo/virginia", region=region)
        )
        assert scope.kind == "region" and len(scope.tile_ids) == 16
        assert scope.tile_ids == tuple(sorted(scope.tile_ids))
        assert QUERY in scope.tile_ids
        assert scope.region is not None and scope.key.startswith("region:demo/virginia:")
        pca = ops.scope_projection(scope, ProjectionParams(method="pca"))
        assert pca.method == "pca" and sorted(pca.tile_ids) == list(scope.tile_ids)
        assert pca.xy.shape == (16, 2) and pca.xy.dtype.name == "float32"
        everything = ops.resolve_scope(ScopeRequest(model="test-vit"))
        assert everything.kind == "all" and set(scope.tile_ids) <= set(everything.tile_ids)

    at = client_app(
        tmp_path, monkeypatch, url, page="embedding", source="demo/virginia",
        bbox=VIRGINIA_SMALL_BBOX,
    )  # fmt: skip
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in [*at.error, *at.warning])
    assert not shown, shown
    assert len(at.get("plotly_chart")) == 1
    captions = " ".join(c.value for c in at.caption)
    assert "PCA of 16 tiles of test-vit over region" in captions, captions
    # The UMAP fit runs on the service; the chart switches to it once it is there.
    deadline = time.monotonic() + 120
    while "UMAP of 16 tiles of test-vit" not in captions and time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception, at.exception
        captions = " ".join(c.value for c in at.caption)
    assert "UMAP of 16 tiles of test-vit over region" in captions, captions
    assert not at.error
    assert at.selectbox(key="embedding.colour").options == ["Source"]
    assert not no_duckdb_here


TILE = "demo/virginia/112/112/{}"
POSITIVES = [TILE.format(t) for t in ("8_5", "8_6", "9_5")]
NEGATIVES = [TILE.format(t) for t in ("11_7", "11_8", "10_8")]


@pytest.mark.slow
def test_my_classes_label_train_and_suggest_through_the_service(
    served: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_duckdb_here: list[Any],
) -> None:
    url, _db = served
    _embedded(url)
    at = client_app(
        tmp_path, monkeypatch, url, page="classes", source="demo/virginia",
        bbox=VIRGINIA_SMALL_BBOX,
    )  # fmt: skip
    at.run()
    assert not at.exception, at.exception
    assert at.header[0].value == "My classes"
    # Create a class (POST /classes), label tiles (POST /classes/{name}/labels).
    at.text_input(key="classes.new_name").set_value("marsh through service")
    at.button(key="classes.create").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="classes.class").value == "marsh through service"
    at.text_input(key="classes.ids").set_value(" ".join(POSITIVES))
    at.button(key="classes.add_pos").click().run()
    at.text_input(key="classes.ids").set_value(", ".join(NEGATIVES))
    at.button(key="classes.add_neg").click().run()
    assert not at.exception, at.exception
    assert any("3 positive · 3 negative" in m.value for m in at.markdown)
    # Train on the service (POST /classify?points=true): accuracy, area and the map's colours.
    at.button(key="classes.train").click().run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "(3 folds; chance 0.50) from 3 positive / 3 negative labels" in text
    assert "Expected area of **marsh through service** in the region" in text
    # Suggestions from POST /suggest: unlabelled tiles, one click labels one.
    yes = [b for b in at.button if b.key and b.key.startswith("classes.sug_pos.")]
    assert len(yes) == 6
    suggested = [b.key.removeprefix("classes.sug_pos.") for b in yes]
    assert not set(suggested) & set(POSITIVES + NEGATIVES)
    yes[0].click().run()
    assert not at.exception, at.exception
    assert "from 4 positive / 3 negative labels" in " ".join(m.value for m in at.markdown)
    # Remove a label, rename, delete.
    at.button(key=f"classes.rm.{NEGATIVES[0]}").click().run()
    assert "4 positive · 2 negative" in " ".join(m.value for m in at.markdown)
    at.text_input(key="classes.rename_to").set_value("open marsh")
    at.button(key="classes.rename").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="classes.class").value == "open marsh"
    at.button(key="classes.delete").click().run()
    assert not at.exception, at.exception
    assert "Deleted 'open marsh' and its 6 labels." in at.success[0].value
    assert not no_duckdb_here
