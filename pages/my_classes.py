"""My classes: teach the model your own class by marking tiles, then map it.

Create a class, click tiles on the map as positive or negative (or add them by id), train: the
cross-validated accuracy, the probability map and the class's expected area appear and follow
every new label. "Label these next" points at the tiles that would teach the classifier most,
each with one-click positive/negative buttons. Labels export and import as GeoJSON.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import resources
from app.classes_view import (
    CLASS_STAMP,
    ERROR_KEY,
    MAX_LISTED,
    NOTICE_KEY,
    LabelsKey,
    Trained,
    accuracy_text,
    area_text,
    calibration_text,
    classes_layer,
    labels_geojson_text,
    labels_key,
    legend_html,
    mark,
    not_informative,
    suggestions,
    train,
    unmark,
)
from app.errors import show_error, user_errors
from app.gallery import short_id
from app.map_view import imagery_control, records_view, seed_imagery, tiles_map, view_token
from app.projection_view import (
    SCOPES,
    ScopeInputs,
    ScopeKind,
    cached_scope,
    map_tiles,
    model_version,
    tile_at,
)
from app.state import get_analysis, get_selection, keep, kept, region_on, set_region
from app.url_state import UrlState, take_pending_url, write_params, write_url
from backend.service import (
    Scope,
    SoftMapError,
    Suggestions,
    UserClass,
    get_model_meta,
    import_labels,
    parse_tile_id,
)

PAGE = "classes"
CLASS_KEY = "classes.class"
TRAINED_KEY = "classes.trained"
CLICK_MODES = ("Positive", "Negative", "Remove label")
DEFAULT_K = 6


def apply_link(url: UrlState) -> None:
    try:
        region = url.region()
    except SoftMapError as e:
        show_error(e)
        region = None
    if region is not None:
        set_region(region)
    name = (url.extra.get("class") or (None,))[0]
    if name:
        st.session_state[f"{CLASS_KEY}.kept"] = name
    scope = (url.extra.get("scope") or (None,))[0]
    label = next((lbl for lbl, kind in SCOPES.items() if kind == scope), None)
    if label is not None:
        st.session_state["classes.scope.kept"] = label
    if name and (url.extra.get("trained") or (None,))[0] == "1":
        # The classifier is trained again from the stored labels (cached per label set).
        st.session_state.setdefault(TRAINED_KEY, set()).add(name)
    seed_imagery(PAGE, url.extra)


# --- callbacks ----------------------------------------------------------------------------------
def _try(action: Any, *args: Any) -> Any:
    st.session_state.pop(ERROR_KEY, None)
    try:
        return action(*args)
    except SoftMapError as e:
        st.session_state[ERROR_KEY] = e
        return None


def on_create() -> None:
    name = str(st.session_state.get("classes.new_name") or "").strip()
    created = _try(resources.operations().create_class, name)
    if isinstance(created, UserClass):
        st.session_state[f"{CLASS_KEY}.kept"] = created.name
        st.session_state[CLASS_KEY] = created.name
        st.session_state["classes.new_name"] = ""
        st.session_state[NOTICE_KEY] = f"Class '{created.name}' created: mark tiles on the map."


def on_rename(old: str) -> None:
    new = str(st.session_state.get("classes.rename_to") or "").strip()
    renamed = _try(resources.operations().rename_class, old, new)
    if isinstance(renamed, UserClass):
        st.session_state[f"{CLASS_KEY}.kept"] = renamed.name
        st.session_state[CLASS_KEY] = renamed.name
        trained: set[str] = st.session_state.setdefault(TRAINED_KEY, set())
        if old in trained:
            trained.add(renamed.name)
        st.session_state[NOTICE_KEY] = f"Renamed '{old}' to '{renamed.name}'."


def on_delete(name: str) -> None:
    removed = _try(resources.operations().delete_class, name)
    if removed is not None:
        st.session_state.pop(CLASS_KEY, None)
        st.session_state.pop(f"{CLASS_KEY}.kept", None)
        st.session_state[NOTICE_KEY] = f"Deleted '{name}' and its {removed} labels."


def on_add_ids(name: str, positive: bool) -> None:
    text = str(st.session_state.get("classes.ids") or "")
    ids = [t for t in text.replace(",", " ").split() if t]
    mark(name, ids, positive)
    if ERROR_KEY not in st.session_state:
        st.session_state["classes.ids"] = ""


def on_train(name: str) -> None:
    trained: set[str] = st.session_state.setdefault(TRAINED_KEY, set())
    trained.add(name)


# --- pieces -------------------------------------------------------------------------------------
def class_bar(names: list[str]) -> str | None:
    """Choose, create, rename or delete a class; returns the chosen one."""
    cols = st.columns([3, 3, 1], vertical_alignment="bottom")
    chosen: str | None = None
    if names:
        kept(CLASS_KEY, names[0])
        if st.session_state[CLASS_KEY] not in names:
            st.session_state[CLASS_KEY] = names[0]
        chosen = keep(CLASS_KEY, cols[0].selectbox("Class", names, key=CLASS_KEY))
    else:
        cols[0].info("No classes yet: name one to start.", icon=":material/label:")
    with cols[1].container(horizontal=True, vertical_alignment="bottom"):
        st.text_input("New class", key="classes.new_name", placeholder="e.g. salt marsh")
        st.button("Create", key="classes.create", on_click=on_create, icon=":material/add:")
    if chosen is not None:
        with cols[2].popover("Edit", icon=":material/edit:"):
            st.text_input("Rename to", key="classes.rename_to", value=chosen)
            st.button("Rename", key="classes.rename", on_click=on_rename, args=(chosen,))
            st.button(
                f"Delete '{chosen}' with its labels",
                key="classes.delete",
                on_click=on_delete,
                args=(chosen,),
                type="primary",
                icon=":material/delete:",
            )
    return chosen


def labels_panel(name: str, key: LabelsKey, examples: list[str]) -> None:
    """The labels with a remove button each, adding by id, export and import.

    ``examples``: tile ids of this model and scene for the placeholder (ids name the chip and
    stride, ``{source}/{chip}/{stride}/{row}_{col}``, so they differ between models).
    """
    pos = sum(p for _, p in key)
    st.markdown(f"**{pos} positive · {len(key) - pos} negative** labels")
    with st.expander("Labels", expanded=0 < len(key) <= 12):
        for tile, positive in key[:MAX_LISTED]:
            row = st.container(horizontal=True, vertical_alignment="center")
            icon = ":material/add_circle:" if positive else ":material/do_not_disturb_on:"
            row.markdown(f"{icon} `{short_id(tile)}`", help=tile)
            row.button(
                "Remove", key=f"classes.rm.{tile}", on_click=unmark, args=(name, [tile]),
                type="tertiary", icon=":material/close:",
            )  # fmt: skip
        if len(key) > MAX_LISTED:
            st.caption(f"… and {len(key) - MAX_LISTED} more (export to see them all).")
        if not key:
            st.caption("None yet: click tiles on the map.")
    st.text_input(
        "Add tiles by id (spaces or commas)", key="classes.ids",
        placeholder=" ".join(examples[:2]),
    )  # fmt: skip
    row = st.container(horizontal=True)
    row.button("Add as positive", key="classes.add_pos", on_click=on_add_ids,
               args=(name, True), icon=":material/add_circle:")  # fmt: skip
    row.button("Add as negative", key="classes.add_neg", on_click=on_add_ids,
               args=(name, False), icon=":material/do_not_disturb_on:")  # fmt: skip
    io = st.container(horizontal=True, vertical_alignment="bottom")
    io.download_button(
        "Export labels (GeoJSON)", labels_geojson_text(name, key),
        file_name=f"{name.replace(' ', '_')}-labels.geojson", mime="application/geo+json",
        key="classes.export", icon=":material/download:", disabled=not key,
    )  # fmt: skip
    upload = st.file_uploader(
        "Import labels (GeoJSON from an export)", type=["geojson", "json"], key="classes.import"
    )
    if upload is not None and st.session_state.get("classes.import_seen") != upload.file_id:
        st.session_state["classes.import_seen"] = upload.file_id
        with user_errors():
            changes = import_labels(resources.workspace(), _json(upload.getvalue()))
            n = sum(c.tiles for c in changes)
            st.session_state[NOTICE_KEY] = (
                f"Imported {n} labels into {', '.join(sorted({c.class_name for c in changes}))}."
            )
            st.rerun()


def _json(data: bytes) -> dict[str, Any]:
    import json

    try:
        value = json.loads(data)
    except ValueError as e:
        raise SoftMapError(f"The file is not JSON: {e}.", title="Bad labels") from e
    if not isinstance(value, dict):
        raise SoftMapError("The file is not a GeoJSON FeatureCollection.", title="Bad labels")
    return value


def suggestion_gallery(name: str, found: Suggestions) -> None:
    """The suggested tiles: thumbnail, probability, and one-click positive/negative."""
    st.subheader("Label these next", anchor=False)
    st.caption(
        f"The {len(found.suggestions)} tiles (of {found.candidates} unlabelled) the classifier "
        "is least sure about, spread out in embedding space; numbered on the map."
    )
    cols = st.columns(max(len(found.suggestions), 1))
    for i, (col, s) in enumerate(zip(cols, found.suggestions, strict=False), start=1):
        with col.container(border=True):
            with user_errors():
                st.image(
                    resources.thumbnail(parse_tile_id(s.tile_id)[0], s.tile_id), width="stretch"
                )
            st.markdown(f"**{i}** · `{short_id(s.tile_id)}` · p {s.probability:.2f}")
            row = st.container(horizontal=True)
            row.button("Yes", key=f"classes.sug_pos.{s.tile_id}", on_click=mark,
                       args=(name, [s.tile_id], True), icon=":material/add_circle:")  # fmt: skip
            row.button("No", key=f"classes.sug_neg.{s.tile_id}", on_click=mark,
                       args=(name, [s.tile_id], False),
                       icon=":material/do_not_disturb_on:")  # fmt: skip


def page() -> None:
    selection = get_selection()
    if selection is None:
        st.stop()
    source = resources.catalog().get(selection.source_id)
    meta = get_model_meta(selection.model_id)
    url = take_pending_url()
    if url is not None:
        apply_link(url)
    region = region_on(source.footprint_lonlat)
    db = str(resources.db_path())

    st.header("My classes", anchor=False)
    st.caption(
        f"Teach **{meta.title}** a class of your own: mark tiles as positive or negative, train, "
        "and see where else it is. Labels belong to tiles, so they work for every model."
    )
    analysis = get_analysis()
    write_url(
        page=PAGE, source=selection.source_id, model=selection.model_id, region=region,
        analysed=analysis is not None and analysis.matches(selection, region),
    )  # fmt: skip
    error = st.session_state.get(ERROR_KEY)
    if isinstance(error, SoftMapError):
        show_error(error)
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        st.success(notice, icon=":material/check_circle:")
    try:
        names = [c.name for c in resources.operations().list_classes()]
        version = model_version(selection.model_id)
    except SoftMapError as e:
        show_error(e)
        return
    name = class_bar(names)
    if not version:
        st.info(
            f"Nothing is cached for {meta.title} yet: analyse a region on Explore, then label "
            "its tiles here.",
            icon=":material/database:",
        )
        st.page_link("../pages/explore.py", label="Choose and analyse a region", icon="🗺️")
        return

    controls = st.columns([4, 3, 4])
    kept("classes.scope", "This region" if region is not None else "This scene")
    scope_label = keep(
        "classes.scope",
        controls[0].radio("Train and map over", list(SCOPES), key="classes.scope", horizontal=True),
    )
    kind: ScopeKind = SCOPES.get(str(scope_label), "source")
    if kind == "region" and region is None:
        kind = "source"
    kept("classes.click_mode", CLICK_MODES[0])
    click_mode = keep(
        "classes.click_mode",
        controls[1].segmented_control(
            "A click on the map marks", CLICK_MODES, key="classes.click_mode", required=True
        ),
    )
    imagery, imagery_param = imagery_control(PAGE, controls[2])
    inputs = ScopeInputs(
        selection.model_id, kind, source.id, region.geometry.wkt if region is not None else None
    )
    try:
        scope: Scope = cached_scope(db, inputs, version)
    except SoftMapError as e:
        show_error(e)
        return

    key: LabelsKey = labels_key(name) if name is not None else ()
    marked = dict(key)
    trained: Trained | None = None
    found: Suggestions | None = None
    active = name is not None and name in st.session_state.get(TRAINED_KEY, set())
    if active and name is not None:
        with user_errors():
            trained = train(db, name, inputs, version, key)
            st.session_state[CLASS_STAMP] = hash((name, key, version))
        if trained is not None:
            with user_errors():
                found = suggestions(db, name, inputs, version, key, DEFAULT_K)

    left, right = st.columns([3, 2])
    with left:
        recs = map_tiles(db, scope, source.id)
        layer = classes_layer(
            recs, marked, trained.probabilities() if trained else None,
            found.suggestions if found else (),
        )  # fmt: skip
        # Opens on the scope's tiles; a view the user moved to is kept until the scope changes.
        view = records_view(recs, view_token(kind, inputs.region_wkt))
        drawn = (
            [r["tile_id"] for r in recs], marked, trained.probabilities() if trained else None,
            repr(found.suggestions) if found else None,
        )  # fmt: skip
        events = tiles_map(PAGE, source, region, imagery, [layer], view, layers_key=drawn)
        st.markdown(legend_html(), unsafe_allow_html=True)
        st.caption(f"{scope.describe()}.")
    with right:
        if name is None:
            st.markdown("**Start** — create a class above, then click tiles on the map.")
        else:
            examples = [str(r["tile_id"]) for r in recs[:2]] or [
                f"{source.id}/{meta.chip_size}/{meta.tile_stride}/{rc}" for rc in ("9_6", "9_7")
            ]
            labels_panel(name, key, examples)
            st.button(
                "Train" if not active else "Retrain", key="classes.train", type="primary",
                on_click=on_train, args=(name,), icon=":material/model_training:",
                disabled=not key,
                help="Logistic regression on the labelled tiles' embeddings; updates with "
                "every new label once trained.",
            )  # fmt: skip
            if trained is not None:
                st.markdown(accuracy_text(trained.report))
                note = not_informative(trained)
                if note is not None:
                    st.warning(note, icon=":material/help:")
                st.markdown(area_text(trained))
                high = int((trained.classification.probabilities >= 0.5).sum())
                st.caption(
                    f"{len(trained.classification.tile_ids)} tiles mapped, {high} with "
                    f"p ≥ 0.5; {calibration_text(trained.report)}; "
                    f"trained in {trained.report.seconds:.2f} s."
                )
            elif active:
                st.caption("Mark at least one positive and one negative tile to train.")
    if events.clicked is not None and name is not None:
        tile = tile_at(recs, *events.clicked)
        if tile is None:
            st.warning("No tile of this scope there: click inside a white outline.")
        else:
            if click_mode == CLICK_MODES[2]:
                unmark(name, [tile])
            else:
                mark(name, [tile], click_mode == CLICK_MODES[0])
            st.rerun()
    if found is not None and name is not None and found.suggestions:
        suggestion_gallery(name, found)
    write_params(
        {
            "class": name,
            "scope": kind if kind != ("region" if region is not None else "source") else None,
            "trained": "1" if trained is not None else None,
            "img": imagery_param,
        }
    )


page()
