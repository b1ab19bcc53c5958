"""Explore's "Also show": other layers of the analysed region that the app already holds.

A HOOK of ``pages/explore.py`` (``ANALYSIS_LAYERS``): next to the land cover, the user can put
on the map, without leaving the page,

* the probability of one of their classes (My classes), where its classifier's predictions are
  stored for the analysed tiles with the same model and preprocessing;
* the results of the Similar places query of this session (its positives, negatives or point),
  found again through the same cached search.

Only one extra layer at a time, drawn above the land cover with its own legend; the choice is
a widget, so it survives reruns.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import folium
import streamlit as st

from app import resources
from app.errors import user_errors
from app.map_view import LayerBuilder
from app.offline_map import add_legend, ramp_legend
from app.search_view import (
    SCORE_PALETTE,
    SearchInputs,
    get_query,
    model_version,
    results_layer,
    run_search,
    score_range,
)
from app.state import Analysis
from backend.service import SearchResponse
from backend.service.layers import TileValues, class_probability_layers

OTHER_KEY = "explore.other_layer"
NONE = "Nothing else"
#: Low → high probability of a user class: transparent to magenta (apart from the DW palette).
CLASS_COLOUR = "#d4148c"
#: Results of the Similar places query shown on Explore.
SEARCH_K = 10


@dataclass(frozen=True)
class OtherLayer:
    """A choice of the "Also show" list and how to draw it."""

    label: str
    draw: Callable[[folium.Map], None]


def class_layer(values: TileValues, tiles: list[dict[str, Any]]) -> LayerBuilder:
    """Tiles filled with the class colour, opacity = P(class), with a tooltip and a legend."""
    p = values.as_dict()
    features = [
        {
            "type": "Feature",
            "geometry": _geometry(t["footprint"]),
            "properties": {"tile_id": t["tile_id"], "p": round(p[t["tile_id"]], 3)},
        }
        for t in tiles
        if t["tile_id"] in p
    ]

    def style(feature: dict[str, Any]) -> dict[str, Any]:
        prob = float(feature["properties"]["p"])
        return {
            "fillColor": CLASS_COLOUR,
            "fillOpacity": round(0.05 + 0.75 * prob, 3),
            "color": CLASS_COLOUR,
            "weight": 0.4,
            "opacity": 0.5,
            "className": "softmap-class-probability",
        }

    def add(m: folium.Map) -> None:
        folium.GeoJson(
            {"type": "FeatureCollection", "features": features},
            name=f"My class: {values.name}",
            style_function=style,
            tooltip=folium.GeoJsonTooltip(["p", "tile_id"], aliases=[values.title, "Tile"]),
        ).add_to(m)
        add_legend(
            m,
            ramp_legend(
                html.escape(f"My class: {values.name}"),
                [f"{CLASS_COLOUR}00", CLASS_COLOUR],
                ("0", "1"),
                "probability from its classifier (My classes)",
            ),
            position="bottomleft",
        )

    return add


def _geometry(footprint: str | dict[str, Any]) -> dict[str, Any]:
    """A stored footprint (GeoJSON text in the cache's records) as a GeoJSON geometry."""
    if isinstance(footprint, str):
        value: dict[str, Any] = json.loads(footprint)
        return value
    return footprint


def search_layer(response: SearchResponse) -> LayerBuilder:
    """The ranked results of the Similar places query, with the score legend."""
    draw_results = results_layer(response.results, None)
    lo, hi = score_range(response.results)

    def add(m: folium.Map) -> None:
        draw_results(m)
        note = "cosine similarity to your Similar places query; numbers: rank"
        legend = ramp_legend(
            "Similar places", list(SCORE_PALETTE), (f"{lo:.3f}", f"{hi:.3f}"), note
        )
        add_legend(m, legend, position="bottomleft")

    return add


def search_inputs(analysis: Analysis) -> SearchInputs | None:
    """The Similar page's query of this session, searched over the analysed region."""
    q = get_query()
    if not q.positives and q.point is None:
        return None
    return SearchInputs(
        positives=q.positives,
        negatives=q.negatives,
        point=q.point,
        k=SEARCH_K,
        scope="region",
        source_id=analysis.source_id,
        region_wkt=analysis.region_wkt,
    )


def choices(analysis: Analysis) -> list[OtherLayer]:
    """What else the app holds for this region (classes with predictions, the query)."""
    found: list[OtherLayer] = []
    r = analysis.result
    with user_errors():
        for values in class_probability_layers(
            resources.workspace(), analysis.model_id, r.preprocessing_hash, r.tile_ids
        ):
            found.append(
                OtherLayer(
                    f"My class: {values.name} (probability)", class_layer(values, analysis.tiles)
                )
            )
        inputs = search_inputs(analysis)
        if inputs is not None:
            db = str(resources.db_path())
            response = run_search(db, analysis.model_id, inputs, model_version(analysis.model_id))
            if response.results:
                label = f"Similar places: your query (top {len(response.results)})"
                found.append(OtherLayer(label, search_layer(response)))
    return found


def other_layers(analysis: Analysis) -> LayerBuilder:
    """HOOK(ANALYSIS_LAYERS): the "Also show" picker, and the layer it chose (or nothing)."""
    options = choices(analysis)
    labels = [NONE, *(o.label for o in options)]
    if st.session_state.get(OTHER_KEY) not in labels:
        st.session_state[OTHER_KEY] = NONE
    picked = st.selectbox(
        "Also show",
        labels,
        key=OTHER_KEY,
        help=(
            "Other layers of this region the app already holds: your classes' probabilities "
            "(train one on My classes) and the results of your Similar places query."
        ),
    )
    chosen = next((o for o in options if o.label == picked), None)
    return chosen.draw if chosen is not None else _nothing


def _nothing(_m: folium.Map) -> None:
    return None
