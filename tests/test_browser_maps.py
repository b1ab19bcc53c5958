"""Maps in a real browser: every page offline, the map fitting the analysed region, the Change page.

Headless Chromium against ``streamlit run`` (see ``tests/browser_helpers.py``): every request off
the machine is aborted and fails the test. The cache starts with the derived second date of
``scripts/second_date.py`` registered, so the Change page has two dates to compare. Screenshots
land in ``docs/screenshots/`` (``change.png``, ``change-swipe.png``, ``explore-layers.png`` and one
per page under ``pages/``), used in the README.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from app.pages_registry import PAGES
from backend.service import Workspace
from scripts.second_date import SOURCE_ID, register_second_date, write_second_date
from tests.browser_helpers import SCREENSHOTS, NetworkLog, chromium_or_skip, running_app

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Frame, Page, Route, WebSocket  # noqa: E402

from scripts.screenshot import CHROMIUM_ARGS, is_off_machine  # noqa: E402

BBOX = "-75.66,37.64,-75.625,37.67"
#: A second region of the scene, 8 km south-west of the first: the map must move there too.
OTHER_BBOX = "-75.72,37.60,-75.69,37.625"
LINK = "?source=demo/virginia&model=test-vit"
#: The Virginia scene is 0.22° wide: a map fitted to it is wider than that, one fitted to a
#: 3 km region narrower.
SCENE_WIDTH_DEG = 0.22
#: The map's view as (west, south, east, north), read from the Leaflet map in its frame.
BOUNDS_JS = """() => { const b = window.softmapMap.getBounds();
    return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]; }"""


@dataclass
class Browser:
    page: Page
    url: str
    network: NetworkLog


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    chromium_or_skip()
    folder = tmp_path_factory.mktemp("maps")
    db = folder / "app.duckdb"
    register_second_date(Workspace(db_path=db), write_second_date(folder / "second-date"))
    with running_app(db) as url:
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
        context = chromium.new_context(viewport={"width": 1400, "height": 1300})
        context.route("**/*", route)
        page = context.new_page()
        page.on("websocket", websocket)
        yield Browser(page, app_url, network)
        chromium.close()
    assert network.off_machine == [], "the page tried to reach another host"


def visible_maps(page: Page) -> list[Frame]:
    """Frames holding a rendered, visible Leaflet map."""
    found = []
    for frame in page.frames:
        try:
            container = frame.query_selector(".leaflet-container .leaflet-map-pane")
            if container is not None and frame.evaluate(
                "() => { const c = document.querySelector('.leaflet-container');"
                " return c.offsetWidth > 100 && c.offsetHeight > 100; }"
            ):
                found.append(frame)
        except PlaywrightError:  # a rerun replaced the iframe
            continue
    return found


def wait_for_map(page: Page, selector: str | None = None, timeout_s: float = 90.0) -> Frame:
    """A visible map's frame (one holding ``selector``, when given), retried across reruns."""
    deadline = time.monotonic() + timeout_s
    while True:
        for frame in visible_maps(page):
            try:
                if selector is None or frame.query_selector(selector) is not None:
                    return frame
            except PlaywrightError:
                continue
        if time.monotonic() > deadline:
            raise AssertionError(f"no visible Leaflet map{' with ' + selector if selector else ''}")
        page.wait_for_timeout(250)


def wait_until_idle(page: Page, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        running = page.locator('[data-testid="stStatusWidget"], [data-stale="true"]').count()
        quiet = 0 if running else quiet + 1


def map_bounds(page: Page, selector: str = "img.softmap-landcover") -> tuple[float, ...]:
    """The view of the map showing ``selector`` once it has stopped moving."""
    frame = wait_for_map(page, selector)
    last: tuple[float, ...] = ()
    for _ in range(40):
        try:
            now = tuple(frame.evaluate(BOUNDS_JS))
        except PlaywrightError:
            frame = wait_for_map(page, selector)
            continue
        if now == last:
            return now
        last = now
        page.wait_for_timeout(250)
    return last


def contains(view: tuple[float, ...], bbox: str) -> bool:
    w, s, e, n = (float(v) for v in bbox.split(","))
    return view[0] <= w and view[1] <= s and view[2] >= e and view[3] >= n


def analyse(page: Page, bbox: str) -> None:
    """Type the region, wait until the page shows it, press Analyse, wait for the new analysis.

    The success line of the previous analysis may still be on the page: wait for the rerun that
    the click starts to finish before reading the map.
    """
    field = page.get_by_label("Region as W,S,E,N", exact=False)
    field.fill(bbox)
    field.press("Enter")
    w, s, e, n = (float(v) for v in bbox.split(","))
    page.get_by_text(f"Region: {w:.4f},{s:.4f},{e:.4f},{n:.4f}").wait_for(timeout=60_000)
    wait_until_idle(page)
    page.get_by_role("button", name="Analyse").click()
    page.wait_for_timeout(1000)
    wait_until_idle(page, timeout_s=120)
    page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)


