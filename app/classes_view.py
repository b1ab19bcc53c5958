"""My classes: labels, training, the probability map, area and "label these next" (UI pieces).

Training and suggestions are bounded-``st.cache_data`` keyed by the class's labels (a tuple of
``(tile_id, positive)``), the scope and the model's data version: a rerun with the same labels
reuses them; a new label retrains (small label sets train in well under a second). Changes
(labels, classes) happen in widget callbacks, which run before the script, so the whole page sees
them on the same rerun; a backend error in a callback is kept and shown by the page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import folium
import numpy as np
import streamlit as st

from app import resources
from app.map_view import LayerBuilder
from app.projection_view import RAMP, ScopeInputs, Version, cached_scope, footprint
from app.search_view import colour_ramp, text_colour
from backend.classes.active_learning import Suggestion
from backend.classes.classifier import CALIBRATION_MIN, Classification, ClassifierReport
from backend.errors import SoftMapError
from backend.landcover.areas import ClassArea
from backend.service import (
    Suggestions,
    TileSelection,
)

ERROR_KEY = "classes.error"
NOTICE_KEY = "classes.notice"
#: Bumped (to a new value) whenever predictions were stored: the Embedding space re-reads them.
CLASS_STAMP = "app.class_predictions_stamp"
POSITIVE_COLOUR = "#00c853"
NEGATIVE_COLOUR = "#ff1744"
SUGGESTION_COLOUR = "#ff9f1c"
#: Labels listed with a remove button each (the rest are summarised).
MAX_LISTED = 40

LabelsKey = tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Trained:
    """A class trained on its current labels over a scope: probabilities, report and areas."""

    classification: Classification
    areas: tuple[ClassArea, ...]
    region_clipped: bool

    @property
    def report(self) -> ClassifierReport:
        return self.classification.report

    def probabilities(self) -> dict[str, float]:
        c = self.classification
        return dict(zip(c.tile_ids, c.probabilities.tolist(), strict=True))


def labels_key(name: str) -> LabelsKey:
    """The class's labels as ``((tile_id, positive), …)`` by tile id (one small query)."""
    labels = resources.operations().class_labels(name)
    return tuple((lb.tile_id, lb.positive) for lb in labels)


@st.cache_data(show_spinner="Training…", max_entries=16)
def train(db: str, name: str, inputs: ScopeInputs, version: Version, key: LabelsKey) -> Trained:
    """Train ``name`` on its labels, predict the scope (stored), and the class's expected area.

    Raises:
        NotEnoughLabelsError: fewer than one positive and one negative embedded tile.
    """
    scope = cached_scope(db, inputs, version)
    result, areas = resources.operations().classify_in(name, scope)
    return Trained(result, tuple(areas), scope.region is not None)


@st.cache_data(show_spinner="Choosing tiles to label next…", max_entries=16)
def suggestions(
    db: str, name: str, inputs: ScopeInputs, version: Version, key: LabelsKey, k: int
) -> Suggestions:
    """``k`` unlabelled tiles of the scope that would teach the classifier most."""
    return resources.operations().suggest_in(name, cached_scope(db, inputs, version), k=k)


# --- text ---------------------------------------------------------------------------------------
#: Below this cross-validated balanced accuracy a classifier is close to guessing (chance 0.5).
INFORMATIVE_ACCURACY = 0.7
#: Probabilities spanning less than this over the scope tell its tiles hardly apart.
INFORMATIVE_SPREAD = 0.3


