"""The Change page's pieces: the comparison with progress, its maps, the ranked list, the files.

Everything computed comes from ``backend.service`` (:func:`~backend.service.change.compare_dates`
embeds what the cache lacks for both dates and ranks every matched tile). This module turns a
:class:`~backend.service.change.ChangeMap` into a leafmap map — the change score per tile with a
legend, or a swipe between the two dates — a ranked list with before/after thumbnails, and
download buttons for the map (COG) and the list (GeoJSON, CSV).
"""

from __future__ import annotations

import hashlib
import html
import json
import tempfile
from pathlib import Path
from typing import Any

import folium
import streamlit as st
from streamlit_folium import st_folium

from app import resources
from app.analysis import progress_text
from app.offline_map import add_legend, base_map, image_overlay, ramp_legend, split_view
from backend.imagery.preview import Composite
from backend.service import (
    ChangeMap,
    ChangeRequest,
    EngineOptions,
    Progress,
    ProgressCallback,
    Region,
    RegionSpec,
    SceneSource,
    SoftMapError,
)

RESULT_KEY = "change.result"
#: Yellow → orange → dark red (ColorBrewer YlOrRd): little change pale, most change dark.
RAMP = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
REGION_STYLE = {"color": "#2f6fb0", "weight": 2, "fillOpacity": 0.0, "dashArray": "6 4"}
VIEWS = ("Change score", "Swipe before / after")
COMPOSITES: dict[str, Composite] = {"True colour": "true", "False colour (NIR)": "false"}


# --- the comparison ------------------------------------------------------------------------------
def result_key(req: ChangeRequest) -> str:
    """What identifies a comparison: both sources, the model and the region (k only lists)."""
    return req.model_dump_json(exclude={"k"})


def change_request(
    before: SceneSource, after: SceneSource, region: Region, model_id: str, k: int
) -> ChangeRequest:
    return ChangeRequest(
        before=before.id,
        after=after.id,
        region=RegionSpec.of(region),
        model=model_id,
        engine=EngineOptions(),
        k=k,
    )


def run_comparison(req: ChangeRequest) -> ChangeMap:
    """Compare the two dates with one progress bar per date; keep the result in the session.

    Raises:
        SoftMapError: anything the user can fix (no overlap, region, weights, cache in use…).
    """
    bars: list[Any] = []

    def progress(source: SceneSource) -> ProgressCallback:
        bar = st.progress(0.0, text=f"{source.id} ({source.date}): planning tiles…")
        bars.append(bar)

        def update(p: Progress) -> None:
            done = min(p.done / p.total, 1.0) if p.total else 1.0
            bar.progress(done, text=f"{source.id} ({source.date}): {progress_text(p)}")

        return update

    try:
        change = resources.operations().compare_dates(req, progress=progress)
    finally:
        for bar in bars:
            bar.empty()
    st.session_state[RESULT_KEY] = (result_key(req), change)
    return change


def kept_result(req: ChangeRequest) -> ChangeMap | None:
    """The session's comparison if it is of this request (same sources, model, region, k)."""
    value = st.session_state.get(RESULT_KEY)
    if isinstance(value, tuple) and value[0] == result_key(req):
        change: ChangeMap = value[1]
        return change
    return None


# --- the maps ------------------------------------------------------------------------------------
def score_colour(distance: float, top: float) -> str:
    """The ramp's colour for a distance, scaled to the largest distance of the comparison."""
    t = 0.0 if top <= 0 else min(max(distance / top, 0.0), 1.0)
    return RAMP[min(int(t * len(RAMP)), len(RAMP) - 1)]


def change_geojson(change: ChangeMap, k: int) -> dict[str, Any]:
    """Every matched tile with its score, colour and rank (the top ``k`` flagged)."""
    top = change.max_distance
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": t.footprint,
                "properties": {
                    "rank": t.rank,
                    "tile": t.before_tile,
                    "distance": round(t.distance, 4),
                    "colour": score_colour(t.distance, top),
                    # Unchanged tiles stay almost clear, so the imagery shows through them.
                    "opacity": round(0.12 + 0.68 * (t.distance / top if top > 0 else 0.0), 3),
                    "top": t.rank <= k,
                },
            }
            for t in change.tiles
        ],
    }


def change_legend(change: ChangeMap) -> str:
    top = change.max_distance
    return ramp_legend(
        "Change score",
        list(RAMP),
        ("0 (same)", f"{top:.3g}"),
        "1 − cos of the two dates' embeddings; numbered: most changed",
    )


