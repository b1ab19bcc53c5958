"""The panel for a clicked tile: thumbnails, id, coordinates, nodata fraction, and sections
(e.g. class-probability bars) beside them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from app import resources
from app.errors import user_errors
from backend.imagery.sources import SceneSource

#: Extra sections under the tile's facts (e.g. class-probability bars), given the tile record.
TileSection = Callable[[Mapping[str, Any]], None]


def tile_panel(
    source: SceneSource, record: Mapping[str, Any], sections: tuple[TileSection, ...] = ()
) -> None:
    """Show one tile. ``record`` is a stored tile record (``EmbeddingCache.tiles``)."""
    tile_id = str(record["tile_id"])
    st.subheader(f"Tile {tile_id}", anchor=False)
    facts, extra = st.columns([3, 2]) if sections else (st.container(), None)
    with facts:
        with user_errors():
            left, right = st.columns(2)
            left.image(resources.thumbnail(source.id, tile_id, "true"), caption="True colour")
            right.image(
                resources.thumbnail(source.id, tile_id, "false"), caption="False colour (NIR)"
            )
        lon, lat = float(record["lon"]), float(record["lat"])
        st.markdown(
            f"Centre **{lat:.5f}, {lon:.5f}** (lat, lon) · row {record['row']}, "
            f"col {record['col']} · {record['chip']} px chip "
            f"({record['chip'] * source.grid.resolution / 1000:.2f} km) · "
            f"nodata **{float(record['nodata_fraction'] or 0):.1%}**"
        )
        st.caption(
            f"Bounds W {record['min_lon']:.5f}, S {record['min_lat']:.5f}, "
            f"E {record['max_lon']:.5f}, N {record['max_lat']:.5f}"
        )
    if extra is not None:
        with extra:
            for section in sections:
                section(record)
