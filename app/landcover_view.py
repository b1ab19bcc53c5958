"""Land cover on the Explore page: map layers with a legend, their controls, the area panel.

Three hooks of ``pages/explore.py`` come from here: :func:`landcover_layer` (the soft-label map
as a Leaflet image overlay — dominant class with opacity = confidence, one class's probability,
or entropy — plus its legend), :func:`landcover_panel` (key numbers, the area chart and table)
and :func:`tile_probabilities` (a clicked tile's class-probability bars).

Reruns stay cheap: the :class:`~app.analysis.LandCover` of an analysed region is kept in session
state (keyed by source, model, region and head, a few at most), and each rendered layer is a PNG
written once under ``app/static/landcover/`` and served by Streamlit, so the map's HTML holds a
URL rather than a data URL (``st.cache_data`` remembers which file belongs to which layer).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folium
import streamlit as st
from branca.element import MacroElement
from jinja2 import Template

from app import charts, resources
from app.analysis import LandCover, map_landcover
from app.errors import show_error, user_errors
from app.map_view import LayerBuilder
from app.state import Analysis, get_selection
from backend.imagery.preview import encode_png, png_data_url
from backend.imagery.tiling import tile_from_id
from backend.landcover.labels import DW_CLASSES, DW_TITLES, N_CLASSES
from backend.landcover.maps import LandCoverResult
from backend.landcover.render import UNLIKE_COLOR, UNLIKE_LABEL, RenderMode, render_landcover
from backend.models import get_model_meta

LANDCOVER_KEY = "explore.landcover"
SHOWN_KEY = "explore.landcover_shown"
#: The layer on the map in this rerun: ``(LayerChoice, RenderedLayer | None)``.
LAYER_STATE_KEY = "explore.landcover_layer"
LAYER_KEY = "explore.lc_layer"
CLASS_KEY = "explore.lc_class"
OPACITY_KEY = "explore.lc_opacity"
TOKENS_KEY = "explore.lc_tokens"
HEAD_KEY = "explore.lc_head"
#: Land-cover results kept per session (different regions or heads).
KEEP = 4
#: Layer choices: label → render mode (None: no land-cover layer).
LAYERS: dict[str, RenderMode | None] = {
    "Dominant class": "dominant",
    "Probability of a class": "probability",
    "Uncertainty (entropy)": "entropy",
    "Off": None,
}
#: The class picked first for "Probability of a class": the food-security question.
DEFAULT_CLASS = DW_CLASSES.index("crops")
#: With the dominant class's own alpha (0.45–1 by confidence) colours stand out at any zoom.
DEFAULT_OPACITY = 90
LAYER_DIR = Path(__file__).resolve().parent / "static" / "landcover"
LAYER_URL = "/app/static/landcover"
#: Rendered layers kept on disk; the oldest go first.
MAX_LAYER_FILES = 256
DEFAULT_HEAD = "(newest for this model)"


# --- state --------------------------------------------------------------------------------------
def _key(analysis: Analysis, head: str | None) -> tuple[str, str, str, str]:
    return (analysis.source_id, analysis.model_id, analysis.region_wkt, head or "")


def landcover_for(analysis: Analysis, head: str | None = None) -> LandCover:
    """The land cover of an analysed region with ``head`` (None: the model's default head).

    Computed once (embeddings are cached, stored predictions reused) and kept in session state.
    """
    kept: dict[tuple[str, str, str, str], LandCover] = st.session_state.setdefault(
        LANDCOVER_KEY, {}
    )
    key = _key(analysis, head)
    found = kept.get(key)
    if found is None or not found.matches(analysis, head):
        found = map_landcover(analysis, resources.catalog().get(analysis.source_id), head)
        kept[key] = found
        for old in list(kept)[:-KEEP]:
            del kept[old]
    return found


def shown_landcover() -> LandCover | None:
    """The land cover on the map in this rerun (set by :func:`landcover_layer`)."""
    value = st.session_state.get(SHOWN_KEY)
    selection = get_selection()
    if not isinstance(value, LandCover) or selection is None:
        return None
    same = (value.source_id, value.model_id) == (selection.source_id, selection.model_id)
    return value if same else None


@st.cache_data(show_spinner=False, max_entries=16, ttl=60)
def head_ids(model_id: str, db: str) -> list[str]:
    """Ids of the land-cover heads of a model: fitted ones (newest first), then bundled."""
    return resources.operations().landcover_heads(model_id)


def chosen_head(model_id: str) -> str | None:
    """A head picker when the model has more than one head; None means the default head."""
    with user_errors():
        heads = head_ids(model_id, str(resources.db_path()))
        if len(heads) > 1:
            picked = st.selectbox(
                "Land-cover head", [DEFAULT_HEAD, *heads], key=f"{HEAD_KEY}.{model_id}"
            )
            return None if picked == DEFAULT_HEAD else str(picked)
    return None


# --- layers -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerChoice:
    """What the land-cover layer shows."""

    mode: RenderMode | None
    class_index: int = DEFAULT_CLASS
    opacity: float = DEFAULT_OPACITY / 100
    tokens: bool = True


@dataclass(frozen=True)
class RenderedLayer:
    """A rendered layer: where the PNG is served and its lon/lat bounds (W, S, E, N)."""

    url: str
    bounds: tuple[float, float, float, float]


def result_key(result: LandCoverResult) -> str:
    """Identifies a result's content: scene, head (with its creation time) and tiles."""
    h = result.head
    parts = (result.source.id, h["model_id"], h["head_id"], h.get("created_at", ""))
    text = "|".join([*map(str, parts), *result.tile_ids])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def token_cell_m(result: LandCoverResult) -> float | None:
    """Side of a token cell in metres (None without token probabilities)."""
    if result.token_probabilities is None:
        return None
    chip = tile_from_id(result.tile_ids[0], result.source)[0]
    grid = int(result.token_probabilities.shape[-1])
    return float(chip * result.source.grid.resolution / grid)


@st.cache_data(show_spinner=False, max_entries=64)
def _rendered(
    key: str, mode: RenderMode, class_index: int, tokens: bool, _result: LandCoverResult
) -> RenderedLayer:
    raster = _result.probability_raster(tokens=tokens)
    ood = _result.ood_raster(tokens=tokens)
    unlike = (ood.data[0] > 1.0) if ood is not None else None
    preview = render_landcover(
        raster, mode, class_index if mode == "probability" else None, unlike=unlike
    )
    png = encode_png(preview.rgba)
    name = hashlib.sha256(f"{key}|{mode}|{class_index}|{tokens}".encode()).hexdigest()[:20]
    try:
        LAYER_DIR.mkdir(parents=True, exist_ok=True)
        path = LAYER_DIR / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(png)
            tmp.replace(path)
            _prune(LAYER_DIR)
    except OSError:
        return RenderedLayer(png_data_url(preview.rgba), preview.bounds)
    return RenderedLayer(f"{LAYER_URL}/{name}.png", preview.bounds)


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)
    for old in files[:-MAX_LAYER_FILES]:
        old.unlink(missing_ok=True)


