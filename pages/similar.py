"""Similar places: find tiles like a clicked tile, a point, or positive and negative examples.

The page reads widgets, calls the search (``app/search_view.py``, cached per input) and renders
the ranked results on the map and in a gallery; a selected result shows where inside it the
match is (patch-token heatmap). Query, options and selection live in the URL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st
from shapely.geometry import Point, shape
from shapely.ops import unary_union

from app import resources
from app.analysis import analyse
from app.errors import show_error, user_errors
from app.gallery import GalleryItem, gallery, short_id
from app.map_view import (
    LayerBuilder,
    MapView,
    imagery_control,
    seed_imagery,
    tiles_map,
    view_token,
)
from app.search_view import (
    Query,
    ScopeKind,
    SearchInputs,
    blended_thumbnail,
    cached_tiles_layer,
    get_query,
    heatmap,
    heatmap_layer,
    legend_html,
    model_version,
    query_layer,
    region_tiles,
    response_summary,
    results_layer,
    run_search,
    score_range,
    set_query,
    tile_records,
    tile_under,
)
from app.state import (
    Selection,
    get_analysis,
    get_selected_tiles,
    get_selection,
    keep,
    kept,
    region_on,
    set_analysis,
    set_region,
)
from app.url_state import UrlState, take_pending_url, write_params, write_url
from backend.service import (
    InvalidRegionError,
    MatchHeatmap,
    Region,
    SceneSource,
    SearchResponse,
    SoftMapError,
    get_model_meta,
)

PAGE = "similar"
SCOPES: dict[str, ScopeKind] = {
    "This region": "region",
    "This scene": "source",
    "Everything cached": "all",
}
CLICK_MODES = ("Query this tile", "Add positive", "Add negative", "Select a result")
DEFAULT_K = 10
#: Results scoring below it are dropped: 0 keeps only tiles at least as like the query as not;
#: -1 (cosine's floor) is no minimum.
DEFAULT_THRESHOLD = 0.0
MAX_K = 50
_POINT_ERROR = "similar.point_error"
_NOTICE = "similar.notice"


# --- the link ---------------------------------------------------------------------------------
def parse_point(text: str) -> tuple[float, float]:
    """``lon,lat`` → (lon, lat).

    Raises:
        InvalidRegionError: not two numbers, or outside -180…180 / -90…90.
    """
    try:
        lon, lat = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise InvalidRegionError(
            f"{text!r} is not a point: type longitude,latitude, e.g. -75.645,37.655.",
            title="Invalid point",
        ) from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InvalidRegionError(
            f"{lon},{lat} is off the globe: longitude first (-180…180), then latitude (-90…90).",
            title="Invalid point",
        )
    return lon, lat


def apply_link(url: UrlState) -> None:
    """Region, query, options and selection from a link (first run of a session)."""
    try:
        region = url.region()
    except SoftMapError as e:
        show_error(e)
        region = None
    if region is not None:
        set_region(region)
    extra = url.extra

    def first(key: str) -> str | None:
        values = extra.get(key, ())
        return values[0] if values else None

    point = None
    if first("pt"):
        try:
            point = parse_point(first("pt") or "")
        except SoftMapError as e:
            show_error(e)
    set_query(
        Query(
            positives=tuple(t for t in extra.get("q", ()) if t),
            negatives=tuple(t for t in extra.get("neg", ()) if t),
            point=point,
            selected=first("sel"),
        )
    )
    if (k := first("k")) and k.isdigit() and 1 <= int(k) <= MAX_K:
        st.session_state["similar.k.kept"] = int(k)
    try:
        thr = float(first("thr") or "")
        st.session_state["similar.threshold.kept"] = min(max(thr, -1.0), 1.0)
    except ValueError:
        pass
    if point is not None:  # the typed point shows in its box again
        st.session_state["similar.point_text"] = f"{point[0]:.5f},{point[1]:.5f}"
    seed_imagery(PAGE, extra)
    scope = first("scope")
    label = next((lbl for lbl, kind in SCOPES.items() if kind == scope), None)
    if label is not None:
        st.session_state["similar.scope.kept"] = label
    if first("sup") == "0":
        st.session_state["similar.suppress.kept"] = False


def link_params(query: Query, inputs: SearchInputs, default_scope: ScopeKind) -> dict[str, Any]:
    return {
        "q": list(query.positives),
        "neg": list(query.negatives),
        "pt": f"{query.point[0]:.5f},{query.point[1]:.5f}" if query.point else None,
        "k": str(inputs.k) if inputs.k != DEFAULT_K else None,
        "thr": (
            None
            if inputs.threshold == DEFAULT_THRESHOLD
            else f"{-1.0 if inputs.threshold is None else inputs.threshold:.2f}"
        ),
        "scope": inputs.scope if inputs.scope != default_scope else None,
        "sup": None if inputs.suppress else "0",
        "sel": query.selected,
    }


# --- callbacks (run before the script, so the whole page sees the change) ----------------------
def remove_tile(tile_id: str) -> None:
    q = get_query()
    set_query(
        replace(
            q,
            positives=tuple(t for t in q.positives if t != tile_id),
            negatives=tuple(t for t in q.negatives if t != tile_id),
            selected=None,
        )
    )


def remove_point() -> None:
    set_query(replace(get_query(), point=None, selected=None))


def clear_query() -> None:
    set_query(Query())


def select_result(tile_id: str) -> None:
    set_query(replace(get_query(), selected=tile_id))


def on_point_text() -> None:
    text = str(st.session_state.get("similar.point_text") or "").strip()
    st.session_state.pop(_POINT_ERROR, None)
    if not text:
        return
    try:
        lon, lat = parse_point(text)
        check_order(lon, lat)
        set_query(Query(point=(lon, lat)))
    except SoftMapError as e:
        st.session_state[_POINT_ERROR] = e


def check_order(lon: float, lat: float) -> None:
    """Refuse a point that lies in no scene but would as ``lat,lon`` (typed the other way round).

    Raises:
        InvalidRegionError: naming the point the user probably meant.
    """
    scenes = resources.catalog().list()
    if any(s.footprint_lonlat.covers(Point(lon, lat)) for s in scenes):
        return
    swapped = next((s for s in scenes if s.footprint_lonlat.covers(Point(lat, lon))), None)
    if swapped is not None and -90 <= lon <= 90:
        raise InvalidRegionError(
            f"{lon:g},{lat:g} lies in no scene, but {lat:g},{lon:g} is in {swapped.title}: "
            "type longitude first, then latitude (lon,lat).",
            title="Longitude first",
        )


# --- the page ---------------------------------------------------------------------------------
def offer_analysis(region: Region | None, source: SceneSource, selection: Selection) -> None:
    """Analyse (embed) the region here, with the Explore page's progress bar."""
    if region is None:
        st.page_link(
            "../pages/explore.py", label="Choose and analyse a region on Explore", icon="🗺️"
        )
        return
    if st.button(
        f"Analyse this region ({region.describe()})",
        type="primary",
        key="similar.analyse",
        icon=":material/play_arrow:",
    ):
        with user_errors():
            set_analysis(analyse(region, source, selection.model_id))
            st.rerun()