def add_change_layer(m: folium.Map, change: ChangeMap, k: int, *, show: bool = True) -> None:
    """The per-tile change score as a layer, the most-changed tiles numbered, and the legend."""
    group = folium.FeatureGroup(name="Change score", show=show)

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        p = feature["properties"]
        return {
            "fillColor": p["colour"],
            "fillOpacity": p["opacity"],
            "color": "#1a1a1a" if p["top"] else p["colour"],
            "weight": 2 if p["top"] else 0.4,
            "opacity": 0.9 if p["top"] else 0.5,
        }

    folium.GeoJson(
        change_geojson(change, k),
        name="Change score",
        style_function=style,
        tooltip=folium.GeoJsonTooltip(
            ["rank", "distance", "tile"], aliases=["Rank", "Change score", "Tile"]
        ),
    ).add_to(group)
    for t in change.top(k):
        folium.Marker(
            (t.lat, t.lon),
            icon=folium.DivIcon(
                html=f'<div class="softmap-change-rank">{t.rank}</div>',
                icon_size=(22, 22),
                icon_anchor=(11, 11),
                class_name="softmap-change-rank-icon",
            ),
            tooltip=f"#{t.rank}: {t.distance:.4f}",
        ).add_to(group)
    group.add_to(m)
    add_legend(m, change_legend(change), position="topright")


RANK_CSS = (
    "<style>.softmap-change-rank{width:22px;height:22px;border-radius:11px;background:#1a1a1a;"
    "color:#fff;font:700 12px/22px sans-serif;text-align:center;"
    "box-shadow:0 0 0 2px #fff}</style>"
)


def _overlay(source: SceneSource, composite: Composite, name: str) -> folium.Layer:
    url, bounds = resources.overlay_url(source.id, composite, str(source.root))
    w, s, e, n = bounds
    return image_overlay(url, (w, s, e, n), name=name, class_name="softmap-date")


def build_change_map(
    before: SceneSource,
    after: SceneSource,
    region: Region,
    change: ChangeMap | None,
    view: str,
    composite: Composite,
    k: int,
    *,
    score_on_swipe: bool = False,
) -> folium.Map:
    """The leafmap map of two dates: the change score over the later one, or a swipe.

    Without a comparison yet (``change`` None) it is the swipe of the two dates over the region.
    """
    if change is not None:
        region = change.region
    m = base_map(region.bounds)
    root = m.get_root()
    root.header.add_child(folium.Element(RANK_CSS), name="softmap_rank_css")
    if view == VIEWS[1] or change is None:
        left = _overlay(before, composite, f"Before: {before.id} ({before.date})")
        right = _overlay(after, composite, f"After: {after.id} ({after.date})")
        split_view(
            m,
            [left],
            [right],
            left_label=f"◀ Before · {html.escape(before.date)}",
            right_label=f"After · {html.escape(after.date)} ▶",
        )
        if score_on_swipe and change is not None:
            add_change_layer(m, change, k)
    else:
        _overlay(after, composite, f"After: {after.id} ({after.date})").add_to(m)
        add_change_layer(m, change, k)
    folium.GeoJson(
        region.to_geojson(),
        name="Compared region",
        style_function=lambda _f: REGION_STYLE,
        interactive=False,
    ).add_to(m)
    w, s, e, n = region.bounds
    dx, dy = (e - w) * 0.08, (n - s) * 0.08
    m.fit_bounds([[s - dy, w - dx], [n + dy, e + dx]])
    return m


def show_change_map(m: folium.Map, key: str, height: int = 540) -> None:
    """Render the map; nothing on it feeds a rerun (the page is driven by its widgets)."""
    st_folium(m, key=key, height=height, use_container_width=True, returned_objects=[])


# --- the ranked list -----------------------------------------------------------------------------
def ranked_list(change: ChangeMap, k: int, composite: Composite) -> None:
    """The ``k`` most-changed tiles: rank, score, where, and the tile on both dates."""
    header = st.columns([1, 3, 2, 2])
    header[0].markdown("**#**")
    header[1].markdown("**Tile · change score**")
    header[2].markdown(f"**Before · {change.before.date}**")
    header[3].markdown(f"**After · {change.after.date}**")
    for t in change.top(k):
        cols = st.columns([1, 3, 2, 2], vertical_alignment="center")
        cols[0].markdown(f"### {t.rank}")
        cols[1].markdown(
            f"**{t.distance:.4f}**  \n`{t.before_tile}`  \nlon {t.lon:.5f}, lat {t.lat:.5f}"
        )
        with cols[2]:
            _thumbnail(change.before, t.before_tile, composite)
        with cols[3]:
            _thumbnail(change.after, t.after_tile, composite)