def rendered_layer(result: LandCoverResult, choice: LayerChoice) -> RenderedLayer | None:
    """The PNG of a layer choice (rendered once per process), or None when the layer is off."""
    if choice.mode is None:
        return None
    tokens = choice.tokens and result.token_probabilities is not None
    class_index = choice.class_index if choice.mode == "probability" else -1
    return _rendered(result_key(result), choice.mode, class_index, tokens, result)


def layer_title(choice: LayerChoice) -> str:
    if choice.mode == "probability":
        return f"Probability of {DW_TITLES[choice.class_index]}"
    if choice.mode == "entropy":
        return "Uncertainty (entropy)"
    return "Dominant class"


def legend_html(choice: LayerChoice) -> str:
    """The legend of a layer choice as self-contained HTML (inline styles, no assets)."""
    title = html.escape(layer_title(choice))
    box = "display:inline-block;width:14px;height:14px;margin-right:6px;vertical-align:-2px"
    # Cells beyond the out-of-distribution limit are grey in every mode.
    unlike_row = (
        f'<div><span style="{box};background:#{UNLIKE_COLOR}"></span>'
        f"{html.escape(UNLIKE_LABEL)}</div>"
    )
    if choice.mode == "dominant":
        rows = "".join(
            f'<div><span style="{box};background:{charts.class_colour(c)}"></span>'
            f"{html.escape(DW_TITLES[c])}</div>"
            for c in range(N_CLASSES)
        )
        rows += unlike_row
        note = "opacity = confidence"
    else:
        if choice.mode == "probability":
            colour = charts.class_colour(choice.class_index)
            ramp, ends = f"linear-gradient(to right, {colour}00, {colour})", ("0 %", "100 %")
        else:
            ramp, ends = "linear-gradient(to right, #ffffcc, #54278f)", ("certain", "uncertain")
        rows = (
            f'<div style="height:12px;width:150px;background:{ramp};border:1px solid #999"></div>'
            f'<div style="display:flex;justify-content:space-between;width:152px">'
            f"<span>{ends[0]}</span><span>{ends[1]}</span></div>"
        )
        rows += unlike_row
        note = "entropy / ln 9" if choice.mode == "entropy" else "opacity = probability"
    return (
        '<div class="softmap-legend" style="background:rgba(255,255,255,0.92);padding:6px 9px;'
        "border-radius:5px;box-shadow:0 1px 4px rgba(0,0,0,0.35);font:12px/1.45 sans-serif;"
        f'color:#222"><div style="font-weight:600;margin-bottom:3px">{title}</div>{rows}'
        f'<div style="color:#666;margin-top:2px">{note}</div></div>'
    )