def not_informative(trained: Trained) -> str | None:
    """Why the classifier does not tell the class apart yet (None when it does).

    Few labels give a classifier that is guessing (cross-validated accuracy near chance, or none
    at all) or probabilities that hardly vary over the scope; the map then means little.
    """
    r = trained.report
    p = trained.classification.probabilities
    reasons = []
    if r.cv_balanced_accuracy is None:
        reasons.append("there are too few labels to check it (2 on each side at least)")
    elif r.cv_balanced_accuracy < INFORMATIVE_ACCURACY:
        reasons.append(
            f"its cross-validated accuracy ({r.cv_balanced_accuracy:.2f}) is close to chance (0.50)"
        )
    if p.size and float(p.max() - p.min()) < INFORMATIVE_SPREAD:
        reasons.append(f"its probabilities only span {p.min():.2f}–{p.max():.2f}")
    if not reasons:
        return None
    return (
        f"**Not yet informative**: {' and '.join(reasons)}. Label more tiles, the suggested "
        "ones first: they are the ones it is least sure about."
    )


def calibration_text(report: ClassifierReport) -> str:
    """What the probabilities are: calibrated on held-out labels, or the model's own score."""
    if report.calibration == "sigmoid":
        return "probabilities calibrated on held-out labels (sigmoid)"
    return (
        f"probabilities not calibrated yet (from {CALIBRATION_MIN} labels on each side): read "
        "them as a ranking more than as chances"
    )


def accuracy_text(report: ClassifierReport) -> str:
    """Cross-validated balanced accuracy with the label counts behind it."""
    counts = f"{report.positives} positive / {report.negatives} negative labels"
    if report.cv_balanced_accuracy is None:
        return (
            f"Trained on {counts}. Cross-validated accuracy needs at least 2 labels on each side."
        )
    return (
        f"Cross-validated balanced accuracy **{report.cv_balanced_accuracy:.2f}** "
        f"({report.cv_folds} folds; chance 0.50) from {counts}."
    )


def area_text(trained: Trained) -> str:
    """Expected area of the class with its 95 % range, and the share of the mapped area."""
    name = trained.report.class_name
    area = next(a for a in trained.areas if a.name == name)
    total = sum(a.expected_km2 for a in trained.areas)
    where = "in the region" if trained.region_clipped else "over these tiles"
    share = f" ({area.expected_km2 / total:.0%} of {total:.2f} km²)" if total > 0 else ""
    return (
        f"Expected area of **{name}** {where}: **{area.expected_km2:.2f} km²**{share}, 95 % "
        f"range {area.low_km2:.2f}–{area.high_km2:.2f} km²; {area.tiles_dominant} tiles with "
        "p ≥ 0.5."
    )


def legend_html() -> str:
    """The probability ramp with its ends and the label/suggestion outlines."""
    stops = ", ".join(RAMP)
    swatch = (
        "display:inline-block;width:14px;height:14px;vertical-align:middle;margin:0 4px 0 10px;"
    )
    return (
        "<div style='font-size:.85em;line-height:1.8'>"
        "P(class) <span style='font-size:.9em'>0</span>"
        f"<span style='display:inline-block;width:140px;height:12px;vertical-align:middle;"
        f"margin:0 4px;background:linear-gradient(to right, {stops})'></span>1"
        f"<span style='{swatch}border:3px solid {POSITIVE_COLOUR}'></span>positive"
        f"<span style='{swatch}border:3px solid {NEGATIVE_COLOUR}'></span>negative"
        f"<span style='{swatch}border:3px dashed {SUGGESTION_COLOUR}'></span>label next"
        "</div>"
    )