def chips(query: Query, response: SearchResponse | None) -> None:
    """The query as removable chips: positives, the point (and its tile), negatives."""
    row = st.container(horizontal=True, vertical_alignment="center")
    if not query.positives and query.point is None and not query.negatives:
        row.caption(
            "No query yet: click a tile on the map, type a point, or add positive examples."
        )
        return
    row.markdown("**Query**")
    for t in query.positives:
        row.button(
            short_id(t), key=f"similar.rm.{t}", icon=":material/add_circle:",
            help=f"{t} — click to remove", on_click=remove_tile, args=(t,),
        )  # fmt: skip
    if query.point is not None:
        point_tile = ""
        if response is not None:
            extra = [t for t in response.query_tile_ids if t not in query.positives]
            point_tile = f" → {short_id(extra[0])}" if extra else ""
        row.button(
            f"{query.point[0]:.4f}, {query.point[1]:.4f}{point_tile}",
            key="similar.rm.point",
            icon=":material/location_on:",
            help="The tile under this point — click to remove",
            on_click=remove_point,
        )
    if query.negatives:
        row.markdown("**but not like**")
    for t in query.negatives:
        row.button(
            short_id(t), key=f"similar.rm.{t}", icon=":material/do_not_disturb_on:",
            help=f"{t} (negative) — click to remove", on_click=remove_tile, args=(t,),
        )  # fmt: skip
    row.button("Clear", key="similar.clear", icon=":material/close:", on_click=clear_query,
               type="tertiary")  # fmt: skip


