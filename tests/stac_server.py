"""A tiny STAC API on loopback for tests: landing page, conformance, /search and ranged files.

Python's ``http.server`` ignores ``Range``, which GDAL's ``/vsicurl/`` needs, so files are served
by a handler that answers ``206 Partial Content`` and counts the bytes it sends per file. The
search filters the static items by collection, bbox, datetime and ``eo:cloud_cover`` (query
extension), enough for pystac-client to run the same code path as against a public API.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "http://www.opengis.net/spec/ogcapi-features-1/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/conf/geojson",
]

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class StacTestServer:
    """Serves ``items`` (STAC item dicts) and the files under ``data_dir`` at ``/data/<name>``."""

    data_dir: Path
    items: list[dict[str, Any]] = field(default_factory=list)
    bytes_served: dict[str, int] = field(default_factory=dict)
    range_requests: int = 0
    full_requests: int = 0
    searches: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def data_url(self, name: str) -> str:
        return f"{self.url}/data/{name}"

    def start(self) -> StacTestServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def reset_counts(self) -> None:
        self.bytes_served.clear()
        self.range_requests = self.full_requests = 0

    # --- API ------------------------------------------------------------------------------
    def landing(self) -> dict[str, Any]:
        link = lambda rel, href, **kw: {"rel": rel, "href": self.url + href, **kw}  # noqa: E731
        return {
            "type": "Catalog",
            "id": "softmap-test",
            "stac_version": "1.0.0",
            "description": "Loopback STAC API made from the bundled scenes",
            "conformsTo": CONFORMANCE,
            "links": [
                link("self", "/", type="application/json"),
                link("root", "/", type="application/json"),
                link("conformance", "/conformance", type="application/json"),
                link("search", "/search", type="application/geo+json", method="GET"),
                link("search", "/search", type="application/geo+json", method="POST"),
            ],
        }

    def search(self, params: dict[str, Any]) -> dict[str, Any]:
        self.searches.append(params)
        found = [i for i in self.items if _matches(i, params)]
        limit = int(params.get("limit") or len(found) or 1)
        return {"type": "FeatureCollection", "features": found[:limit], "links": []}


def _parse_dt(text: str) -> datetime | None:
    if text in ("", ".."):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _matches(item: dict[str, Any], params: dict[str, Any]) -> bool:
    collections = params.get("collections")
    if isinstance(collections, str):
        collections = collections.split(",")
    if collections and item.get("collection") not in collections:
        return False
    bbox = params.get("bbox")
    if isinstance(bbox, str):
        bbox = [float(v) for v in bbox.split(",")]
    if bbox:
        w, s, e, n = item["bbox"]
        if bbox[0] > e or bbox[2] < w or bbox[1] > n or bbox[3] < s:
            return False
    when = params.get("datetime")
    if when:
        t = _parse_dt(item["properties"]["datetime"])
        assert t is not None
        start, _, end = str(when).partition("/")
        lo, hi = _parse_dt(start), _parse_dt(end or start)
        if lo is not None and lo.tzinfo is None:
            lo = lo.replace(tzinfo=t.tzinfo)
        if hi is not None and hi.tzinfo is None:
            hi = hi.replace(tzinfo=t.tzinfo)
        if (lo and t < lo) or (hi and t > hi):
            return False
    query = params.get("query")
    if isinstance(query, str):
        query = json.loads(query)
    for prop, ops in (query or {}).items():
        value = item["properties"].get(prop)
        for op, ref in ops.items():
            ok = {"lt": value < ref, "lte": value <= ref, "gt": value > ref, "gte": value >= ref,
                  "eq": value == ref}[op]  # fmt: skip
            if not ok:
                return False
    return True


def _handler(server: StacTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, obj: object, status: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._file(head=True)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path in ("", "/"):
                self._json(server.landing())
            elif url.path == "/conformance":
                self._json({"conformsTo": CONFORMANCE})
            elif url.path == "/search":
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._json(server.search(params))
            elif url.path.startswith("/data/"):
                self._file(head=False)
            else:
                self._json({"code": "NotFound", "description": url.path}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            params = json.loads(self.rfile.read(length) or b"{}")
            if urlparse(self.path).path == "/search":
                self._json(server.search(params))
            else:
                self._json({"code": "NotFound"}, 404)

        def _file(self, *, head: bool) -> None:
            name = urlparse(self.path).path.removeprefix("/data/")
            path = server.data_dir / name
            if "/" in name or not path.is_file():
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = path.read_bytes()
            size = len(data)
            m = _RANGE.match(self.headers.get("Range", ""))
            if m:
                start = int(m.group(1))
                end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                if start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start : end + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                if not head:
                    server.range_requests += 1
            else:
                body = data
                self.send_response(200)
                if not head:
                    server.full_requests += 1
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "image/tiff")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
                server.bytes_served[name] = server.bytes_served.get(name, 0) + len(body)

    return Handler
