"""Shared, never-mutated resources for every session (``st.cache_resource``)."""

from __future__ import annotations

import streamlit as st

from backend.inference import EmbeddingEngine
from backend.models import EmbeddingModel, create_model
from backend.sources import SourceCatalog, demo_catalog


@st.cache_resource(show_spinner=False)
def catalog() -> SourceCatalog:
    return demo_catalog()


@st.cache_resource(show_spinner="Loading model…", max_entries=2)
def model(model_id: str) -> EmbeddingModel:
    return create_model(model_id)


@st.cache_resource(show_spinner=False, max_entries=2)
def engine(model_id: str) -> EmbeddingEngine:
    return EmbeddingEngine.from_settings(model(model_id))