def handle_click(lon: float, lat: float, mode: str, model_id: str, response: Any) -> None:
    """A map click: set the query, add an example, or select a result."""
    q = get_query()
    if mode == CLICK_MODES[3]:
        if response is not None:
            p = Point(lon, lat)
            hit = next((r for r in response.results if shape(r.footprint).covers(p)), None)
            if hit is not None:
                set_query(replace(q, selected=hit.tile_id))
                st.rerun()
        st.session_state[_NOTICE] = "No result there: click inside a numbered footprint."
        st.rerun()
    with user_errors():
        tile = tile_under(model_id, lon, lat)
        if tile is None:
            st.session_state[_NOTICE] = (
                f"No {model_id} tile is cached at {lon:.5f}, {lat:.5f}: analyse a region "
                "around it first (Explore, or the button here when the region is not analysed)."
            )
        elif mode == CLICK_MODES[0]:
            set_query(Query(positives=(tile,)))
        elif mode == CLICK_MODES[1] and tile not in q.positives:
            set_query(replace(q, positives=(*q.positives, tile),
                              negatives=tuple(t for t in q.negatives if t != tile)))  # fmt: skip
        elif mode == CLICK_MODES[2] and tile not in q.negatives:
            set_query(replace(q, negatives=(*q.negatives, tile),
                              positives=tuple(t for t in q.positives if t != tile)))  # fmt: skip
        st.rerun()


def result_panel(response: SearchResponse, selected: str, hm: MatchHeatmap | None) -> None:
    """The selected result: its thumbnail beside the heatmap of where it matches the query."""
    result = next(r for r in response.results if r.tile_id == selected)
    st.subheader(f"#{result.rank} · {short_id(result.tile_id)}", anchor=False)
    st.caption(
        f"`{result.tile_id}` · score **{result.score:.4f}** · centre {result.lat:.5f}, "
        f"{result.lon:.5f}"
    )
    left, right = st.columns(2)
    with user_errors():
        left.image(
            resources.thumbnail(result.source_id, result.tile_id, "true", 224),
            caption="True colour",
            width="stretch",
        )
        if hm is not None:
            right.image(
                blended_thumbnail(result.source_id, result.tile_id, hm.scores),
                caption="Where it matches (bright: patches closest to the query)",
                width="stretch",
            )
    if hm is not None:
        g = hm.scores.shape[0]
        st.caption(
            f"{g} × {g} patches; cosine {float(hm.scores.min()):.3f} to {hm.best_score:.3f}, "
            f"best at row {hm.best_row + 1}, column {hm.best_col + 1} (from the top left). "
            "The map shows the same heatmap over the tile."
        )
    else:
        right.info("This model has no patch tokens (a CNN): no heatmap.", icon=":material/info:")


def fit_view(region: Region | None, response: SearchResponse | None) -> MapView:
    """Open the map on the region and the results; fit again whenever the results change.

    A view the user moved to is kept while the region and the results stay the same (a new
    negative that brings results from elsewhere in the scene refits, issue 12).
    """
    shapes = [region.geometry] if region is not None else []
    results = response.results if response is not None else ()
    shapes += [shape(r.footprint) for r in results]
    token = view_token(region.geometry.wkt if region else None, [r.tile_id for r in results])
    if not shapes:
        return MapView(None, token)
    w, s, e, n = unary_union(shapes).bounds
    return MapView((w, s, e, n), token, padding=30)