class Legend(MacroElement):
    """A Leaflet control (bottom right) holding static HTML."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = L.control({position: "bottomright"});
        {{ this.get_name() }}.onAdd = function () {
            var div = L.DomUtil.create("div");
            div.innerHTML = {{ this.html|tojson }};
            L.DomEvent.disableClickPropagation(div);
            return div;
        };
        {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
        {% endmacro %}
        """
    )

    def __init__(self, html_text: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "Legend"
        self.html = html_text


def overlay_builder(layer: RenderedLayer, choice: LayerChoice) -> LayerBuilder:
    """Adds the land-cover image and its legend to a map."""

    def add(m: folium.Map) -> None:
        w, s, e, n = layer.bounds
        overlay = folium.raster_layers.ImageOverlay(
            "data:,",
            bounds=[[s, w], [n, e]],
            name=f"Land cover: {layer_title(choice)}",
            opacity=choice.opacity,
            className="softmap-landcover",
        )
        overlay.url = layer.url  # folium would read a root-relative URL as a local file path
        overlay.add_to(m)
        Legend(legend_html(choice)).add_to(m)

    return add


def _nothing(_m: folium.Map) -> None:
    return None


def layer_controls(result: LandCoverResult) -> LayerChoice:
    """Layer, class, opacity and sub-tile widgets in one row above the map."""
    cols = st.columns([3, 2, 2, 2])
    label = cols[0].selectbox("Land-cover layer", list(LAYERS), key=LAYER_KEY)
    mode = LAYERS.get(label or "Off")
    class_index = cols[1].selectbox(
        "Class",
        range(N_CLASSES),
        index=DEFAULT_CLASS,
        format_func=DW_TITLES.__getitem__,
        key=CLASS_KEY,
        disabled=mode != "probability",
        help="The class whose probability the layer shows.",
    )
    opacity = cols[2].slider("Layer opacity", 0, 100, DEFAULT_OPACITY, 5, key=OPACITY_KEY)
    cell = token_cell_m(result)
    tokens = cols[3].toggle(
        f"Sub-tile cells ({cell:.0f} m)" if cell else "Sub-tile cells",
        value=True,
        key=TOKENS_KEY,
        disabled=cell is None,
        help="One cell per patch token (the head's token level); off: one cell per tile.",
    )
    return LayerChoice(mode, int(class_index), opacity / 100, bool(tokens) and cell is not None)


def landcover_layer(analysis: Analysis) -> LayerBuilder:
    """HOOK(ANALYSIS_LAYERS): the land-cover controls, and the layer they choose for the map."""
    landcover = landcover_for(analysis, chosen_head(analysis.model_id))
    st.session_state[SHOWN_KEY] = landcover
    st.session_state[LAYER_STATE_KEY] = None
    if landcover.result is None:
        return _nothing
    choice = layer_controls(landcover.result)
    with user_errors():
        layer = rendered_layer(landcover.result, choice)
        st.session_state[LAYER_STATE_KEY] = (choice, layer)
        if layer is not None:
            return overlay_builder(layer, choice)
    return _nothing


# --- panels -------------------------------------------------------------------------------------
def _metric(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def head_summary(head: Mapping[str, Any]) -> str:
    """Where the head comes from and how well it did on held-out tiles (and tokens)."""
    training = head.get("training") or {}
    metrics = head.get("metrics") or {}
    where = training.get("source") or ", ".join(training.get("sources") or []) or "?"
    parts = [
        f"Head `{head['head_id']}` ({'bundled' if head.get('bundled') else 'fitted here'}): "
        f"trained on {training.get('labels', '?')} labels of {where} "
        f"({training.get('labelled_tiles', '?')} labelled tiles, mapping "
        f"{head.get('mapping', '?')})."
    ]
    for level in ("tile", "token"):
        m = metrics.get(level)
        if m:
            parts.append(
                f"Held-out {level}s (spatial blocks, n = {m.get('n_test')}): mAP "
                f"{_metric(m.get('mAP'))}, top-1 {_metric(m.get('top1'))} (majority class "
                f"{_metric(m.get('baseline_top1'))})."
            )
    return " ".join(parts)


def pixel_summary(pixels: Mapping[str, Any]) -> str:
    """The head's map accuracy on the held-out reference polygons, as one sentence."""
    classes = ", ".join(
        f"{c['class']} {100 * c['recall']:.0f} % / {100 * c['precision']:.0f} %"
        for c in pixels.get("classes", [])
        if c.get("recall") is not None and c.get("precision") is not None
    )
    return (
        f"Map accuracy on {pixels.get('polygons')} held-out reference polygons of "
        f"{', '.join(pixels.get('scenes', []))} ({pixels.get('area_ha', 0):.0f} ha): "
        f"{100 * pixels['overall_accuracy']:.1f} % overall; recall / precision per class: "
        f"{classes}. `softmap eval landcover` prints the confusion matrix."
    )


def landcover_panel(analysis: Analysis) -> None:
    """HOOK(ANALYSIS_PANELS): key numbers, the area chart and the area table."""
    landcover = shown_landcover() or landcover_for(analysis)
    if landcover.error is not None:
        show_error(landcover.error)
        return
    result = landcover.result
    if result is None:
        return
    st.subheader("Land cover", anchor=False)
    tile_m = result.head.get("metrics", {}).get("tile") or {}
    top1, base = tile_m.get("top1"), tile_m.get("baseline_top1")
    cols = st.columns([3, 1, 4, 2, 3])
    cols[0].metric("Region mapped", f"{result.region_km2:.2f} km²")
    cols[1].metric("Tiles", f"{len(result.tile_ids)}")
    cols[2].metric("Head", str(result.head["mapping"]), help=str(result.head["head_id"]))
    cols[3].metric(
        "Held-out mAP",
        _metric(tile_m.get("mAP")),
        help="Multi-label mean average precision of the tile head on spatially held-out tiles.",
    )
    cols[4].metric(
        "Held-out top-1",
        _metric(top1),
        delta=(
            f"{top1 - base:+.2f} vs. majority class"
            if isinstance(top1, (int, float)) and isinstance(base, (int, float))
            else None
        ),
        help="Share of held-out tiles whose dominant class the head gets right.",
    )
    # The headline, table and chart count the cells the map paints (one source of truth).
    crops = next(a for a in result.areas if a.name == "crops")
    st.markdown(
        f"**Cropland: {crops.map_km2 or 0.0:.2f} km²** on the map, {crops.share:.0%} of "
        f"{result.region_km2:.2f} km² (expected {crops.expected_km2:.2f} km², 95 % range "
        f"{crops.low_km2:.2f}–{crops.high_km2:.2f} km²)."
    )
    if result.unlike_km2 > 0:
        st.markdown(
            f"**{UNLIKE_LABEL}: {result.unlike_km2:.2f} km²** ({result.unlike_share:.1%}), shown "
            "in grey and counted in no class."
        )
    pixels = (result.head.get("metrics") or {}).get("pixels")
    if pixels and pixels.get("overall_accuracy") is not None:
        st.caption(pixel_summary(pixels))
    meta = get_model_meta(analysis.model_id)
    caveat = (
        f" **{meta.id} has random weights: this map exercises the pipeline and means nothing.**"
        if meta.random_init_seed is not None and not meta.weight_files
        else ""
    )
    st.caption(head_summary(result.head) + caveat)
    left, right = st.columns([1, 1])
    left.plotly_chart(
        charts.area_figure(result.areas), key="explore.area_chart", config={"displaylogo": False}
    )
    right.dataframe(charts.area_table(result.areas), hide_index=True, key="explore.area_table")


def tile_probabilities(record: Mapping[str, Any]) -> None:
    """HOOK(TILE_SECTIONS): the clicked tile's class probabilities as bars in DW colours."""
    landcover = shown_landcover()
    result = landcover.result if landcover is not None else None
    tile_id = str(record["tile_id"])
    if result is None or tile_id not in result.tile_ids:
        return
    p = result.probabilities[result.tile_ids.index(tile_id)]
    top = int(p.argmax())
    st.markdown(f"Most likely **{DW_TITLES[top]}** ({p[top]:.0%})")
    figure = charts.probability_figure(p)
    st.plotly_chart(figure, key="explore.tile_probabilities", config={"displaylogo": False})
