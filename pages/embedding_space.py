"""Embedding space: a 2-D map of the embeddings (PCA at once, UMAP when fitted) linked to the map.

Box or lasso selection in the scatter highlights those tiles on the map beside it; clicking a
tile on the map adds it to (or removes it from) the selection, which the scatter rings. Points
are coloured by predicted land cover, a user class's probability, similarity to a tile, or
source. The selection, scope and colouring live in the URL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import folium
import streamlit as st

from app import resources
from app.errors import show_error, user_errors
from app.gallery import short_id
from app.map_view import (
    LayerBuilder,
    imagery_control,
    records_view,
    seed_imagery,
    tiles_map,
    view_token,
)
from app.projection_view import (
    COLOUR_BY,
    SCOPES,
    Colouring,
    ScopeInputs,
    ScopeKind,
    UmapJob,
    Version,
    cached_scope,
    class_probabilities,
    footprint,
    landcover_classes,
    landcover_colouring,
    map_tiles,
    model_version,
    pca_projection,
    plain,
    point_colours,
    predict_scope_landcover,
    ramp_colouring,
    scatter_figure,
    selected_ids,
    similarities,
    source_colouring,
    tile_at,
    umap_job,
)
from app.state import (
    get_analysis,
    get_selected_tiles,
    get_selection,
    keep,
    kept,
    region_on,
    set_region,
    set_selected_tiles,
)
from app.url_state import UrlState, take_pending_url, write_params, write_url
from backend.service import (
    Projection,
    SceneSource,
    Scope,
    SoftMapError,
    get_model_meta,
    parse_tile_id,
)

PAGE = "embedding"
CHART_KEY = "embedding.chart"
LC_STAMP = "embedding.lc_stamp"
#: Thumbnails shown for the selection (the panel stands in for hover images).
MAX_THUMBS = 8
#: The user class's predictions are re-read when the My classes page trains (it bumps this).
CLASS_STAMP = "app.class_predictions_stamp"


def apply_link(url: UrlState) -> None:
    """Region, selection, scope, colouring and projection from a link (first run)."""
    try:
        region = url.region()
    except SoftMapError as e:
        show_error(e)
        region = None
    if region is not None:
        set_region(region)
    set_selected_tiles(url.tiles)
    extra = url.extra
    scope = (extra.get("scope") or (None,))[0]
    label = next((lbl for lbl, kind in SCOPES.items() if kind == scope), None)
    if label is not None:
        st.session_state["embedding.scope.kept"] = label
    colour = (extra.get("color") or (None,))[0]
    label = next((lbl for lbl, kind in COLOUR_BY.items() if kind == colour), None)
    if label is not None:
        st.session_state["embedding.colour.kept"] = label
    if (extra.get("proj") or (None,))[0] == "pca":
        st.session_state["embedding.method.kept"] = "PCA"
    seed_imagery(PAGE, extra)


# --- callbacks ----------------------------------------------------------------------------------
def clear_selection() -> None:
    set_selected_tiles(())
    st.session_state.pop(f"{CHART_KEY}.seen", None)


def on_chart_select() -> None:
    """A box or lasso selection in the scatter replaces the selection.

    An empty selection is ignored: plotly also reports one when the figure is redrawn (the
    ringed selection changes it), which would undo the selection just made. "Clear selection"
    clears.
    """
    ids = selected_ids(st.session_state.get(CHART_KEY))
    if ids:
        set_selected_tiles(ids)


def toggle_tile(tile_id: str) -> None:
    current = get_selected_tiles()
    if tile_id in current:
        set_selected_tiles(tuple(t for t in current if t != tile_id))
    else:
        set_selected_tiles((*current, tile_id))


# --- pieces -------------------------------------------------------------------------------------
def colouring_for(
    how: str, db: str, inputs: ScopeInputs, version: Version, selected: tuple[str, ...]
) -> Colouring:
    """The chosen colouring, or a plain one with a note saying what is missing."""
    ids = cached_scope(db, inputs, version).tile_ids
    if how == "landcover":
        head_id, dominant = landcover_classes(
            db, inputs.model_id, ids, st.session_state.get(LC_STAMP, 0)
        )
        if all(c < 0 for c in dominant):
            return replace(
                plain(ids, "No land-cover predictions are stored for these tiles yet."),
                incomplete=True,
            )
        return landcover_colouring(dominant, head_id)
    if how == "class":
        names = [c.name for c in resources.operations().list_classes()]
        if not names:
            return plain(ids, "No classes yet: create one on *My classes*.")
        kept("embedding.class", names[0])
        if st.session_state["embedding.class"] not in names:
            st.session_state["embedding.class"] = names[0]
        name = keep("embedding.class", st.selectbox("Class", names, key="embedding.class"))
        probs = class_probabilities(db, name, inputs, version, st.session_state.get(CLASS_STAMP, 0))
        if probs is None:
            return plain(ids, f"'{name}' has no predictions yet: train it on *My classes*.")
        return ramp_colouring(f"P({name})", probs)
    if how == "similarity":
        if not selected:
            return plain(ids, "Select a tile (click it on the map, or lasso it) to colour by "
                              "similarity to it.")  # fmt: skip
        anchor = st.selectbox(
            "Similar to", list(reversed(selected)), format_func=short_id, key="embedding.anchor"
        )
        return ramp_colouring(
            f"cosine to {short_id(anchor)}", similarities(db, inputs, version, anchor)
        )
    return source_colouring(ids)


def offer_landcover(scope: Scope) -> None:
    """A button that applies the model's land-cover head to the scope's tiles."""
    if st.button(
        "Compute land cover for these tiles",
        key="embedding.compute_lc",
        icon=":material/layers:",
        help="Applies the model's land-cover head to the cached embeddings (no re-embedding).",
    ):
        with user_errors(), st.spinner("Predicting land cover…"):
            n = predict_scope_landcover(scope)
            st.session_state[LC_STAMP] = st.session_state.get(LC_STAMP, 0) + 1
            st.toast(f"Land cover predicted for {n} tiles.", icon=":material/check:")
            st.rerun()


@st.fragment(run_every=1.5)
def umap_progress(job: UmapJob, n: int) -> None:
    """Polls the UMAP job; reruns the page when it is done (PCA is shown meanwhile)."""
    if job.future.done():
        st.rerun()
    st.caption(
        f":material/hourglass_top: UMAP of {n} tiles is being fitted in the background "
        f"({job.elapsed():.0f} s so far; the first fit of a process also compiles numba, "
        "10–30 s). PCA is shown meanwhile; the chart switches by itself."
    )


def tiles_layer(
    recs: list[dict[str, Any]], colours: dict[str, str], selected: set[str]
) -> LayerBuilder:
    """The scope's tiles filled with their point colour; the selection outlined in pink."""

    def add(m: folium.Map) -> None:
        features = [
            {
                "type": "Feature",
                "geometry": footprint(r),
                "properties": {
                    "tile_id": r["tile_id"],
                    "fill": colours.get(r["tile_id"], "#b0b7c0"),
                    "selected": r["tile_id"] in selected,
                },
            }
            for r in recs
        ]
        folium.GeoJson(
            {"type": "FeatureCollection", "features": features},
            name="tiles (colour as in the chart)",
            style_function=lambda f: {
                "fillColor": f["properties"]["fill"],
                "fillOpacity": 0.65,
                "color": "#ff2d95" if f["properties"]["selected"] else "#ffffff",
                "weight": 3 if f["properties"]["selected"] else 0.5,
                "className": "softmap-embedding-selected"
                if f["properties"]["selected"]
                else "softmap-embedding-tile",
            },
            tooltip=folium.GeoJsonTooltip(["tile_id"], aliases=["Tile"]),
        ).add_to(m)

    return add


