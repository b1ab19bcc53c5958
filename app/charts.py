"""Plotly charts and tables of land cover: expected area per class, one tile's class probabilities.

Pure functions of backend results (no widgets), so tests can check them without a browser; the
page renders them with ``st.plotly_chart`` and ``st.dataframe``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from numpy.typing import NDArray

from backend.landcover.areas import ClassArea
from backend.landcover.labels import DW_PALETTE, DW_TITLES

#: Classes whose 95 % range stays below this (km²) are left out of the area chart (not the table).
CHART_MIN_KM2 = 0.005
_FONT = {"size": 13}


def class_colour(class_id: int) -> str:
    """The Dynamic World colour of a class as ``#rrggbb``."""
    return f"#{DW_PALETTE[class_id]}"


@dataclass(frozen=True)
class AreaRow:
    """One line of the area table."""

    class_id: int
    title: str
    expected_km2: float
    low_km2: float
    high_km2: float
    share: float
    tiles_dominant: int


def area_rows(areas: Sequence[ClassArea]) -> list[AreaRow]:
    """The classes by expected area, largest first (ties in Dynamic World order)."""
    ordered = sorted(areas, key=lambda a: (-a.expected_km2, a.class_id))
    return [
        AreaRow(
            a.class_id,
            DW_TITLES[a.class_id],
            a.expected_km2,
            a.low_km2,
            a.high_km2,
            a.share,
            a.tiles_dominant,
        )
        for a in ordered
    ]


def area_table(areas: Sequence[ClassArea]) -> pd.DataFrame:
    """Class, map km², expected km², 95 % range, share % and cells where the class dominates."""
    rows = area_rows(areas)
    return pd.DataFrame(
        {
            "Class": [r.title for r in rows],
            "Map km²": [
                round(a.map_km2, 2) if a.map_km2 is not None else None
                for a in sorted(areas, key=lambda a: (-a.expected_km2, a.class_id))
            ],
            "Expected km²": [round(r.expected_km2, 2) for r in rows],
            "95 % range (km²)": [f"{r.low_km2:.2f}–{r.high_km2:.2f}" for r in rows],
            "Share %": [round(100 * r.share, 1) for r in rows],
            # Areas count what the map paints: sub-tile cells when the map shows cells.
            "Cells dominant": [r.tiles_dominant for r in rows],
        }
    )


def area_figure(areas: Sequence[ClassArea], *, height: int = 340) -> go.Figure:
    """Horizontal bars of expected km² per class in DW colours, error bars = the 95 % range."""
    rows = [r for r in area_rows(areas) if r.high_km2 >= CHART_MIN_KM2][::-1]  # largest on top
    fig = go.Figure(
        go.Bar(
            x=[r.expected_km2 for r in rows],
            y=[r.title for r in rows],
            orientation="h",
            marker={"color": [class_colour(r.class_id) for r in rows]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [r.high_km2 - r.expected_km2 for r in rows],
                "arrayminus": [r.expected_km2 - r.low_km2 for r in rows],
                "color": "#444",
                "thickness": 1.2,
                "width": 4,
            },
            customdata=[[r.low_km2, r.high_km2, 100 * r.share] for r in rows],
            hovertemplate=(
                "<b>%{y}</b><br>%{x:.2f} km² expected (95 %: %{customdata[0]:.2f}–"
                "%{customdata[1]:.2f})<br>%{customdata[2]:.1f} % of the region<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 36, "b": 10},
        title={"text": "Expected area per class (km², 95 % range)", "font": _FONT},
        xaxis={"title": "km²", "rangemode": "tozero"},
        yaxis={"automargin": True},
        showlegend=False,
    )
    return fig


def probability_figure(probabilities: NDArray[np.floating], *, height: int = 280) -> go.Figure:
    """One tile's nine class probabilities as horizontal bars in DW colours (top class on top)."""
    p = np.asarray(probabilities, dtype=np.float64)
    order = sorted(range(len(p)), key=lambda c: (p[c], -c))  # smallest first: plotly draws up
    fig = go.Figure(
        go.Bar(
            x=[float(p[c]) for c in order],
            y=[DW_TITLES[c] for c in order],
            orientation="h",
            marker={"color": [class_colour(c) for c in order]},
            text=[f"{p[c]:.0%}" for c in order],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="<b>%{y}</b>: %{x:.1%}<extra></extra>",
        )
    )
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 30, "t": 30, "b": 10},
        title={"text": "Class probabilities", "font": _FONT},
        xaxis={"range": [0, 1.05], "tickformat": ".0%"},
        yaxis={"automargin": True},
        showlegend=False,
    )
    return fig
