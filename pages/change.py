"""Change: two dates of one place, the per-tile change score, the most-changed tiles, the files.

The scene in the sidebar is the *before* date; *after* is any other source (bundled, registered,
from STAC) that overlaps it. **Compare** embeds what the cache lacks for both dates over the
region and ranks every matched tile by the cosine distance of its embeddings
(``backend.service``, as ``softmap change`` does). With one date only, the page says how to add
a second one.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import resources
from app.change_view import (
    COMPOSITES,
    VIEWS,
    Composite,
    build_change_map,
    change_request,
    describe_pairs,
    downloads,
    kept_result,
    ranked_list,
    run_comparison,
    second_date_help,
    show_change_map,
    source_label,
)
from app.errors import show_error, user_errors
from app.state import get_selection, keep, kept, region_on, set_region
from app.url_state import take_pending_url, write_params, write_url
from backend.service import (
    ChangeMap,
    Region,
    SceneSource,
    SoftMapError,
    parse_bbox,
)

PAGE = "change"
AFTER_KEY = "change.after"
BBOX_KEY = "change.bbox"
K_KEY = "change.k"
VIEW_KEY = "change.view"
IMAGERY_KEY = "change.imagery"
SCORE_ON_SWIPE_KEY = "change.score_on_swipe"
DEFAULT_K = 10


def apply_link() -> bool:
    """Region and the after date from a link, once per session; True to compare at once."""
    url = take_pending_url()
    if url is None:
        return False
    try:
        region = url.region()
    except SoftMapError as e:
        show_error(e)
        return False
    if region is not None:
        set_region(region)
    after = url.extra.get("after")
    if after:
        st.session_state[AFTER_KEY] = after[0]
    return url.analysed and region is not None


def default_region(before: SceneSource, after: SceneSource) -> Region:
    """About 3.5 km × 3.3 km at the centre of the two footprints' overlap."""
    c = before.footprint_lonlat.intersection(after.footprint_lonlat).centroid
    return parse_bbox(f"{c.x - 0.02:.5f},{c.y - 0.015:.5f},{c.x + 0.02:.5f},{c.y + 0.015:.5f}")


def bbox_text(region: Region) -> str:
    return ",".join(f"{v:.5f}" for v in region.bounds)


def on_bbox_change() -> None:
    try:
        set_region(parse_bbox(st.session_state[BBOX_KEY]))
        st.session_state.pop("change.bbox_error", None)
    except SoftMapError as e:
        st.session_state["change.bbox_error"] = e


def choose_after(before: SceneSource, afters: list[SceneSource]) -> SceneSource:
    ids = [s.id for s in afters]
    by_id = {s.id: s for s in afters}
    if st.session_state.get(AFTER_KEY) not in ids:
        later = [s.id for s in afters if s.date > before.date]
        st.session_state[AFTER_KEY] = st.session_state.get(
            f"{AFTER_KEY}.kept", later[0] if later else ids[0]
        )
        if st.session_state[AFTER_KEY] not in ids:
            st.session_state[AFTER_KEY] = later[0] if later else ids[0]
    after_id = st.selectbox(
        "After (another source over the same place)",
        ids,
        format_func=lambda i: source_label(by_id[i]),
        key=AFTER_KEY,
    )
    keep(AFTER_KEY, after_id)
    return by_id[after_id]


def region_input(region: Region) -> None:
    if st.session_state.get("change.bbox_of") != region.geometry.wkt:
        st.session_state[BBOX_KEY] = bbox_text(region)
        st.session_state["change.bbox_of"] = region.geometry.wkt
    st.text_input(
        "Region as W,S,E,N (lon/lat); the region chosen on Explore is used when it overlaps",
        key=BBOX_KEY,
        on_change=on_bbox_change,
    )
    error = st.session_state.get("change.bbox_error")
    if isinstance(error, SoftMapError):
        show_error(error)


def summary(change: ChangeMap) -> None:
    d = np.array([t.distance for t in change.tiles], dtype=np.float64)
    cols = st.columns(4)
    cols[0].metric("Tile pairs", f"{len(change.tiles)}")
    cols[1].metric("Median change", f"{np.median(d):.4f}")
    cols[2].metric("Largest change", f"{d.max():.4f}")
    cols[3].metric("Compared area", f"{change.region.area_km2:,.1f} km²")
    st.caption(f"{describe_pairs(change)} · with {change.result.model}.")