def page() -> None:
    selection = get_selection()
    if selection is None:
        st.stop()
    source = resources.catalog().get(selection.source_id)
    meta = get_model_meta(selection.model_id)
    url = take_pending_url()
    if url is not None:
        apply_link(url)
    region = region_on(source.footprint_lonlat)
    db = str(resources.db_path())

    st.header("Similar places", anchor=False)
    st.caption(
        f"Tiles of {source.title} and everything else cached for **{meta.title}** ranked by "
        "cosine similarity of their embeddings to the query."
    )
    try:
        version = model_version(selection.model_id)
    except SoftMapError as e:
        show_error(e)
        return
    analysis = get_analysis()
    analysed = analysis is not None and analysis.matches(selection, region)
    write_url(
        page=PAGE,
        source=selection.source_id,
        model=selection.model_id,
        region=region,
        tiles=get_selected_tiles(),
        analysed=analysed,
    )
    if not version:
        st.info(
            f"Nothing is cached for {meta.title} yet: similar places are searched among embedded "
            "tiles. Analyse a region first.",
            icon=":material/database:",
        )
        offer_analysis(region, source, selection)
        return
    records = (
        region_tiles(db, selection.model_id, source.id, region.geometry.wkt, version)
        if region is not None
        else []
    )
    if region is not None and not records:
        st.info(
            f"This region has no {meta.title} tiles yet; the search covers what is cached "
            "elsewhere. Analyse it to search here too.",
            icon=":material/info:",
        )
        offer_analysis(region, source, selection)

    default_scope: ScopeKind = "region" if region is not None and records else "source"
    top = st.columns([3, 2])
    kept("similar.click_mode", CLICK_MODES[0])
    click_mode = top[0].segmented_control(
        "A click on the map", CLICK_MODES, key="similar.click_mode", required=True
    )
    keep("similar.click_mode", click_mode)
    imagery, imagery_param = imagery_control(PAGE, top[1])

    opts = st.columns([3, 2, 2, 2])
    opts[0].text_input(
        "…or query a point (lon,lat)",
        key="similar.point_text",
        on_change=on_point_text,
        placeholder="-75.645,37.655",
    )
    kept("similar.k", DEFAULT_K)
    k = keep("similar.k", opts[1].slider("Results (k)", 1, MAX_K, key="similar.k"))
    kept("similar.threshold", DEFAULT_THRESHOLD)
    threshold = keep(
        "similar.threshold",
        opts[2].slider(
            "Minimum score", -1.0, 1.0, step=0.01, key="similar.threshold",
            help="Results scoring below it are left out: cosine similarity (or the probability "
            "with ≥ 5 positives and negatives). 0 drops tiles less like the query than unlike "
            "it; -1 is no minimum.",
        ),
    )  # fmt: skip
    kept("similar.suppress", True)
    suppress = keep(
        "similar.suppress",
        opts[3].toggle(
            "Spread out", key="similar.suppress",
            help="Suppress touching results: keep a result only if its footprint does not "
            "touch a better one's, so one big field does not fill the list.",
        ),
    )  # fmt: skip
    kept("similar.scope", next(lbl for lbl, kind in SCOPES.items() if kind == default_scope))
    scope_label = keep(
        "similar.scope",
        st.radio("Search in", list(SCOPES), key="similar.scope", horizontal=True),
    )
    error = st.session_state.get(_POINT_ERROR)
    if isinstance(error, SoftMapError):
        show_error(error)
    scope: ScopeKind = SCOPES.get(str(scope_label), default_scope)
    if scope == "region" and region is None:
        st.caption("No region chosen (Explore): searching this scene instead.")
        scope = "source"

    query = get_query()
    inputs = SearchInputs(
        positives=query.positives,
        negatives=query.negatives,
        point=query.point,
        k=int(k),
        threshold=float(threshold) if float(threshold) > -1.0 else None,
        suppress=bool(suppress),
        scope=scope,
        source_id=source.id,
        region_wkt=region.geometry.wkt if region is not None else None,
    )
    response: SearchResponse | None = None
    if inputs.has_query:
        with user_errors():
            response = run_search(db, selection.model_id, inputs, version)
    chips(query, response)
    notice = st.session_state.pop(_NOTICE, None)
    if notice:
        st.warning(notice, icon=":material/ads_click:")

    results = response.results if response is not None else ()
    ids = [r.tile_id for r in results]
    selected = query.selected if query.selected in ids else (ids[0] if ids else None)
    hm: MatchHeatmap | None = None
    with_tokens = meta.patch_size is not None
    if with_tokens and selected and response is not None and response.query is not None:
        with user_errors():
            hm = heatmap(
                db, selection.model_id, response.preprocessing_hash, selected, response.query.vector
            )

    # Once results are on the map the cached tiles' outlines only hide them: off unless asked for.
    show_grid = response is None or st.toggle(
        "Tile grid", key="similar.grid", help="Outline every cached tile of this model (thin)."
    )
    layers: list[LayerBuilder] = [cached_tiles_layer(records)] if show_grid else []
    if response is not None:
        if hm is not None:
            layers.append(heatmap_layer(hm))
        layers += [
            results_layer(results, selected),
            query_layer(
                tile_records(db, response.query_tile_ids),
                tile_records(db, response.negative_tile_ids),
            ),
        ]
    left, right = st.columns([3, 2])
    with left:
        # What the layers draw: the heatmap follows from the response and the selected result.
        drawn = (show_grid, [r["tile_id"] for r in records], repr(response), selected, hm is None)
        events = tiles_map(
            PAGE, source, region, imagery, layers, fit_view(region, response), layers_key=drawn
        )
    with right:
        if response is None:
            st.markdown(
                "**How to search** — pick *Query this tile* and click a tile on the map (white "
                "outlines: cached tiles of this model), or type a point. Then add positive and "
                "negative examples to steer it; results appear here and on the map."
            )
        elif not results:
            st.warning(
                "No results: lower the minimum score or widen the scope.",
                icon=":material/search_off:",
            )
        else:
            st.caption(response_summary(response))
            st.markdown(legend_html(*score_range(results)), unsafe_allow_html=True)
            if selected is not None:
                result_panel(response, selected, hm)
    if events.clicked is not None:
        handle_click(*events.clicked, click_mode or CLICK_MODES[0], selection.model_id, response)
    if results:
        items = [GalleryItem(r.tile_id, r.source_id, r.rank, r.score) for r in results]
        gallery(items, selected=selected, on_select=select_result, key="similar.pick", columns=5)
    write_params({**link_params(query, inputs, default_scope), "img": imagery_param})


page()