def selection_panel(source: SceneSource, selected: tuple[str, ...]) -> None:
    """The selected tiles as thumbnails with ids (plotly hover cannot show images)."""
    if not selected:
        st.caption(
            "Lasso or box-select points in the chart (drag), or click tiles "
            "on the map: they are ringed in both. Hover a point for its tile id."
        )
        return
    head = st.container(horizontal=True, vertical_alignment="center")
    head.markdown(f"**{len(selected)} selected tile{'s' if len(selected) != 1 else ''}**")
    head.button("Clear selection", key="embedding.clear", icon=":material/close:",
                on_click=clear_selection, type="tertiary")  # fmt: skip
    shown = list(selected[-MAX_THUMBS:])
    cols = st.columns(MAX_THUMBS)
    for col, tile in zip(cols, shown, strict=False):
        with col, user_errors():
            col.image(
                resources.thumbnail(parse_tile_id(tile)[0], tile),
                caption=short_id(tile),
                width="stretch",
            )
    if len(selected) > MAX_THUMBS:
        st.caption(f"Thumbnails of the last {MAX_THUMBS}.")


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

    st.header("Embedding space", anchor=False)
    st.caption(
        f"Every cached tile of **{meta.title}** as a point: tiles that look alike to the model lie "
        "close together. PCA at once, UMAP as soon as it is fitted."
    )
    analysis = get_analysis()
    write_url(
        page=PAGE, source=selection.source_id, model=selection.model_id, region=region,
        tiles=get_selected_tiles(),
        analysed=analysis is not None and analysis.matches(selection, region),
    )  # fmt: skip
    try:
        version = model_version(selection.model_id)
    except SoftMapError as e:
        show_error(e)
        return
    if not version:
        st.info(
            f"Nothing is cached for {meta.title} yet: analyse a region on Explore first.",
            icon=":material/database:",
        )
        st.page_link("../pages/explore.py", label="Choose and analyse a region", icon="🗺️")
        return

    top = st.columns([3, 3, 2])
    kept("embedding.scope", "This region" if region is not None else "This scene")
    scope_label = keep(
        "embedding.scope",
        top[0].radio("Tiles", list(SCOPES), key="embedding.scope", horizontal=True),
    )
    kind: ScopeKind = SCOPES.get(str(scope_label), "source")
    if kind == "region" and region is None:
        top[0].caption("No region chosen (Explore): showing this scene.")
        kind = "source"
    # Through a service the points are coloured by source only: the stored land-cover and
    # class predictions and the similarities are not served yet.
    served = resources.service_url() is not None
    colours = ["Source"] if served else list(COLOUR_BY)
    kept("embedding.colour", colours[0] if served else "Predicted land cover")
    if st.session_state["embedding.colour"] not in colours:
        st.session_state["embedding.colour"] = colours[0]
    colour_label = keep(
        "embedding.colour",
        top[1].selectbox(
            "Colour by", colours, key="embedding.colour",
            help="Through the service only by source (the other colourings need the "
            "in-process app)." if served else None,
        ),
    )  # fmt: skip
    how = COLOUR_BY.get(str(colour_label), "landcover")
    inputs = ScopeInputs(
        selection.model_id, kind, source.id, region.geometry.wkt if region is not None else None
    )
    try:
        pca = pca_projection(db, inputs, version)
        job = umap_job(db, inputs, version)
    except SoftMapError as e:
        show_error(e)
        if kind == "region":
            st.caption("Choose *This scene* or *Everything cached* to see what is cached.")
        return
    scope = cached_scope(db, inputs, version)
    umap: Projection | None = None
    umap_error: SoftMapError | None = None
    if job.future.done():
        error = job.future.exception()
        if isinstance(error, SoftMapError):
            umap_error = error
        elif error is None:
            umap = job.future.result()
    methods = ["UMAP", "PCA"] if umap is not None else ["PCA"]
    kept("embedding.method", "UMAP")
    if st.session_state["embedding.method"] not in methods:
        # PCA only because UMAP is not ready: switch to UMAP by itself once it is.
        st.session_state["embedding.method"] = methods[0]
        st.session_state["embedding.method_auto"] = True
    elif umap is not None and st.session_state.pop("embedding.method_auto", False):
        st.session_state["embedding.method"] = "UMAP"
    method = keep(
        "embedding.method",
        top[2].segmented_control(
            "Projection", methods, key="embedding.method", required=True,
            help="UMAP keeps neighbourhoods (clusters); PCA keeps the largest directions.",
        ),
    )  # fmt: skip
    proj = umap if method == "UMAP" and umap is not None else pca

    selected = tuple(t for t in get_selected_tiles() if t in set(scope.tile_ids))
    colouring = plain(scope.tile_ids)
    with user_errors():
        colouring = colouring_for(how, db, inputs, version, selected)

    left, right = st.columns([1, 1])
    with left:
        fig = scatter_figure(
            proj.tile_ids, proj.xy, colouring, selected, method="umap" if proj is umap else "pca"
        )
        st.plotly_chart(
            fig, key=CHART_KEY, on_select=on_chart_select,
            selection_mode=("box", "lasso", "points"), width="stretch",
            config={"displaylogo": False, "scrollZoom": True},
        )  # fmt: skip
        where = scope.describe()
        label = "UMAP" if proj is umap else "PCA"
        st.caption(
            f"{label} of {where}"
            + (" (from the cache)" if proj.cached else f" ({proj.seconds:.1f} s)")
            + (f". {colouring.note}" if colouring.note else ".")
        )
        if umap is None and umap_error is None:
            umap_progress(job, len(scope.tile_ids))
        if umap_error is not None:
            show_error(umap_error)
        if how == "landcover" and colouring.incomplete:
            offer_landcover(scope)
    with right:
        imagery, imagery_param = imagery_control(PAGE)
        recs = map_tiles(db, scope, source.id)
        colours = dict(zip(scope.tile_ids, point_colours(colouring), strict=True))
        # Opens on the scope's tiles; a view the user moved to is kept until the scope changes.
        view = records_view(recs, view_token(kind, inputs.region_wkt))
        layer = tiles_layer(recs, colours, set(selected))
        drawn = ([r["tile_id"] for r in recs], colours, sorted(selected))
        events = tiles_map(
            PAGE, source, region, imagery, [layer], view, height=520, layers_key=drawn
        )
        st.caption("Click a tile to add it to the selection (click again to remove it).")
        if len(recs) < sum(t.startswith(f"{source.id}/") for t in scope.tile_ids):
            st.caption(f"The map draws the first {len(recs)} tiles of this scene.")
    if events.clicked is not None:
        tile = tile_at(recs, *events.clicked)
        if tile is not None:
            toggle_tile(tile)
            st.rerun()
    selection_panel(source, selected)
    write_params(
        {
            "scope": kind if kind != ("region" if region is not None else "source") else None,
            "color": how if how != "landcover" else None,
            "proj": "pca" if method == "PCA" and umap is not None else None,
            "img": imagery_param,
        }
    )


page()
