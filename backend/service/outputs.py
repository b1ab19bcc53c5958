"""What leaves SoftMap: class exports, embeddings, land-cover downloads and the HTML report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from backend.classes.classifier import classify_scope
from backend.errors import SoftMapError
from backend.landcover.maps import LandCoverResult
from backend.landcover.store import resolve_head
from backend.models.inference import ProgressCallback
from backend.outputs.exports import (
    ExportResult,
    check_export_path,
    export_areas_csv,
    export_embeddings,
    export_probability_map,
    export_tiles,
)
from backend.outputs.report import EXPORTS, ExportKind, build_report, export_name, write_export
from backend.outputs.report_model import Report
from backend.service.classes import ScopeRequest, resolve, scope_json, single_source
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace
from backend.store.scopes import Scope

ExportWhat = Literal["predictions", "map", "areas", "embeddings"]


class ExportRequest(Request):
    """A file other tools open (``softmap export``).

    Class exports retrain the class's classifier on the current labels and predict the scope
    (storing the predictions, as ``classify`` does), so a file never shows stale labels.
    """

    kind: ExportWhat
    class_name: str | None = Field(default=None, description="user class (not for embeddings)")
    scope: ScopeRequest
    out: Path


@dataclass(frozen=True)
class ExportOutcome:
    kind: ExportWhat
    scope: Scope
    written: ExportResult

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "scope": scope_json(self.scope), **self.written.to_json()}


def export(ws: Workspace, req: ExportRequest) -> ExportOutcome:
    """Write predictions (GeoJSON/GeoParquet), a probability COG, an area CSV or embeddings.

    Raises:
        SoftMapError: a class export without a class; an unknown file format.
    """
    if req.kind != "embeddings" and not req.class_name:
        raise SoftMapError(f"Exporting {req.kind} needs a class.", title="Invalid option")
    check_export_path(req.kind, req.out)  # before any work: e.xlsx is refused, not written
    with ws.cache(read_only=req.kind == "embeddings") as cache:
        scope, region = resolve(ws, cache, req.scope)
        if req.kind == "embeddings":
            return ExportOutcome(
                req.kind, scope, export_embeddings(req.out, cache, scope.eset, list(scope.tile_ids))
            )
        assert req.class_name is not None
        result = classify_scope(cache, req.class_name, scope)
        if req.kind == "predictions":
            columns = {"probability": result.probabilities}
            return ExportOutcome(
                req.kind, scope, export_tiles(req.out, cache, result.tile_ids, columns)
            )
        if req.kind == "areas":
            areas = result.areas(cache, region.geometry if region else None)
            extra = {"model": scope.eset.model_id, "scope": scope.key}
            return ExportOutcome(req.kind, scope, export_areas_csv(req.out, areas, extra))
    source = ws.source(single_source(result.tile_ids, scope.source_id))
    written = export_probability_map(
        req.out,
        source,
        result.tile_ids,
        result.probabilities,
        [req.class_name],
        tags={"class": req.class_name, "model": scope.eset.model_id},
    )
    return ExportOutcome(req.kind, scope, written)


class ReportRequest(Request):
    """A region's land-cover report as one self-contained HTML page (``softmap report``)."""

    source: str
    region: RegionSpec
    model: str
    head: str | None = None
    classes: tuple[str, ...] | None = Field(
        default=None, description="user classes to include (None: every trained one; (): none)"
    )
    out: Path | None = Field(default=None, description="write the page here (.html)")
    engine: EngineOptions = EngineOptions()


def report(
    ws: Workspace,
    req: ReportRequest,
    *,
    landcover: LandCoverResult | None = None,
    progress: ProgressCallback | None = None,
) -> Report:
    """Map the region (embedding what is missing), gather classes and provenance, render HTML.

    ``landcover`` reuses a map already made (the app's), so the report shows the same numbers.
    """
    source = ws.source(req.source)
    region = req.region.resolve()
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        resolve_head(cache, engine.model.meta.id, req.head)  # fail before embedding
        page = build_report(
            region,
            source,
            engine.model,
            cache,
            landcover=landcover,
            class_names=req.classes,
            head=req.head,
            engine=engine,
            settings=ws.settings,
            progress=progress,
        )
    if req.out is not None:
        req.out.parent.mkdir(parents=True, exist_ok=True)
        req.out.write_text(page.html, encoding="utf-8")
    return page


def landcover_download(
    ws: Workspace, kind: ExportKind, result: LandCoverResult, path: Path
) -> ExportResult:
    """One of the files offered next to a land-cover map (see :data:`LANDCOVER_EXPORTS`)."""
    with ws.cache(read_only=True) as cache:
        return write_export(kind, path, result, cache)


#: The downloads offered next to a land-cover map, and their file names.
LANDCOVER_EXPORTS = EXPORTS
LandCoverExportKind = ExportKind
landcover_export_name = export_name
