"""The user's own classes: scopes of embedded tiles, labels, classifiers and suggestions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from backend.classes import user_classes as uc
from backend.classes.active_learning import Suggestions, suggest
from backend.classes.classifier import Classification, classify_scope
from backend.errors import SoftMapError
from backend.imagery.regions import Region
from backend.imagery.tiling import parse_tile_id
from backend.landcover.areas import ClassArea
from backend.outputs.exports import (
    ExportResult,
    export_areas_csv,
    export_probability_map,
    export_tiles,
    tile_format,
)
from backend.service.workspace import RegionSpec, Request, Workspace
from backend.store.cache import EmbeddingCache
from backend.store.scopes import (
    Scope,
    embedding_sets_for,
    resolve_scope,
    tiles_at_point,
    tiles_in_geometry,
)


# --- scopes --------------------------------------------------------------------------------
class ScopeRequest(Request):
    """The embedded tiles of a model in a region (of a source), a source, or everything."""

    model: str = Field(description="model id whose embeddings to use")
    source: str | None = None
    region: RegionSpec | None = None


def resolve(ws: Workspace, cache: EmbeddingCache, req: ScopeRequest) -> tuple[Scope, Region | None]:
    """The scope a request names and its region (the source is checked to exist).

    Raises:
        UnknownSourceError, InvalidRegionError, NoEmbeddingsError, EmptyScopeError.
    """
    if req.source:
        ws.source(req.source)
    region = req.region.resolve() if req.region else None
    return resolve_scope(cache, req.model, region=region, source_id=req.source), region


def scope_json(scope: Scope) -> dict[str, Any]:
    """A scope as listed in JSON outputs."""
    return {
        "kind": scope.kind,
        "key": scope.key,
        "source": scope.source_id,
        "model": scope.eset.model_id,
        "preprocessing_hash": scope.eset.preprocessing_hash,
        "tiles": len(scope.tile_ids),
    }


def single_source(tile_ids: tuple[str, ...], source_id: str | None) -> str:
    """The one source a map is drawn on (the scope's, or the only source of its tiles).

    Raises:
        SoftMapError: the tiles span several sources and none was named.
    """
    if source_id:
        return source_id
    sources = sorted({parse_tile_id(t)[0] for t in tile_ids})
    if len(sources) != 1:
        raise SoftMapError(
            f"The scope spans {len(sources)} sources: name the source for the map.",
            title="Invalid option",
        )
    return sources[0]


# --- labels --------------------------------------------------------------------------------
class TileSelection(Request):
    """Tiles named by id, by points inside them, or by a region holding their centres."""

    tiles: tuple[str, ...] = ()
    points: tuple[tuple[float, float], ...] = Field(default=(), description="(lon, lat) each")
    region: RegionSpec | None = None
    model: str | None = Field(default=None, description="only tiles embedded with this model")


def select_tiles(cache: EmbeddingCache, sel: TileSelection) -> tuple[list[str], str]:
    """The tile ids a selection names and how they were chosen (``id+point+polygon``).

    Raises:
        SoftMapError: the selection is empty or names no cached tile.
    """
    eset = None
    if sel.model:
        eset = max(embedding_sets_for(cache, sel.model), key=lambda s: s.set_id)
    ids = list(sel.tiles)
    origins = ["id"] if sel.tiles else []
    for lon, lat in sel.points:
        ids.append(tiles_at_point(cache, lon, lat, eset))
        origins.append("point")
    if sel.region is not None:
        region = sel.region.resolve()
        inside = tiles_in_geometry(cache, region.geometry, eset)
        if not inside:
            raise SoftMapError(
                f"No cached tile has its centre inside {region.describe()}.", title="Invalid option"
            )
        ids += inside
        origins.append("polygon")
    if not ids:
        raise SoftMapError(
            "Name the tiles: by id, by a point, or by a region.", title="Invalid option"
        )
    return ids, "+".join(origins)


def add_labels(
    ws: Workspace,
    name: str,
    sel: TileSelection,
    *,
    positive: bool = True,
    origin: str | None = None,
) -> uc.LabelChange:
    """Mark tiles positive (or negative) for a class, creating the class if new."""
    with ws.cache() as cache:
        ids, how = select_tiles(cache, sel)
        return uc.add_labels(cache, name, ids, positive=positive, origin=origin or how)


def remove_labels(ws: Workspace, name: str, sel: TileSelection) -> uc.LabelChange:
    """Remove tiles' labels from a class."""
    with ws.cache() as cache:
        ids, _ = select_tiles(cache, sel)
        return uc.remove_labels(cache, name, ids)


def list_classes(ws: Workspace) -> list[uc.UserClass]:
    """Every class with its label counts."""
    with ws.cache(read_only=True) as cache:
        return uc.classes(cache)


def class_labels(ws: Workspace, name: str | None = None) -> list[uc.Label]:
    """One class's labels (or every label)."""
    with ws.cache(read_only=True) as cache:
        return uc.labels(cache, name)


def labels_geojson(ws: Workspace, name: str | None = None) -> dict[str, Any]:
    """Labels as a GeoJSON FeatureCollection (tile footprints with class and sign)."""
    with ws.cache(read_only=True) as cache:
        return uc.labels_geojson(cache, name)


def create_class(ws: Workspace, name: str, *, exist_ok: bool = False) -> uc.UserClass:
    """A new (empty) class.

    Raises:
        SoftMapError: the name is empty, too long or taken (unless ``exist_ok``).
    """
    with ws.cache() as cache:
        return uc.create_class(cache, name, exist_ok=exist_ok)


def rename_class(ws: Workspace, old: str, new: str) -> uc.UserClass:
    with ws.cache() as cache:
        return uc.rename_class(cache, old, new)


def delete_class(ws: Workspace, name: str) -> int:
    """Delete a class, its labels and predictions; returns the labels removed."""
    with ws.cache() as cache:
        return uc.delete_class(cache, name)


def export_labels(ws: Workspace, path: Path, name: str | None = None) -> int:
    """Write labels as GeoJSON; returns the features written."""
    with ws.cache(read_only=True) as cache:
        return uc.export_labels(cache, path, name)


def import_labels(ws: Workspace, data: Path | Mapping[str, Any]) -> list[uc.LabelChange]:
    """Add labels written by :func:`export_labels` (a file or its parsed GeoJSON; classes are
    created as needed)."""
    with ws.cache() as cache:
        return uc.import_labels(cache, data)


# --- classifiers ---------------------------------------------------------------------------
class ClassifyRequest(Request):
    """Train a class's classifier and predict it over a scope (``softmap classify``)."""

    name: str = Field(description="class name")
    scope: ScopeRequest
    map: Path | None = Field(default=None, description="also write the probability COG")
    out: Path | None = Field(default=None, description="also write tiles + probability")
    areas: Path | None = Field(default=None, description="also write the area table (.csv)")


@dataclass(frozen=True)
class ClassifyOutcome:
    """Predictions over the scope, the class's area and the files written."""

    name: str
    scope: Scope
    classification: Classification
    areas: list[ClassArea]
    files: list[ExportResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        probs = self.classification.probabilities
        return {
            "class": self.name,
            "scope": scope_json(self.scope),
            "classifier": self.classification.report.to_json(),
            "tiles": len(self.classification.tile_ids),
            "predicted_positive": int((probs >= 0.5).sum()),
            "mean_probability": round(float(probs.mean()), 4),
            "areas": [a.to_json() for a in self.areas],
            "files": [f.to_json() for f in self.files],
            "seconds": self.classification.seconds,
        }


def classify(ws: Workspace, req: ClassifyRequest) -> ClassifyOutcome:
    """Train on the current labels, predict and store P(class) over the scope, sum the area.

    Raises:
        UnknownClassError, NotEnoughLabelsError: with how many labels are needed.
    """
    if req.out is not None:
        tile_format(req.out)
    files: list[ExportResult] = []
    with ws.cache() as cache:
        scope, region = resolve(ws, cache, req.scope)
        result = classify_scope(cache, req.name, scope)
        areas = result.areas(cache, region.geometry if region else None)
        if req.out is not None:
            files.append(
                export_tiles(req.out, cache, result.tile_ids, {"probability": result.probabilities})
            )
    if req.map is not None:
        source = ws.source(single_source(result.tile_ids, scope.source_id))
        files.append(
            export_probability_map(
                req.map,
                source,
                result.tile_ids,
                result.probabilities,
                [req.name],
                tags={"class": req.name, "model": scope.eset.model_id},
            )
        )
    if req.areas is not None:
        extra = {"model": scope.eset.model_id, "scope": scope.key}
        files.append(export_areas_csv(req.areas, areas, extra))
    return ClassifyOutcome(req.name, scope, result, areas, files)


class SuggestRequest(Request):
    """The tiles to label next for a class (``softmap suggest``)."""

    name: str
    scope: ScopeRequest
    k: int = Field(default=10, ge=1, description="how many tiles")


@dataclass(frozen=True)
class SuggestOutcome:
    name: str
    scope: Scope
    suggestions: Suggestions

    def to_json(self) -> dict[str, Any]:
        found = self.suggestions
        return {
            "class": self.name,
            "scope": scope_json(self.scope),
            "classifier": found.report.to_json(),
            "candidates": found.candidates,
            "suggestions": [s.to_json() for s in found.suggestions],
        }


def suggest_labels(ws: Workspace, req: SuggestRequest) -> SuggestOutcome:
    """Uncertain tiles, spread out by farthest-point order, never labelled ones."""
    with ws.cache(read_only=True) as cache:
        scope, _ = resolve(ws, cache, req.scope)
        return SuggestOutcome(req.name, scope, suggest(cache, req.name, scope, k=req.k))


def classify_in(ws: Workspace, name: str, scope: Scope) -> tuple[Classification, list[ClassArea]]:
    """Train on the current labels and predict a resolved scope (stored), with the class's
    expected area inside the scope's region (or all of it)."""
    with ws.cache() as cache:
        result = classify_scope(cache, name, scope)
        region = scope.region.geometry if scope.region is not None else None
        return result, result.areas(cache, region)


def suggest_in(ws: Workspace, name: str, scope: Scope, k: int = 10) -> Suggestions:
    """``k`` unlabelled tiles of a resolved scope that would teach the classifier most."""
    with ws.cache(read_only=True) as cache:
        return suggest(cache, name, scope, k=k)
