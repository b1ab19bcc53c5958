"""SoftMap's Streamlit entry point: page config, the shared sidebar and page navigation.

Run from the repository root: ``streamlit run app/main.py`` (or ``make run``).
"""

from __future__ import annotations

import streamlit as st

from app import resources
from app.errors import user_errors
from app.state import Selection, set_selection
from backend.models import list_models
from backend.models.weights import find_local_weights
from backend.settings import get_settings

st.set_page_config(page_title="SoftMap", page_icon="🛰️", layout="wide")

#: The CC0 Virginia scene: land, marsh, lagoons and ocean in one view.
DEFAULT_SOURCE = "demo/virginia"


def sidebar() -> None:
    """Source and model choice, shared by every page."""
    st.sidebar.title(":material/satellite_alt: SoftMap")
    st.sidebar.caption("Soft-label land cover and similarity search with SoftCon embeddings")
    with user_errors():
        sources = resources.catalog().list()
        labels = {s.id: f"{s.title} ({s.date})" for s in sources}
        ids = list(labels)
        source_id = st.sidebar.selectbox(
            "Scene",
            ids,
            index=ids.index(DEFAULT_SOURCE) if DEFAULT_SOURCE in ids else 0,
            format_func=labels.__getitem__,
            key="sidebar.source",
        )
        models = {m.id: m for m in list_models()}
        missing = {
            m.id for m in models.values() if m.weight_files and find_local_weights(m) is None
        }
        model_id = st.sidebar.selectbox(
            "Model",
            list(models),
            index=list(models).index("test-vit"),
            format_func=lambda m: (
                models[m].title + (" — weights not found" if m in missing else "")
            ),
            key="sidebar.model",
            help="SoftCon weights are used when found in the models folder; see README.",
        )
        meta = models[model_id]
        st.sidebar.caption(
            f"{meta.architecture} · {len(meta.bands)} bands · {meta.chip_size} px chips · "
            f"{meta.embed_dim}-d · normalisation: {meta.normalization.scheme} · {meta.license}"
        )
        st.sidebar.caption(f"Cache: `{get_settings().db_path}`")
        set_selection(Selection(source_id=source_id, model_id=model_id))


sidebar()
page = st.navigation(
    [st.Page("../pages/embed.py", title="Embed a region", icon=":material/grid_on:")]
)
page.run()
