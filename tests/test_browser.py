"""The app in a real browser: headless Chromium against `streamlit run`, strictly offline.

Screenshots land in docs/screenshots/ (used in the README).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.browser_helpers import SCREENSHOTS, NetworkLog, chromium_or_skip, running_app

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Frame, Page, Route, WebSocket  # noqa: E402

from scripts.screenshot import CHROMIUM_ARGS, find_map_frame, is_off_machine  # noqa: E402

TILE_COLOUR = "#ffd43b"  # app/map_view.py TILE_STYLE


@dataclass
class Browser:
    page: Page
    url: str
    network: NetworkLog
    #: When the page sent each message to the server over Streamlit's websocket (a rerun
    #: request, a widget or map value): the measure of "quiet".
    sent: list[float] = field(default_factory=list)

    def sent_since(self, t0: float) -> int:
        return sum(1 for t in self.sent if t >= t0)


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

    sent: list[float] = []

    def websocket(ws: WebSocket) -> None:
        if is_off_machine(ws.url):
            network.off_machine.append(f"WEBSOCKET {ws.url}")
        if "_stcore/stream" in ws.url:
            ws.on("framesent", lambda _frame: sent.append(time.monotonic()))

    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_or_skip(), args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1100})
        context.route("**/*", route)
        page = context.new_page()
        page.on("websocket", websocket)
        yield Browser(page, app_url, network, sent)
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


def loaded_landcover(page: Page, timeout_s: float = 60.0) -> Frame:
    """The map frame once its land-cover image is visible and loaded (retried on re-mounts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        frame = map_frame(page)
        try:
            frame.wait_for_function(
                "() => [...document.querySelectorAll('img.softmap-landcover')]"
                ".some(i => i.complete && i.naturalWidth > 0 && i.offsetParent !== null)",
                timeout=5_000,
            )
            return frame
        except PlaywrightError:
            if time.monotonic() > deadline:
                raise


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

    # The soft-label land-cover map: an image served by the app, loaded, with its legend …
    # (The map may re-mount once while it settles on the fitted view: look again if so.)
    frame = loaded_landcover(page)
    landcover = frame.query_selector("img.softmap-landcover")
    assert landcover is not None
    assert "/app/static/landcover/" in (landcover.get_attribute("src") or "")
    legend = frame.wait_for_selector(".softmap-legend", state="visible", timeout=10_000)
    assert legend is not None and "Dominant class" in legend.inner_text()
    # … and the area chart drawn by plotly, with one bar per class present.
    page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=60_000)
    bars = page.locator(".js-plotly-plot .barlayer .point").count()
    assert bars >= 5
    page.get_by_text("Cropland:").wait_for(timeout=10_000)
    # Streamlit scrolls inside its own container: a tall window shows map, chart and table.
    page.set_viewport_size({"width": 1400, "height": 2000})
    page.wait_for_timeout(2000)
    page.get_by_text("Cropland:").wait_for(timeout=10_000)  # the resize keeps the analysis
    loaded_landcover(page)
    page.screenshot(path=str(SCREENSHOTS / "explore-landcover.png"), full_page=True)


def test_a_tile_link_shows_its_class_probability_bars(browser: Browser) -> None:
    page = browser.page
    tile = "demo/virginia/112/112/10_6"
    page.goto(
        browser.url + "?source=demo/virginia&model=test-vit&bbox=-75.66,37.64,-75.625,37.67"
        f"&analysed=1&tiles={tile}",
        wait_until="domcontentloaded",
    )
    page.get_by_text(f"Tile {tile}").wait_for(timeout=120_000)
    page.get_by_text("Most likely").wait_for(timeout=30_000)
    # The area chart and the tile's nine class bars.
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=60_000
    )
    bars = page.locator(".js-plotly-plot").last.locator(".barlayer .point").count()
    assert bars == 9
    loaded_landcover(page)
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SCREENSHOTS / "explore-tile.png"), full_page=True)


def result_marks(frame: Frame) -> dict[str, int]:
    """Result footprints, rank labels, query outlines and heatmap overlays on the map."""
    counts: dict[str, int] = frame.evaluate(
        """() => ({
            footprints: document.querySelectorAll('path.softmap-result').length,
            ranks: document.querySelectorAll('.softmap-rank').length,
            query: document.querySelectorAll('path.softmap-query').length,
            heatmap: [...document.querySelectorAll('img.softmap-heatmap')]
                .filter(i => i.complete && i.naturalWidth > 0).length,
        })"""
    )
    return counts


