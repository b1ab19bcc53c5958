"""The view in the URL: source, model, page, region and selected tiles live in ``st.query_params``.

A copied link restores the same view. The URL is read once per session (before the widgets are
created, to seed their state) and written after every rerun with what is on screen.

Parameters:
    ``source``  source id, e.g. ``demo/virginia``
    ``model``   model id, e.g. ``test-vit``
    ``page``    the page's url path, e.g. ``explore``
    ``bbox``    a rectangular region as ``W,S,E,N`` (lon/lat, 5 decimals)
    ``aoi``     any other region as compact GeoJSON geometry (coordinates rounded to 5 decimals)
    ``tiles``   selected tile ids (repeated parameter)
    ``analysed`` ``1`` when the region was analysed (reopening the link shows the tiles again)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from shapely.geometry import box, shape

from backend.imagery.regions import Region, parse_bbox, parse_geojson

_READ = "app.url_read"
_PENDING = "app.url_pending"
#: Decimals kept in the URL: 5 decimals of a degree is about 1 m.
DECIMALS = 5
#: At most this many selected tiles go into the URL (a link must stay a link).
MAX_URL_TILES = 200
KEYS = ("page", "source", "model", "bbox", "aoi", "tiles", "analysed")


@dataclass(frozen=True)
class UrlState:
    """What a link says about the view (anything absent is None or empty)."""

    source: str | None = None
    model: str | None = None
    page: str | None = None
    bbox: str | None = None
    aoi: str | None = None
    tiles: tuple[str, ...] = field(default_factory=tuple)
    analysed: bool = False
    #: Every other parameter (a page's own, e.g. the Similar page's ``q``, ``neg``, ``k``).
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def region(self) -> Region | None:
        """The region of the link; raises ``InvalidRegionError`` for a malformed one."""
        if self.aoi:
            return parse_geojson(self.aoi)
        if self.bbox:
            return parse_bbox(self.bbox)
        return None


def read_url() -> UrlState:
    """The state in the current URL."""
    params = st.query_params
    return UrlState(
        source=params.get("source") or None,
        model=params.get("model") or None,
        page=params.get("page") or None,
        bbox=params.get("bbox") or None,
        aoi=params.get("aoi") or None,
        tiles=tuple(t for t in params.get_all("tiles") if t),
        analysed=params.get("analysed") == "1",
        extra={k: tuple(params.get_all(k)) for k in params if k not in KEYS},
    )


def read_url_once() -> UrlState | None:
    """The URL state on a session's first run (to seed widgets); None on later reruns."""
    if st.session_state.get(_READ):
        return None
    st.session_state[_READ] = True
    url = read_url()
    st.session_state[_PENDING] = url
    return url


def take_pending_url() -> UrlState | None:
    """The link's state for the page to apply (region, tiles), once per session."""
    value = st.session_state.pop(_PENDING, None)
    return value if isinstance(value, UrlState) else None


def region_params(region: Region | None) -> dict[str, str | None]:
    """``bbox`` for an axis-aligned rectangle, ``aoi`` (compact GeoJSON) for any other shape."""
    if region is None:
        return {"bbox": None, "aoi": None}
    geom = region.geometry
    if geom.equals(box(*geom.bounds)):
        return {"bbox": ",".join(f"{v:.{DECIMALS}f}" for v in geom.bounds), "aoi": None}
    return {"bbox": None, "aoi": compact_geojson(region.to_geojson())}


def compact_geojson(geometry: dict[str, Any]) -> str:
    """A GeoJSON geometry as short JSON: coordinates rounded, no spaces."""
    return json.dumps(_round(shape(geometry).__geo_interface__), separators=(",", ":"))


def write_url(
    *,
    page: str | None,
    source: str | None,
    model: str | None,
    region: Region | None,
    tiles: Sequence[str] = (),
    analysed: bool = False,
) -> None:
    """Put the view into the URL; only changed parameters are touched (each write is a message)."""
    wanted: dict[str, str | list[str] | None] = {
        "page": page,
        "source": source,
        "model": model,
        **region_params(region),
        "tiles": list(tiles[:MAX_URL_TILES]) or None,
        "analysed": "1" if analysed else None,
    }
    params = st.query_params
    for key, value in wanted.items():
        current: str | list[str] | None
        current = params.get_all(key) or None if key == "tiles" else params.get(key)
        if value == current:
            continue
        if value is None:
            del params[key]
        else:
            params[key] = value


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, DECIMALS)
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


def write_params(values: dict[str, str | list[str] | None]) -> None:
    """Put a page's own parameters into the URL (None removes one); unchanged ones are untouched.

    For keys outside :data:`KEYS` (those are :func:`write_url`'s); a list is a repeated parameter.
    """
    params = st.query_params
    for key, value in values.items():
        current: str | list[str] | None = (
            params.get_all(key) or None if isinstance(value, list) else params.get(key)
        )
        if value == current:
            continue
        if value is None or value == []:
            if key in params:
                del params[key]
        else:
            params[key] = value
