"""Report & export: a one-page land-cover report of the analysed region, and its files.

The page reads widgets, asks ``app/report_view.py`` for the report and the exports (built by
``backend.outputs.report``, cached per input) and shows the report with download buttons. A region
that
is not analysed yet can be analysed here (the Explore page's analysis) or on Explore.
"""

from __future__ import annotations

import streamlit as st

from app import resources
from app.analysis import analyse
from app.errors import show_error, user_errors
from app.report_view import CLASSES_KEY, download_row, labelled_classes, landcover, report_files
from app.state import (
    Selection,
    get_analysis,
    get_selection,
    region_on,
    set_analysis,
    set_region,
)
from app.url_state import take_pending_url, write_url
from backend.service import (
    Region,
    SceneSource,
    SoftMapError,
    get_model_meta,
)

PAGE = "report"


def apply_link() -> bool:
    """Region from a link on the session's first run; True when the link says it was analysed."""
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
    return url.analysed and region is not None


def offer_analysis(region: Region | None, source: SceneSource, selection: Selection) -> None:
    """Say the region is not analysed, and offer to analyse it here or on Explore."""
    meta = get_model_meta(selection.model_id)
    if region is None:
        st.info("No region chosen yet: choose one on Explore and analyse it.", icon="🗺️")
    else:
        st.info(
            f"This region ({region.describe()}) is not analysed with {meta.title} yet: analyse "
            "it to map its land cover and write the report.",
            icon=":material/info:",
        )
        if st.button(
            "Analyse this region",
            type="primary",
            key="report.analyse",
            icon=":material/play_arrow:",
        ):
            run_analysis(region, source, selection)
    st.page_link("../pages/explore.py", label="Choose or analyse a region on Explore", icon="🗺️")


def run_analysis(region: Region, source: SceneSource, selection: Selection) -> None:
    with user_errors():
        set_analysis(analyse(region, source, selection.model_id))
        st.rerun()


def page() -> None:
    selection = get_selection()
    if selection is None:
        st.stop()
    source = resources.catalog().get(selection.source_id)
    analyse_link = apply_link()
    st.header("Report & export", anchor=False)
    region = region_on(source.footprint_lonlat)
    analysis = get_analysis()
    if analysis is not None and not analysis.matches(selection, region):
        analysis = None
    if analysis is None and analyse_link and region is not None:
        run_analysis(region, source, selection)
    write_url(
        page=PAGE,
        source=selection.source_id,
        model=selection.model_id,
        region=region,
        analysed=analysis is not None,
    )
    if analysis is None:
        offer_analysis(region, source, selection)
        return

    lc = landcover(analysis)
    if lc.error is not None:
        show_error(lc.error)
        return
    result = lc.result
    assert result is not None
    st.caption(
        f"{source.title}, {source.date} · region {region.describe() if region else ''} · "
        f"{len(result.tile_ids)} tiles of {selection.model_id} · head {result.head['head_id']}"
    )
    names: tuple[str, ...] = ()
    with user_errors():
        available = sorted(labelled_classes())
        if available:
            kept = st.session_state.get(f"{CLASSES_KEY}.kept", available)
            picked = st.multiselect(
                "Your classes in the report",
                available,
                default=[n for n in kept if n in available],
                key=CLASSES_KEY,
                help="Classes with positive and negative labels (My classes); each is "
                "retrained on its labels for this region.",
            )
            st.session_state[f"{CLASSES_KEY}.kept"] = picked
            names = tuple(picked)
    with user_errors():
        files = report_files(result, analysis.region_wkt, names)
        st.subheader("Downloads", anchor=False)
        download_row(files)
        st.caption(
            "The report is one HTML file that opens offline (images and styles inside). Tiles "
            "carry the nine class probabilities, dominant class, confidence and entropy; the "
            "COG has those as bands on the scene grid; embeddings come with tile geometry."
        )
        st.subheader("Preview", anchor=False)
        st.iframe(files[0].data.decode("utf-8"), height="content")


page()