def wait_until_idle(page: Page, timeout_s: float = 30.0) -> None:
    """Until Streamlit has shown no "Running…" status for a second (a resize reruns the map)."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        running = page.locator('[data-testid="stStatusWidget"], [data-stale="true"]').count()
        quiet = 0 if running else quiet + 1


def test_similar_places_ranks_results_on_the_map_and_in_the_gallery(browser: Browser) -> None:
    page = browser.page
    # Tall enough for the map, the selected result and the whole gallery in one screenshot
    # (Streamlit scrolls inside its main block, so a full-page screenshot would not show more).
    page.set_viewport_size({"width": 1400, "height": 1750})
    query = "demo/virginia/112/112/9_6"
    page.goto(
        browser.url + "?page=similar&source=demo/virginia&model=test-vit"
        f"&bbox=-75.66,37.64,-75.625,37.67&q={query}&sup=0&k=8",
        wait_until="domcontentloaded",
    )
    page.get_by_role("heading", name="Similar places").wait_for(timeout=60_000)
    # On a fresh cache the page offers to analyse the region in place (the Explore test may
    # have analysed it already: then the results are there at once).
    analyse = page.get_by_role("button", name="Analyse this region")
    gallery_card = page.get_by_text("#8", exact=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if analyse.count():
            analyse.click()
            break
        if gallery_card.count():
            break
        page.wait_for_timeout(250)
    page.get_by_role("button", name="Selected").wait_for(timeout=120_000)
    deadline = time.monotonic() + 60
    marks = result_marks(map_frame(page))
    while (marks["footprints"] < 8 or not marks["heatmap"]) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        marks = result_marks(map_frame(page))
    assert marks["footprints"] == 8 and marks["ranks"] == 8
    assert marks["query"] >= 1 and marks["heatmap"] == 1
    assert "q=demo%2Fvirginia%2F112%2F112%2F9_6" in page.url or f"q={query}" in page.url
    # Eight thumbnails with scores, the top one selected, its heatmap beside its thumbnail.
    page.get_by_text("Where it matches").wait_for(timeout=30_000)
    others = page.get_by_role("button", name="Show match")
    deadline = time.monotonic() + 30
    while others.count() < 7 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert others.count() == 7
    assert page.get_by_role("button", name="Selected").count() == 1
    wait_until_idle(page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "similar.png"), full_page=True)
    # Adding negatives by map click is covered by tests/test_app_similar.py (AppTest): in the
    # browser the mode switch raced a rerun and timed out.


def test_report_page_previews_the_report_and_offers_downloads(browser: Browser) -> None:
    page = browser.page
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(
        browser.url + "?page=report&source=demo/virginia&model=test-vit"
        "&bbox=-75.66,37.64,-75.625,37.67&analysed=1",
        wait_until="domcontentloaded",
    )
    page.get_by_role("heading", name="Report & export").wait_for(timeout=60_000)
    # The link says "analysed": the page analyses (or reuses) the region, then offers files.
    report_button = page.get_by_role("button", name="Report (HTML)")
    report_button.wait_for(timeout=120_000)
    for name in ("Tiles (GeoJSON)", "Tiles (GeoParquet)", "Probability map (COG)",
                 "Class areas (CSV)", "Embeddings (GeoParquet)"):  # fmt: skip
        assert page.get_by_role("button", name=name).count() == 1
    # The preview: the report's own document in an iframe, its two map images decoded.
    frame = None
    deadline = time.monotonic() + 60
    while frame is None and time.monotonic() < deadline:
        frame = next((f for f in page.frames if f.query_selector("table.areas")), None)
        page.wait_for_timeout(250)
    assert frame is not None, "no report preview"
    frame.wait_for_function(
        "() => document.querySelectorAll('figure.map svg image').length === 2", timeout=30_000
    )
    # One row per class, and the area unlike the training data in its own row.
    assert frame.locator("table.areas tbody tr").count() == 10
    assert "CROPLAND" in frame.inner_text(".cards").upper()
    # The HTML download is the same report.
    with page.expect_download() as info:
        report_button.click()
    text = info.value.path().read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "Eastern Shore of Virginia" in text
    assert info.value.suggested_filename.endswith("_report.html")
    page.set_viewport_size({"width": 1400, "height": 3400})
    page.wait_for_timeout(1500)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)


def test_embedding_space_and_my_classes_pages(browser: Browser) -> None:
    page = browser.page
    region = "source=demo/virginia&model=test-vit&bbox=-75.66,37.64,-75.625,37.67"
    # Make sure the demo region is embedded (an earlier test may have done it already).
    page.goto(browser.url + f"?{region}&analysed=1", wait_until="domcontentloaded")
    page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)

    # Embedding space: the plotly WebGL scatter at once (PCA), UMAP when the fit is done.
    page.goto(browser.url + f"?page=embedding&{region}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Embedding space").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot .gl-canvas", state="attached", timeout=60_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=60_000)
    # The fragment polls the background fit and switches the chart to UMAP by itself.
    page.get_by_text("UMAP of 16 tiles of test-vit").wait_for(timeout=180_000)
    wait_until_idle(page)
    # Lasso the whole plot: every tile is selected, ringed in the chart and outlined on the map.
    plot = page.locator(".js-plotly-plot .nsewdrag").first
    box = plot.bounding_box()
    assert box is not None
    x0, y0, x1, y1 = (
        box["x"] + 3,
        box["y"] + 3,
        box["x"] + box["width"] - 3,
        box["y"] + box["height"] - 3,
    )
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.get_by_text("16 selected tiles").wait_for(timeout=60_000)
    deadline = time.monotonic() + 60
    selected = 0
    while selected < 16 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        selected = map_frame(page).evaluate(
            "() => document.querySelectorAll('path.softmap-embedding-selected').length"
        )
    assert selected == 16
    assert "tiles=" in page.url
    rings = page.locator(".js-plotly-plot .legendtext", has_text="selected")
    rings.wait_for(timeout=30_000)
    wait_until_idle(page)
    page.mouse.move(5, 5)  # no hover toolbar or tooltip in the picture
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.wait_for_timeout(1500)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "embedding-space.png"), full_page=True)

    # My classes: create a class, label tiles by id, train; accuracy, area and suggestions.
    page.goto(browser.url + f"?page=classes&{region}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="My classes").wait_for(timeout=60_000)
    page.get_by_label("New class").fill("bright fields")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Class 'bright fields' created").wait_for(timeout=60_000)
    wait_until_idle(page)
    ids = page.locator("input[aria-label='Add tiles by id (spaces or commas)']").first
    ids.fill(" ".join(f"demo/virginia/112/112/{t}" for t in ("8_5", "8_6", "9_5")))
    ids.press("Enter")
    wait_until_idle(page)
    page.get_by_role("button", name="Add as positive").click()
    page.get_by_text("3 positive · 0 negative").wait_for(timeout=60_000)
    wait_until_idle(page)
    ids.fill(" ".join(f"demo/virginia/112/112/{t}" for t in ("11_7", "11_8", "10_8")))
    ids.press("Enter")
    wait_until_idle(page)
    page.get_by_role("button", name="Add as negative").click()
    page.get_by_text("3 positive · 3 negative").wait_for(timeout=60_000)
    page.get_by_role("button", name="Train").click()
    page.get_by_text("Cross-validated balanced accuracy").wait_for(timeout=60_000)
    page.get_by_text("Label these next").wait_for(timeout=60_000)
    deadline = time.monotonic() + 60
    numbered = 0
    while numbered < 6 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        numbered = map_frame(page).evaluate(
            "() => document.querySelectorAll('.softmap-suggestion').length"
        )
    assert numbered == 6
    wait_until_idle(page)
    page.mouse.move(5, 5)
    page.set_viewport_size({"width": 1400, "height": 1700})
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SCREENSHOTS / "my-classes.png"), full_page=True)


# --- issue 12: the map clicks the core workflows rely on, and no rerun loop ---------------------
REGION = "-75.66,37.64,-75.625,37.67"
#: Inside the demo region: test-vit tile 10_6 (112 px chips), and 11_5 for a second label.
INSIDE = (-75.6425, 37.655)
ELSEWHERE = (-75.651, 37.645)


def map_view_of(frame: Frame) -> tuple[int, float, float]:
    """Zoom and centre of the Leaflet map in a frame."""
    zoom, lat, lon = frame.evaluate(
        "() => [window.map.getZoom(), window.map.getCenter().lat, window.map.getCenter().lng]"
    )
    return int(zoom), round(float(lat), 5), round(float(lon), 5)


def click_map_at(page: Page, lon: float, lat: float) -> None:
    """Click the map where a lon/lat point is, as a user would (a real mouse click)."""
    frame = map_frame(page)
    element = frame.frame_element()
    element.scroll_into_view_if_needed()
    x, y = frame.evaluate(
        """([lat, lon]) => {
            const p = window.map.latLngToContainerPoint([lat, lon]);
            const r = window.map.getContainer().getBoundingClientRect();
            return [p.x + r.left, p.y + r.top];
        }""",
        [lat, lon],
    )
    box = element.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + x, box["y"] + y)


def zoom_and_pan(page: Page) -> None:
    """Wheel-zoom and drag the map: the moves that started the rerun loop of issue 12."""
    element = map_frame(page).frame_element()
    element.scroll_into_view_if_needed()
    box = element.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + min(box["height"] / 2, 280)
    page.mouse.move(x, y)
    page.mouse.wheel(0, -300)
    page.wait_for_timeout(800)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 40, steps=5)
    page.mouse.up()


def test_after_analyse_the_page_goes_quiet_and_a_tile_click_keeps_the_analysis(
    browser: Browser,
) -> None:
    page = browser.page
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(
        browser.url + f"?source=demo/virginia&model=test-vit&bbox={REGION}",
        wait_until="domcontentloaded",
    )
    map_frame(page)
    page.wait_for_timeout(1500)
    zoom_and_pan(page)  # before issue 12's fix this started a zoom ping-pong with the server
    page.get_by_role("button", name="Analyse").click()
    page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)
    loaded_landcover(page)
    wait_until_idle(page)
    page.wait_for_timeout(2000)

    # Blocker 1: 30 s idle after Analyse: no message to the server, the map stays put.
    t0 = time.monotonic()
    first = map_view_of(map_frame(page))
    views = set()
    while time.monotonic() - t0 < 30:
        page.wait_for_timeout(1000)
        views.add(map_view_of(map_frame(page)))
    assert browser.sent_since(t0) == 0, f"{browser.sent_since(t0)} messages in 30 s idle"
    assert views == {first}, f"the map moved by itself: {sorted(views)}"
    assert first[0] >= 13, "the map fits the analysed region"

    # Blocker 2: a click on a tile inside the analysed region opens its panel, keeps the analysis.
    click_map_at(page, *INSIDE)
    page.get_by_text("Tile demo/virginia/112/112/10_6").wait_for(timeout=60_000)
    page.get_by_text("Most likely").wait_for(timeout=30_000)
    assert page.get_by_text("16 tiles analysed with test-vit").count() == 1
    page.get_by_text("Cropland:").wait_for(timeout=10_000)
    page.wait_for_url("**tiles=*10_6*", timeout=30_000)  # written at the end of the rerun
    assert "bbox=-75.66000" in page.url and "analysed=1" in page.url
    # The map is rebuilt after the click: its centre may land a fraction of a pixel away
    # (1 px is about 2e-4° here at zoom 13), which is no move a user can see.
    after = map_view_of(map_frame(page))
    assert after[0] == first[0], "the click does not change the zoom"
    assert abs(after[1] - first[1]) < 1e-4 and abs(after[2] - first[2]) < 1e-4, (
        f"the click does not move the map: {first} → {after}"
    )
    # The panel's own reruns settle too.
    wait_until_idle(page)
    t1 = time.monotonic()
    page.wait_for_timeout(5000)
    assert browser.sent_since(t1) == 0


def test_a_click_in_my_classes_adds_a_label_that_survives_a_reload(browser: Browser) -> None:
    page = browser.page
    page.set_viewport_size({"width": 1400, "height": 1100})
    region = f"source=demo/virginia&model=test-vit&bbox={REGION}"
    page.goto(browser.url + f"?{region}&analysed=1", wait_until="domcontentloaded")
    page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)
    page.goto(browser.url + f"?page=classes&{region}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="My classes").wait_for(timeout=60_000)
    page.get_by_label("New class").fill("clicked fields")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Class 'clicked fields' created").wait_for(timeout=60_000)
    page.get_by_text("0 positive · 0 negative").wait_for(timeout=30_000)
    wait_until_idle(page)
    # "Positive" is the default click mode: one click on a tile labels it.
    click_map_at(page, *INSIDE)
    page.get_by_text("1 positive · 0 negative").wait_for(timeout=60_000)
    wait_until_idle(page)
    page.get_by_text("Negative", exact=True).click()
    wait_until_idle(page)
    click_map_at(page, *ELSEWHERE)
    page.get_by_text("1 positive · 1 negative").wait_for(timeout=60_000)
    deadline, outlined = time.monotonic() + 30, 0
    while outlined != 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        outlined = map_frame(page).evaluate(
            "() => [...document.querySelectorAll('path.leaflet-interactive')]"
            ".filter(p => ['#00c853', '#ff1744'].includes(p.getAttribute('stroke'))).length"
        )
    assert outlined == 2, "both labels are outlined on the map"
    # The labels are stored: a reload (a new session) shows them again.
    assert "class=clicked" in page.url
    page.reload(wait_until="domcontentloaded")
    page.get_by_text("1 positive · 1 negative").wait_for(timeout=60_000)


def ranks_in_view(frame: Frame) -> tuple[int, int]:
    """(result numbers inside the visible map, all result numbers)."""
    inside, total = frame.evaluate(
        """() => {
            const r = window.map.getContainer().getBoundingClientRect();
            const ranks = [...document.querySelectorAll('.softmap-rank')];
            const seen = ranks.filter(e => {
                const b = e.getBoundingClientRect();
                const x = b.left + b.width / 2, y = b.top + b.height / 2;
                return x >= r.left && x <= r.right && y >= r.top && y <= r.bottom;
            });
            return [seen.length, ranks.length];
        }"""
    )
    return int(inside), int(total)


def test_similar_refits_the_map_when_a_negative_brings_results_from_elsewhere(
    browser: Browser,
) -> None:
    page = browser.page
    page.set_viewport_size({"width": 1400, "height": 1300})
    # A second analysed region far from the first, so "This scene" finds tiles in both.
    for bbox in ("-75.56,37.72,-75.53,37.745", REGION):
        page.goto(
            browser.url + f"?source=demo/virginia&model=test-vit&bbox={bbox}&analysed=1",
            wait_until="domcontentloaded",
        )
        page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)
    page.goto(
        browser.url + f"?page=similar&source=demo/virginia&model=test-vit&bbox={REGION}"
        "&analysed=1&q=demo/virginia/112/112/9_6&scope=source&sup=0&k=12",
        wait_until="domcontentloaded",
    )
    page.get_by_role("button", name="Selected").wait_for(timeout=120_000)
    wait_until_idle(page)
    deadline, counts = time.monotonic() + 30, (0, 0)
    while (counts[1] < 12 or counts[0] < counts[1]) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        counts = ranks_in_view(map_frame(page))
    assert counts == (12, 12), f"results in view before: {counts}"
    page.get_by_text("Add negative", exact=True).click()
    wait_until_idle(page)
    click_map_at(page, *ELSEWHERE)
    page.get_by_text("but not like").wait_for(timeout=60_000)
    wait_until_idle(page)
    deadline, counts = time.monotonic() + 30, (0, 0)
    while (counts[1] < 12 or counts[0] < counts[1]) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        counts = ranks_in_view(map_frame(page))
    assert counts == (12, 12), f"results in view after the negative: {counts}"


def test_a_page_link_through_the_root_logs_no_404(browser: Browser) -> None:
    """``/?page=similar`` opens Similar places with no failed request (README: sub-page URLs)."""
    page = browser.page
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(
        browser.url + "?page=similar&source=demo/virginia&model=test-vit",
        wait_until="domcontentloaded",
    )
    page.get_by_role("heading", name="Similar places").wait_for(timeout=60_000)
    assert "/similar" in page.url
    page.wait_for_timeout(3000)
    assert failed == []


def test_a_click_on_the_embedding_space_map_selects_that_tile(browser: Browser) -> None:
    page = browser.page
    page.set_viewport_size({"width": 1400, "height": 1100})
    region = f"source=demo/virginia&model=test-vit&bbox={REGION}"
    page.goto(browser.url + f"?{region}&analysed=1", wait_until="domcontentloaded")
    page.get_by_text("tiles analysed with test-vit").wait_for(timeout=120_000)
    page.goto(browser.url + f"?page=embedding&{region}", wait_until="domcontentloaded")
    page.get_by_role("heading", name="Embedding space").wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", state="visible", timeout=60_000)
    wait_until_idle(page)
    click_map_at(page, *INSIDE)
    page.get_by_text("1 selected tile").wait_for(timeout=60_000)
    page.wait_for_url("**tiles=*10_6*", timeout=30_000)  # the tile under the click