def test_analyse_fits_the_map_to_the_region_every_time(browser: Browser) -> None:
    page = browser.page
    page.goto(browser.url + LINK, wait_until="domcontentloaded")
    wait_for_map(page, "img.leaflet-image-layer")
    for bbox in (BBOX, OTHER_BBOX, BBOX):
        analyse(page, bbox)
        view = map_bounds(page)
        assert contains(view, bbox), (bbox, view)
        # Fitted to the region, not to the scene: zoomed in closer than the whole scene's view.
        assert view[2] - view[0] < SCENE_WIDTH_DEG, (bbox, view)

    # Readable layers: the land cover and its legend are there, the tile outlines are not drawn
    # (they answer a hover only) until the tile grid is turned on, and then they are thin.
    frame = wait_for_map(page, "img.softmap-landcover")
    legend = frame.wait_for_selector(".softmap-legend", state="visible", timeout=10_000)
    assert legend is not None and "Dominant class" in legend.inner_text()
    widths = frame.evaluate(
        "() => [...document.querySelectorAll('path.leaflet-interactive')]"
        ".filter(p => p.getAttribute('stroke') === '#ffd43b')"
        ".map(p => [+p.getAttribute('stroke-width'), +p.getAttribute('stroke-opacity')])"
    )
    assert len(widths) == 16 and all(w == 0 or o == 0 for w, o in widths)
    page.wait_for_timeout(1000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "explore-layers.png"), full_page=True)
    page.get_by_text("Tile grid").click()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            frame = wait_for_map(page, "img.softmap-landcover")
            widths = frame.evaluate(
                "() => [...document.querySelectorAll('path.leaflet-interactive')]"
                ".filter(p => p.getAttribute('stroke') === '#ffd43b')"
                ".map(p => [+p.getAttribute('stroke-width'), +p.getAttribute('stroke-opacity')])"
            )
        except PlaywrightError:
            continue
        if len(widths) == 16 and all(w > 0 and o > 0 for w, o in widths):
            break
        page.wait_for_timeout(250)
    assert len(widths) == 16 and all(0 < w <= 1 and o > 0 for w, o in widths), widths


def test_every_page_opens_offline_with_its_map(browser: Browser) -> None:
    page = browser.page
    (SCREENSHOTS / "pages").mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    for spec in PAGES:
        extra = f"&after={SOURCE_ID}" if spec.url_path == "change" else ""
        page.goto(
            f"{browser.url}{LINK}&page={spec.url_path}&bbox={BBOX}&analysed=1{extra}",
            wait_until="domcontentloaded",
        )
        page.get_by_role("heading").first.wait_for(timeout=60_000)
        # Pages with a map show it at once or once the region is analysed (they may offer to).
        deadline = time.monotonic() + 90
        while not visible_maps(page) and time.monotonic() < deadline:
            offer = page.get_by_role("button", name="Analyse this region")
            if offer.count():
                offer.first.click()
            page.wait_for_timeout(500)
        wait_until_idle(page)
        seen[spec.url_path] = len(visible_maps(page))
        page.screenshot(path=str(SCREENSHOTS / "pages" / f"{spec.url_path}.png"), full_page=True)
        assert not page.get_by_text("Traceback").count(), spec.url_path
    # Every page that shows a place shows it on a Leaflet map (the report shows its own HTML).
    assert all(seen[p] >= 1 for p in seen if p != "report"), seen


def test_change_page_shows_the_score_the_ranks_and_a_swipe(browser: Browser) -> None:
    page = browser.page
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.goto(
        f"{browser.url}{LINK}&page=change&bbox={BBOX}&after={SOURCE_ID}&analysed=1",
        wait_until="domcontentloaded",
    )
    page.get_by_role("heading", name="Change between two dates").wait_for(timeout=60_000)
    page.get_by_text("most-changed tiles").wait_for(timeout=180_000)
    frame = wait_for_map(page, ".softmap-change-rank")
    # The per-tile change score: 16 tiles, the 10 most changed numbered, a legend.
    deadline = time.monotonic() + 30
    while frame.locator(".softmap-change-rank").count() < 10 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert frame.locator(".softmap-change-rank").count() == 10
    legend = frame.wait_for_selector(".softmap-legend", state="visible", timeout=10_000)
    assert legend is not None and "Change score" in legend.inner_text()
    view = map_bounds(page, ".softmap-change-rank")
    assert contains(view, BBOX), view
    # Before/after thumbnails of the ranked tiles.
    thumbnails = page.locator('[data-testid="stImage"] img')
    deadline = time.monotonic() + 60
    while thumbnails.count() < 20 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert thumbnails.count() == 20
    wait_until_idle(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "change.png"), full_page=True)
    for name in ("Change map (COG)", "Ranked list (GeoJSON)", "Ranked list (CSV)"):
        page.get_by_text(name).first.wait_for(timeout=30_000)

    # The swipe: both dates loaded, each clipped to its side of the handle.
    page.get_by_text("Swipe before / after").click()
    frame = wait_for_map(page, ".leaflet-sbs-range")
    frame.wait_for_function(
        "() => [...document.querySelectorAll('img.softmap-date')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length === 2",
        timeout=30_000,
    )
    clips = frame.evaluate(
        "() => ['softmap-left', 'softmap-right'].map(n =>"
        " document.querySelector('.leaflet-' + n + '-pane').style.clip)"
    )
    assert all(c.startswith("rect(") for c in clips), clips
    assert frame.get_by_text("Before · 2016-01-12").count() == 1
    assert frame.get_by_text("After · 2016-02-01").count() == 1
    wait_until_idle(page)
    page.screenshot(path=str(SCREENSHOTS / "change-swipe.png"), full_page=True)


def test_with_one_date_the_change_page_says_how_to_add_one(browser: Browser) -> None:
    page = browser.page
    page.goto(
        f"{browser.url}?source=demo/brandenburg&model=test-vit&page=change",
        wait_until="domcontentloaded",
    )
    page.get_by_text("Only one date of this place").wait_for(timeout=60_000)
    page.locator('[data-testid="stCode"]').first.wait_for(timeout=30_000)
    code = " ".join(page.locator('[data-testid="stCode"]').all_inner_texts())
    assert "softmap stac add" in code and "softmap sources add" in code
