"""Land-cover heads on stored embedding sets (fused S2 + S1 sets included) with patch labels.

``fit_set_landcover_head`` fits a head on the vectors a model's set already holds, labelled by
the CORINE labels of BigEarthNet patch sources (:mod:`backend.landcover.corine`), and evaluates
it leaving one place out: an S2 patch and the S1 sources paired with it
(:mod:`backend.imagery.pairing`) are one place. ``map_set_landcover`` applies a head to a set's
stored tiles and marks the fused tiles only one sensor covers. The head is an ordinary
``LandCoverHead`` of the set's model id, so the app's land-cover layer and
``predict_scope_landcover`` use it unchanged (``softmap landcover fit --labels patches``).
"""

from __future__ import annotations

from pydantic import Field

from backend.errors import NotFoundError, UnknownHeadError
from backend.imagery.bigearthnet import metadata_file, read_patch_metadata
from backend.imagery.pairing import DEFAULT_WINDOW_DAYS, all_pairs
from backend.landcover.corine import CORINE_MAPPING, patch_soft_labels
from backend.landcover.labels import SoftLabels
from backend.landcover.set_heads import (
    SetHeadFit,
    SetLandCover,
    fit_set_head,
    map_set_landcover,
)
from backend.landcover.store import list_heads, resolve_head
from backend.service.workspace import Request, Workspace

#: The labels ``fit_set_landcover_head`` reads (``--labels patches``).
PATCH_LABELS = "BigEarthNet patch CORINE labels"


class SetHeadRequest(Request):
    """Fit a head on a model's stored set with the patch labels of its sources."""

    model: str = Field(description="any model with a stored set, e.g. <s2 model>+<s1 model>")
    sources: list[str] | None = Field(
        default=None, description="labelled sources to use (default: every BigEarthNet patch)"
    )
    window_days: int = Field(default=DEFAULT_WINDOW_DAYS, ge=0, description="pairing window")


class SetMapRequest(Request):
    """Map the stored tiles of a model's set with one of its heads."""

    model: str
    head: str | None = Field(default=None, description="default: the newest head of the model")
    sources: list[str] | None = Field(default=None, description="default: every source")


def patch_labels(ws: Workspace, sources: list[str] | None = None) -> dict[str, SoftLabels]:
    """Source id → soft label from its BigEarthNet CORINE labels (sources that have them).

    Raises:
        NotFoundError: none of the sources is a labelled BigEarthNet patch.
    """
    catalog = ws.catalog()
    chosen = [catalog.get(s) for s in sources] if sources else catalog.list()
    out: dict[str, SoftLabels] = {}
    for source in chosen:
        path = metadata_file(source.root) if source.root.is_dir() else None
        if path is None:
            continue
        labels = read_patch_metadata(path).labels
        if labels:
            out[source.id] = patch_soft_labels([labels])
    if not out:
        raise NotFoundError(
            "None of the sources is a BigEarthNet patch with CORINE labels: register patch "
            "folders (softmap sources add FOLDER) and embed or fuse them first.",
            title="No patch labels",
        )
    return out


def place_of(ws: Workspace, window_days: int = DEFAULT_WINDOW_DAYS) -> dict[str, str]:
    """Source id → its place: an S1 source belongs to the S2 source it pairs with (closest)."""
    out: dict[str, tuple[int, str]] = {}
    for p in all_pairs(ws.catalog(), window_days=window_days):
        if p.s1.id not in out or p.days_apart < out[p.s1.id][0]:
            out[p.s1.id] = (p.days_apart, p.s2.id)
    return {s1: s2 for s1, (_, s2) in out.items()}


def fit_set_landcover_head(ws: Workspace, req: SetHeadRequest) -> SetHeadFit:
    """Fit, evaluate (leave one place out) and store a head on the model's stored set.

    Raises:
        NotFoundError: no labelled patch source, or the model has no set over them.
        NotEnoughLabelsError: too few labelled tiles or places.
    """
    labels = patch_labels(ws, req.sources)
    places = place_of(ws, req.window_days)
    with ws.cache() as cache:
        return fit_set_head(
            cache,
            req.model,
            labels,
            places,
            mapping=CORINE_MAPPING.name,
            label_name=PATCH_LABELS,
        )


def map_set(ws: Workspace, req: SetMapRequest) -> SetLandCover:
    """Predict (and store) land cover for the set's stored tiles; fallback tiles are marked.

    Raises:
        UnknownHeadError: the model has no head (fit one with ``--labels patches``).
        HeadMismatchError: the head does not read these embeddings.
    """
    with ws.cache() as cache:
        if req.head is None and not list_heads(cache, req.model, ws.settings):
            raise UnknownHeadError(
                f"There is no land-cover head for {req.model}. Fit one on its stored tiles: "
                f"softmap landcover fit --labels patches --model {req.model}."
            )
        head = resolve_head(cache, req.model, req.head, ws.settings)
        return map_set_landcover(cache, head, req.model, req.sources)
