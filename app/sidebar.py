"""The shared sidebar: scene, model with its metadata, device, and what the cache holds."""

from __future__ import annotations

import streamlit as st

from app import resources
from app.errors import show_error, user_errors
from app.state import Selection
from app.timing import render_times
from app.url_state import UrlState
from backend.errors import SoftMapError
from backend.models import ModelMeta, list_models
from backend.models.weights import find_local_weights
from backend.service import FusionChoice, PairsRequest
from backend.service.sensors import split_fused_model_id

#: The CC0 Virginia scene: land, marsh, lagoons and ocean in one view.
DEFAULT_SOURCE = "demo/virginia"
#: The model chosen when a link names none: the first of these whose weights are at hand.
PREFERRED_MODELS = ("softmap-default", "test-vit")
SOURCE_KEY = "sidebar.source"
MODEL_KEY = "sidebar.model"


def seed_from_url(url: UrlState | None, source_ids: list[str], model_ids: list[str]) -> None:
    """Before the widgets exist: take source and model from a link (when they are valid)."""
    if url is None:
        return
    if url.source in source_ids:
        st.session_state[SOURCE_KEY] = url.source
    if url.model in model_ids:
        st.session_state[MODEL_KEY] = url.model


def default_model(models: list[ModelMeta] | None = None) -> str:
    """The app's default model: ``softmap-default`` when its weights are found, else test-vit."""
    metas = {m.id: m for m in (models if models is not None else list_models())}
    for model_id in PREFERRED_MODELS:
        meta = metas.get(model_id)
        if meta is not None and (not meta.weight_files or find_local_weights(meta) is not None):
            return model_id
    return next(iter(metas))


def _default_index(key: str, options: list[str], default: str) -> int | None:
    """The widget's default; None once its value is in session state (from a link)."""
    if key in st.session_state:
        return None
    return options.index(default) if default in options else 0


def weights_status(meta: ModelMeta) -> str:
    """Where the model's weights come from, in a few words."""
    if not meta.weight_files:
        return "built in (seeded random init)" if meta.random_init_seed is not None else "built in"
    found = find_local_weights(meta)
    return f"found: `{found.name}`" if found is not None else "not found locally"


def model_caption(meta: ModelMeta) -> str:
    """One caption line with everything the model takes and gives."""
    patch = f"{meta.patch_size} px patches · " if meta.patch_size else ""
    return (
        f"{meta.architecture} · {meta.sensor} · {len(meta.bands)} bands · "
        f"{meta.chip_size} px chips · {patch}{meta.embed_dim}-d · "
        f"normalisation: {meta.normalization.scheme} · {meta.license}  \n"
        f"Weights: {weights_status(meta)}"
    )


def sidebar(url: UrlState | None) -> Selection | None:
    """Draw the sidebar; returns the selected source and model (None when no source exists)."""
    bar = st.sidebar
    bar.title(":material/satellite_alt: SoftMap")
    bar.caption("Soft-label land cover and similarity search with SoftCon embeddings")
    try:
        sources = resources.catalog().list()
    except SoftMapError as e:
        show_error(e, where=bar)
        return None
    if not sources:
        bar.warning("No scenes found: the bundled demo (assets/scenes) is missing.")
        return None
    labels = {s.id: f"{s.title} ({s.date})" for s in sources}
    source_ids = list(labels)
    models = {m.id: m for m in list_models()}
    model_ids = list(models)
    # A link may name an "S2 + S1" choice; whether it exists for the scene is checked below.
    fused_link = [url.model] if url and url.model and split_fused_model_id(url.model) else []
    seed_from_url(url, source_ids, model_ids + fused_link)
    source_id = bar.selectbox(
        "Scene",
        source_ids,
        index=_default_index(SOURCE_KEY, source_ids, DEFAULT_SOURCE),
        format_func=labels.__getitem__,
        key=SOURCE_KEY,
    )
    partners = _partners_caption(source_id)
    if partners:
        bar.caption(partners)
    missing = {m.id for m in models.values() if m.weight_files and find_local_weights(m) is None}
    fused = _fusion_choices(source_id)
    options = model_ids + list(fused)
    if st.session_state.get(MODEL_KEY) not in (None, *options):
        del st.session_state[MODEL_KEY]  # an "S2 + S1" choice of a scene without a partner
    model_id = bar.selectbox(
        "Model",
        options,
        index=_default_index(MODEL_KEY, options, default_model(list(models.values()))),
        format_func=lambda m: (
            fused[m].label
            if m in fused
            else models[m].title + (" — weights not found" if m in missing else "")
        ),
        key=MODEL_KEY,
        help="SoftCon weights are used when found in the models folder; see README. "
        '"S2 + S1" appears for a scene with a radar (or optical) partner: both sensors\' '
        "embeddings of each tile, joined (softmap fuse).",
    )
    bar.caption(fused[model_id].caption if model_id in fused else model_caption(models[model_id]))
    with user_errors(bar):
        bar.caption(f"Device: **{resources.device_label()}**")
    cache_panel()
    times = render_times()
    if times:
        bar.caption(f"Last render: {times[-1].seconds * 1000:.0f} ms server time")
    return Selection(source_id=source_id, model_id=model_id)


def _partners_caption(source_id: str) -> str:
    """The scene's Sentinel-1 (or Sentinel-2) partners, in one caption line; '' for none."""
    try:
        pairs = resources.operations().list_pairs(PairsRequest(source=source_id))
    except SoftMapError:
        return ""
    if not pairs:
        return ""
    radar = pairs[0].s2.id == source_id
    items = ", ".join(f"`{p.partner_of(source_id).id}` ({p.apart()})" for p in pairs)
    return f"{'Radar (S1)' if radar else 'Optical (S2)'} partner: {items}"


def _fusion_choices(source_id: str) -> dict[str, FusionChoice]:
    """The "S2 + S1" model choices of a scene (none when it has no partner or on an error)."""
    try:
        return {c.model_id: c for c in resources.operations().fusion_choices(source_id)}
    except SoftMapError:
        return {}


def cache_panel() -> None:
    """Size and counts of the cache, or why it cannot be opened (e.g. held by the CLI)."""
    bar = st.sidebar
    try:
        stats = resources.cache_stats()
    except SoftMapError as e:
        show_error(e, where=bar)
        bar.button("Retry opening the cache", key="sidebar.retry_cache")
        return
    bar.caption(
        f"Cache `{stats.path}`: {stats.size_bytes / 1e6:.1f} MB · {stats.tiles} tiles · "
        f"{stats.embeddings} embeddings · {stats.runs} runs"
    )
