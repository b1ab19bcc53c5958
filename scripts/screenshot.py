"""Screenshot the running Streamlit app with headless Chromium and report off-machine requests.

    python scripts/screenshot.py --url http://127.0.0.1:8599/ --out shot.png \
        --wait-for-map --strict-offline

Uses Debian's Chromium (`apt-get install chromium`) through Playwright for Python; no
`playwright install` is needed. Every request to a host other than loopback is recorded and
aborted, so nothing leaves the machine; with `--strict-offline` any such attempt fails the run.
The Leaflet map of streamlit-folium lives inside a component iframe, so `--wait-for-map` looks
for `.leaflet-container` in every frame.

Exit codes: 0 ok, 1 an off-machine request was attempted (with --strict-offline),
2 the page or the map did not appear in time (a screenshot is still written).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import (
    ConsoleMessage,
    Frame,
    Page,
    Request,
    Response,
    Route,
    WebSocket,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}
MAP_SELECTOR = ".leaflet-container"


def is_off_machine(url: str) -> bool:
    """True when `url` would reach a host other than this machine."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES or not parts.hostname:
        return False
    host = parts.hostname
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost
        return True


def find_map_frame(page: Page, deadline: float) -> Frame | None:
    """Poll every frame (the st_folium iframe included) for a rendered Leaflet map."""
    while time.monotonic() < deadline:
        for frame in page.frames:
            try:
                if frame.query_selector(f"{MAP_SELECTOR} .leaflet-map-pane") is not None:
                    return frame
            except PlaywrightError:  # the frame detached: Streamlit reruns replace iframes
                continue
        page.wait_for_timeout(250)
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501/")
    parser.add_argument("--out", type=Path, default=Path("shot.png"))
    parser.add_argument(
        "--wait-for-map",
        action="store_true",
        help="wait for .leaflet-container inside the component iframe",
    )
    parser.add_argument(
        "--strict-offline",
        action="store_true",
        help="exit 1 if any request to a non-loopback host was attempted",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds to wait after the page (and map) appeared (default 2)",
    )
    parser.add_argument(
        "--click", action="append", default=[], help="click the button with this label (repeatable)"
    )
    parser.add_argument(
        "--wait-text", help="after clicking, wait until this text appears on the page"
    )
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--chromium", default=CHROMIUM, help=f"browser binary (default {CHROMIUM})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Take the screenshot; return the exit code."""
    args = parse_args(argv)
    off_machine: list[str] = []
    problems: list[str] = []

    def on_route(route: Route) -> None:
        request = route.request
        if is_off_machine(request.url):
            off_machine.append(f"{request.method} {request.url}")
            route.abort("internetdisconnected")
        else:
            route.continue_()

    def on_request_failed(request: Request) -> None:
        if not is_off_machine(request.url):
            problems.append(f"failed: {request.method} {request.url} ({request.failure})")

    def on_websocket(ws: WebSocket) -> None:
        if is_off_machine(ws.url):  # page.route does not see websockets
            off_machine.append(f"WEBSOCKET {ws.url}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    def watch(page: Page) -> None:
        page.on("requestfailed", on_request_failed)
        page.on("websocket", on_websocket)
        page.on("response", on_response)
        page.on("console", on_console)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    code = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": args.width, "height": args.height})
        context.route("**/*", on_route)
        page = context.new_page()
        watch(page)
        deadline = time.monotonic() + args.timeout
        try:
            page.goto(args.url, wait_until="domcontentloaded", timeout=args.timeout * 1000)
            page.wait_for_selector('[data-testid="stApp"]', timeout=args.timeout * 1000)
            if args.wait_for_map:
                frame = find_map_frame(page, deadline)
                if frame is None:
                    print(
                        f"error: no {MAP_SELECTOR} in any frame after {args.timeout:.0f} s",
                        file=sys.stderr,
                    )
                    code = 2
                else:
                    print(f"map found in frame {frame.url}")
            for label in args.click:
                page.get_by_role("button", name=label).click(timeout=args.timeout * 1000)
                print(f"clicked: {label}")
            if args.wait_text:
                page.get_by_text(args.wait_text).first.wait_for(timeout=args.timeout * 1000)
                print(f"found text: {args.wait_text}")
        except PlaywrightTimeoutError as e:
            print(f"error: page did not load: {e}", file=sys.stderr)
            code = 2
        page.wait_for_timeout(args.settle * 1000)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
        print(f"screenshot: {args.out}")
        browser.close()

    for line in dict.fromkeys(problems):
        print(f"warning: {line}", file=sys.stderr)
    print(f"off-machine requests: {len(off_machine)}")
    for line in dict.fromkeys(off_machine):
        print(f"  {line}")
    if off_machine and args.strict_offline and code == 0:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
