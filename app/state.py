"""Typed accessors for session state shared between the sidebar and the pages.

Keys are prefixed ``app.`` (shared) or with the page's name (``explore.``…); pages never touch
another page's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st
from shapely.geometry.base import BaseGeometry

from backend.embedding.pipeline import EmbedResult
from backend.imagery.regions import Region

_SELECTION = "app.selection"
_REGION = "app.region"
_TILES = "app.selected_tiles"
_ANALYSIS = "app.analysis"


@dataclass(frozen=True)
class Selection:
    """What the sidebar selected."""

    source_id: str
    model_id: str


@dataclass(frozen=True)
class Analysis:
    """An analysed region: the embedding run's result and the stored records of its tiles."""

    source_id: str
    model_id: str
    region_wkt: str
    result: EmbedResult
    tiles: list[dict[str, Any]] = field(default_factory=list)

    def matches(self, selection: Selection, region: Region | None) -> bool:
        """Whether this analysis is of the region, source and model now selected."""
        return (
            region is not None
            and self.source_id == selection.source_id
            and self.model_id == selection.model_id
            and self.region_wkt == region.geometry.wkt
        )


def set_selection(selection: Selection) -> None:
    st.session_state[_SELECTION] = selection


def get_selection() -> Selection | None:
    value = st.session_state.get(_SELECTION)
    return value if isinstance(value, Selection) else None


def set_region(region: Region | None) -> None:
    """Choose the region (shared by every page); a new region drops the tile selection."""
    old = get_region()
    if (old is None) != (region is None) or (
        old and region and not old.geometry.equals(region.geometry)
    ):
        st.session_state[_TILES] = ()
    st.session_state[_REGION] = region


def region_on(footprint: BaseGeometry) -> Region | None:
    """The chosen region if it touches this footprint (a scene's), else None.

    A region chosen on another scene stays in the session for when the user switches back.
    """
    region = get_region()
    if region is not None and not footprint.intersects(region.geometry):
        return None
    return region


def kept(key: str, default: Any) -> None:
    """Seed a widget from its kept value (Streamlit drops a widget's state on other pages)."""
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(f"{key}.kept", default)


def keep(key: str, value: Any) -> Any:
    """Remember a widget's value under ``<key>.kept`` so :func:`kept` can restore it."""
    st.session_state[f"{key}.kept"] = value
    return value


def get_region() -> Region | None:
    value = st.session_state.get(_REGION)
    return value if isinstance(value, Region) else None


def set_selected_tiles(tile_ids: tuple[str, ...]) -> None:
    st.session_state[_TILES] = tuple(tile_ids)


def get_selected_tiles() -> tuple[str, ...]:
    value = st.session_state.get(_TILES, ())
    return tuple(value)


def set_analysis(analysis: Analysis | None) -> None:
    st.session_state[_ANALYSIS] = analysis


def get_analysis() -> Analysis | None:
    value = st.session_state.get(_ANALYSIS)
    return value if isinstance(value, Analysis) else None