# --- the map ------------------------------------------------------------------------------------
def _hex(rgb: Sequence[int]) -> str:
    r, g, b = (int(c) for c in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def classes_layer(
    recs: Sequence[dict[str, Any]],
    marked: dict[str, bool],
    probs: dict[str, float] | None,
    suggested: Sequence[Suggestion] = (),
) -> LayerBuilder:
    """Scope tiles (filled by probability once trained), labels outlined, suggestions numbered."""
    ids = [r["tile_id"] for r in recs]
    fills: dict[str, str] = {}
    if probs:
        p = np.array([probs.get(t, np.nan) for t in ids], dtype=float)
        rgb = colour_ramp(np.nan_to_num(p, nan=0.0), RAMP)
        fills = {t: _hex(c) for t, c, v in zip(ids, rgb, p, strict=True) if np.isfinite(v)}
    rank = {s.tile_id: i + 1 for i, s in enumerate(suggested)}

    def style(tile: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fillColor": fills.get(tile, "#ffffff"),
            "fillOpacity": 0.7 if tile in fills else 0.0,
            "color": "#ffffff",
            "weight": 0.6,
            "opacity": 0.7,
        }
        if tile in marked:
            out |= {"color": POSITIVE_COLOUR if marked[tile] else NEGATIVE_COLOUR, "weight": 3.5,
                    "opacity": 1.0}  # fmt: skip
        elif tile in rank:
            out |= {"color": SUGGESTION_COLOUR, "weight": 3, "dashArray": "6 4", "opacity": 1.0}
        return out

    def add(m: folium.Map) -> None:
        features = []
        for r in recs:
            t = r["tile_id"]
            kind = (
                ("positive" if marked[t] else "negative")
                if t in marked
                else f"suggestion #{rank[t]}"
                if t in rank
                else ""
            )
            p_text = f"{probs[t]:.2f}" if probs and t in probs else "–"
            features.append(
                {
                    "type": "Feature",
                    "geometry": footprint(r),
                    "properties": {"tile_id": t, "label": kind, "p": p_text, "style": style(t)},
                }
            )
        folium.GeoJson(
            {"type": "FeatureCollection", "features": features},
            name="tiles, labels and P(class)",
            style_function=lambda f: f["properties"]["style"],
            tooltip=folium.GeoJsonTooltip(
                ["tile_id", "label", "p"], aliases=["Tile", "Label", "P(class)"]
            ),
        ).add_to(m)
        group = folium.FeatureGroup(name="label these next")
        for i, s in enumerate(suggested, start=1):
            folium.Marker(
                [s.lat, s.lon],
                icon=folium.DivIcon(
                    html=(
                        f"<div class='softmap-suggestion' style='background:{SUGGESTION_COLOUR};"
                        f"color:{text_colour(SUGGESTION_COLOUR)};border:1.5px solid #fff;"
                        "border-radius:50%;width:22px;height:22px;line-height:19px;"
                        f"text-align:center;font:bold 12px sans-serif'>{i}</div>"
                    ),
                    icon_size=(22, 22),
                    icon_anchor=(11, 11),
                ),
                interactive=False,
            ).add_to(group)
        group.add_to(m)

    return add


# --- callbacks ----------------------------------------------------------------------------------
def _guard(action: Any, *args: Any, notice: str | None = None, **kwargs: Any) -> None:
    st.session_state.pop(ERROR_KEY, None)
    try:
        action(*args, **kwargs)
    except SoftMapError as e:
        st.session_state[ERROR_KEY] = e
        return
    if notice:
        st.session_state[NOTICE_KEY] = notice


def mark(name: str, tile_ids: Sequence[str], positive: bool) -> None:
    """Label tiles positive or negative (a callback: errors are kept for the page)."""
    _guard(
        resources.operations().add_labels,
        name,
        TileSelection(tiles=tuple(tile_ids)),
        positive=positive,
        origin="app",
    )


def unmark(name: str, tile_ids: Sequence[str]) -> None:
    """Remove the labels of tiles (a callback)."""
    _guard(resources.operations().remove_labels, name, TileSelection(tiles=tuple(tile_ids)))


def labels_geojson_text(name: str, key: LabelsKey) -> str:
    """The class's labels as GeoJSON text (``key`` only invalidates the cached value)."""
    return _labels_geojson(str(resources.db_path()), name, key)


@st.cache_data(show_spinner=False, max_entries=8)
def _labels_geojson(db: str, name: str, key: LabelsKey) -> str:
    return json.dumps(resources.operations().labels_geojson(name), indent=1)