def map_controls(change: ChangeMap | None) -> tuple[str, Composite, bool]:
    """View, imagery and "score on the swipe": (view, composite, score_on_swipe)."""
    controls = st.columns([2, 2, 2])
    kept(VIEW_KEY, VIEWS[0])
    view = (
        controls[0].segmented_control(
            "Map",
            VIEWS,
            key=VIEW_KEY,
            disabled=change is None,
            help="The change score needs a comparison: press Compare.",
        )
        or VIEWS[0]
    )
    keep(VIEW_KEY, view)
    kept(IMAGERY_KEY, "True colour")
    imagery = controls[1].segmented_control("Imagery", list(COMPOSITES), key=IMAGERY_KEY)
    keep(IMAGERY_KEY, imagery)
    composite = COMPOSITES.get(imagery or "True colour", "true")
    score_on_swipe = controls[2].toggle(
        "Change score on the swipe",
        key=SCORE_ON_SWIPE_KEY,
        disabled=view != VIEWS[1] or change is None,
        help="Draw the change score over both dates in the swipe view.",
    )
    return (view if change is not None else VIEWS[1]), composite, bool(score_on_swipe)


def dates_map(
    before: SceneSource, after: SceneSource, region: Region, change: ChangeMap | None, k: int
) -> Composite:
    """The map of the two dates (the swipe, or the change score once compared); its composite."""
    view, composite, score_on_swipe = map_controls(change)
    with user_errors():
        m = build_change_map(
            before, after, region, change, view, composite, k, score_on_swipe=score_on_swipe
        )
        show_change_map(m, key="change.map.swipe" if view == VIEWS[1] else "change.map.score")
    if view == VIEWS[1]:
        st.caption(
            f"Drag the handle: left of it {before.id} ({before.date}), right of it "
            f"{after.id} ({after.date})."
        )
    return composite


def results(change: ChangeMap, k: int, composite: Composite) -> None:
    st.subheader(f"The {min(k, len(change.tiles))} most-changed tiles", anchor=False)
    ranked_list(change, k, composite)
    st.subheader("Files", anchor=False)
    downloads(change)


def page() -> None:
    selection = get_selection()
    if selection is None:
        st.stop()
    ops = resources.operations()
    st.header("Change between two dates", anchor=False)
    compare_link = apply_link()
    try:
        before = ops.catalog().get(selection.source_id)
        afters = ops.overlapping_sources(before.id)
    except SoftMapError as e:
        show_error(e)
        return
    region = region_on(before.footprint_lonlat)
    if not afters:
        st.caption(f"Before: {source_label(before)}")
        second_date_help(before, region)
        write_url(page=PAGE, source=before.id, model=selection.model_id, region=region)
        write_params({"after": None})
        return

    st.caption(
        f"Before: {source_label(before)} (the scene in the sidebar). The change of a tile is the "
        "cosine distance between its embeddings on the two dates: 0 where nothing changed."
    )
    after = choose_after(before, afters)
    if after.date < before.date:
        st.caption(
            f"{after.id} ({after.date}) is older than {before.id}: the scores do not depend on "
            "the order, only the labels do."
        )
    if region is None:
        region = default_region(before, after)
        set_region(region)
    region_input(region)
    overlap = before.footprint_lonlat.intersection(after.footprint_lonlat)
    if not region.geometry.intersects(overlap):
        w, s, e, n = overlap.bounds
        st.warning(
            f"**Outside the overlap** — the region lies outside where both dates have pixels "
            f"({w:.4f},{s:.4f},{e:.4f},{n:.4f}): type one inside it, or choose one on Explore.",
            icon=":material/crop_free:",
        )
        if st.button("Use the centre of the overlap", key="change.use_overlap"):
            set_region(default_region(before, after))
            st.rerun()
    cols = st.columns([3, 1])
    kept(K_KEY, DEFAULT_K)
    k = int(cols[0].slider("Most-changed tiles to list", 3, 50, key=K_KEY))
    keep(K_KEY, k)
    go = cols[1].button("Compare", type="primary", key="change.compare")

    req = change_request(before, after, region, selection.model_id, k)
    change = kept_result(req)
    if go or (compare_link and change is None):
        with user_errors():
            change = run_comparison(req)
    if change is not None:
        summary(change)
    else:
        st.info(
            f"Press **Compare** to embed what the cache lacks for both dates over "
            f"{region.describe()} with {selection.model_id} and rank the tiles by change.",
            icon=":material/compare_arrows:",
        )
    composite = dates_map(before, after, region, change, k)
    if change is not None:
        results(change, k, composite)
    write_url(
        page=PAGE,
        source=before.id,
        model=selection.model_id,
        region=region,
        analysed=change is not None,
    )
    write_params({"after": after.id})


page()
