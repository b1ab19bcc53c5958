"""A thumbnail gallery with scores: one card per tile, a button on each to select it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st

from app import resources
from app.errors import user_errors
from backend.imagery.preview import Composite


@dataclass(frozen=True)
class GalleryItem:
    """One card: a tile, its rank and score."""

    tile_id: str
    source_id: str
    rank: int
    score: float


def short_id(tile_id: str) -> str:
    """The part of a tile id that differs between tiles of one scene: ``row_col``."""
    return tile_id.rsplit("/", 1)[-1]


def gallery(
    items: Sequence[GalleryItem],
    *,
    selected: str | None,
    on_select: Callable[[str], None],
    key: str,
    columns: int = 3,
    composite: Composite = "true",
) -> None:
    """Draw the cards in rows of ``columns``; a card's button calls ``on_select(tile_id)``.

    The button works through a callback, so the selection is in place before the next run draws
    anything (the map shows it on the same rerun). Thumbnails are cached
    (:func:`app.resources.thumbnail`).
    """
    for start in range(0, len(items), columns):
        row = st.columns(columns)
        for col, item in zip(row, items[start : start + columns], strict=False):
            chosen = item.tile_id == selected
            with col.container(border=True):
                with user_errors():
                    st.image(
                        resources.thumbnail(item.source_id, item.tile_id, composite),
                        width="stretch",
                    )
                st.markdown(
                    f"**#{item.rank}** · `{item.score:.4f}`  \n"
                    f"<span style='font-size:.8em'>{short_id(item.tile_id)}</span>",
                    unsafe_allow_html=True,
                )
                st.button(
                    "Selected" if chosen else "Show match",
                    key=f"{key}.{item.tile_id}",
                    type="primary" if chosen else "secondary",
                    icon=":material/frame_inspect:",
                    on_click=on_select,
                    args=(item.tile_id,),
                    width="stretch",
                )