def _thumbnail(source: SceneSource, tile_id: str, composite: Composite) -> None:
    try:
        png = resources.thumbnail(source.id, tile_id, composite, 144)
    except SoftMapError as e:  # one unreadable tile must not hide the list
        st.caption(f"No thumbnail: {e.message}")
        return
    st.image(png, width=144, caption=tile_id.rsplit("/", 1)[-1])


# --- files ---------------------------------------------------------------------------------------
def file_stem(change: ChangeMap) -> str:
    def short(source: SceneSource) -> str:
        return source.id.replace("/", "-")

    return f"change_{short(change.before)}_{short(change.after)}_{change.result.model}"


@st.cache_data(show_spinner=False, max_entries=8)
def _cog_bytes(key: str, _change: ChangeMap) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = _change.write_map(Path(tmp) / "change.tif")
        return path.read_bytes()


def downloads(change: ChangeMap) -> None:
    """Download buttons: the change map (COG) and the ranked list (GeoJSON, CSV)."""
    stem = file_stem(change)
    key = hashlib.sha256((stem + change.region.geometry.wkt).encode()).hexdigest()[:16]
    cols = st.columns(3)
    cols[0].download_button(
        "Change map (COG)",
        _cog_bytes(key + str(len(change.tiles)), change),
        file_name=f"{stem}.tif",
        mime="image/tiff",
        key="change.download_cog",
        icon=":material/map:",
        help="Cosine distance per tile on the before scene's grid, a Cloud-Optimized GeoTIFF.",
    )
    cols[1].download_button(
        "Ranked list (GeoJSON)",
        json.dumps(change.to_geojson()),
        file_name=f"{stem}.geojson",
        mime="application/geo+json",
        key="change.download_geojson",
        icon=":material/data_object:",
        help="Every matched tile, most changed first, with its footprint.",
    )
    cols[2].download_button(
        "Ranked list (CSV)",
        change.to_csv(),
        file_name=f"{stem}.csv",
        mime="text/csv",
        key="change.download_csv",
        icon=":material/table:",
        help="rank, before_tile, after_tile, lon, lat, distance",
    )


# --- one date only -------------------------------------------------------------------------------
def second_date_help(source: SceneSource, region: Region | None) -> None:
    """What to do when no other source overlaps this one: the commands that add a second date."""
    w, s, e, n = region.bounds if region is not None else source.bbox_lonlat
    bbox = f"{w:.4f},{s:.4f},{e:.4f},{n:.4f}"
    st.info(
        f"**Only one date of this place.** No other source overlaps {source.id} "
        f"({source.date}), so there is nothing to compare yet. Add a second acquisition of the "
        "same place, then come back: it appears under *After*. The app holds the cache while it "
        "runs, so stop it first (or give the command another `--db` and start the app on that "
        "file).",
        icon=":material/compare:",
    )
    st.markdown("From a STAC catalogue (Earth Search by default; needs the network):")
    st.code(
        f"softmap stac search --bbox {bbox} --dates 2016-06-01/2016-08-31 --max-cloud 20\n"
        f"softmap stac add --bbox {bbox} --dates 2016-06-01/2016-08-31 --max-cloud 20",
        language="bash",
    )
    st.markdown("From files you have (a `.SAFE` folder, a folder of per-band files, a COG):")
    st.code(
        "softmap sources add /path/to/S2A_MSIL1C_20160612T….SAFE\n"
        "softmap sources add /path/to/scene.tif --bands B01,B02,B03,B04,B05,B06,B07,B08,B8A,"
        "B09,B10,B11,B12 --date 2016-06-12",
        language="bash",
    )
    st.caption(
        "For a try without the network, `python scripts/second_date.py --out data/second-date "
        "--db data/softmap.duckdb` derives a second date of the Virginia demo with a flooded "
        "block (see its docstring)."
    )


def source_label(source: SceneSource) -> str:
    return f"{source.id} · {source.date} · {source.title}"


def describe_pairs(change: ChangeMap) -> str:
    r = change.result
    parts = [f"{len(change.tiles)} tile pairs ({r.matching} matching)"]
    if r.unmatched_before or r.unmatched_after:
        parts.append(f"{r.unmatched_before} before / {r.unmatched_after} after tiles unmatched")
    parts.append(f"{change.computed} embedded now, {change.cached} from the cache")
    return " · ".join(parts)
