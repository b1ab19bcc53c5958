"""The app in a real browser: headless Chromium against `streamlit run`, strictly offline.

Screenshots land in docs/screenshots/ (used in the README).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.browser_helpers import SCREENSHOTS, NetworkLog, chromium_or_skip, running_app

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Frame, Page, Route, WebSocket  # noqa: E402

from scripts.screenshot import CHROMIUM_ARGS, find_map_frame, is_off_machine  # noqa: E402

TILE_COLOUR = "#ffd43b"  # app/map_view.py TILE_STYLE


@dataclass
class Browser:
    page: Page
    url: str
    network: NetworkLog


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    chromium_or_skip()
    with running_app(tmp_path_factory.mktemp("app") / "app.duckdb") as url:
        yield url


@pytest.fixture
def browser(app_url: str) -> Iterator[Browser]:
    """A Chromium page that aborts and records every request off the machine."""
    network = NetworkLog()

    def route(r: Route) -> None:
        if is_off_machine(r.request.url):
            network.off_machine.append(f"{r.request.method} {r.request.url}")
            r.abort("internetdisconnected")
        else:
            r.continue_()

    def websocket(ws: WebSocket) -> None:
        if is_off_machine(ws.url):
            network.off_machine.append(f"WEBSOCKET {ws.url}")

    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1100})
        context.route("**/*", route)
        page = context.new_page()
        page.on("websocket", websocket)
        yield Browser(page, app_url, network)
        chromium.close()
    assert network.off_machine == [], "the page tried to reach another host"


def map_frame(page: Page, timeout_s: float = 60.0) -> Frame:
    """The component iframe holding a rendered Leaflet map."""
    frame = find_map_frame(page, time.monotonic() + timeout_s)
    assert frame is not None, "no Leaflet map rendered in any frame"
    return frame


def tile_outlines(frame: Frame) -> int:
    count: int = frame.evaluate(
        "c => [...document.querySelectorAll('path.leaflet-interactive')]"
        ".filter(p => p.getAttribute('stroke') === c).length",
        TILE_COLOUR,
    )
    return count


def test_explore_map_renders_offline_and_analyse_draws_tiles(browser: Browser) -> None:
    page = browser.page
    page.goto(browser.url + "?source=demo/virginia&model=test-vit", wait_until="domcontentloaded")
    frame = map_frame(page)
    # The scene's true-colour overlay is an image served by the app itself, and it loaded.
    overlay = frame.wait_for_selector("img.leaflet-image-layer", timeout=30_000)
    assert overlay is not None
    assert "/app/static/previews/" in (overlay.get_attribute("src") or "")
    frame.wait_for_function(
        "() => [...document.querySelectorAll('img.leaflet-image-layer')]"
        ".some(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    assert tile_outlines(frame) == 0
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "explore.png"), full_page=True)

    # Type the demo region, then analyse it: 16 tiles of test-vit appear on the map.
    bbox = page.get_by_label("Region as W,S,E,N", exact=False)
    bbox.fill("-75.66,37.64,-75.625,37.67")
    bbox.press("Enter")
    page.get_by_role("button", name="Analyse").click()
    page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)
    deadline = time.monotonic() + 60
    while tile_outlines(frame := map_frame(page)) < 16 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert tile_outlines(frame) == 16
    assert "analysed=1" in page.url and "bbox=-75.66" in page.url
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SCREENSHOTS / "explore-analysed.png"), full_page=True)
