"""Views across many tiles: 2-D projections of a scope, and change between two dates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from backend.analysis.change import ChangeResult, detect_change
from backend.analysis.projection import Method, Projection, ProjectionParams, project
from backend.outputs.exports import ExportResult, export_tiles, tile_format
from backend.service.classes import ScopeRequest, resolve, scope_json
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace
from backend.store.scopes import Scope


class ProjectRequest(Request):
    """A 2-D UMAP or PCA projection of a scope (``softmap project``)."""

    scope: ScopeRequest
    method: Method = "umap"
    pca_dims: int = Field(default=50, ge=0, description="PCA before UMAP (0 = none)")
    neighbors: int = Field(default=15, ge=2, description="UMAP n_neighbors")
    min_dist: float = Field(default=0.1, ge=0, description="UMAP min_dist")
    epochs: int | None = Field(default=None, ge=1, description="UMAP n_epochs")
    seed: int | None = 0
    refit: bool = Field(default=False, description="fit again even if cached")
    out: Path | None = Field(default=None, description="write tile, x, y (.geojson/.parquet)")

    @property
    def params(self) -> ProjectionParams:
        return ProjectionParams(
            method=self.method,
            pca_dims=self.pca_dims,
            n_neighbors=self.neighbors,
            min_dist=self.min_dist,
            n_epochs=self.epochs,
            seed=self.seed,
        )


@dataclass(frozen=True)
class ProjectOutcome:
    """The projection of a scope and the file written (if any)."""

    scope: Scope
    projection: Projection
    written: ExportResult | None = None

    def to_json(self, *, points: bool = False) -> dict[str, Any]:
        out = {"scope": scope_json(self.scope), **self.projection.to_json(points=points)}
        if self.written is not None:
            out["file"] = self.written.to_json()
        return out


def project_scope(ws: Workspace, req: ProjectRequest) -> ProjectOutcome:
    """Coordinates for every tile of the scope: cached, placed by ``transform``, or fitted."""
    if req.out is not None:
        tile_format(req.out)
    with ws.cache() as cache:
        scope, _ = resolve(ws, cache, req.scope)
        result = project(cache, scope, req.params, refit=req.refit)
        written = None
        if req.out is not None:
            xy = {"x": result.xy[:, 0], "y": result.xy[:, 1]}
            written = export_tiles(req.out, cache, result.tile_ids, xy)
    return ProjectOutcome(scope, result, written)


def scope_projection(
    ws: Workspace, scope: Scope, params: ProjectionParams, *, refit: bool = False
) -> Projection:
    """The projection of an already resolved scope (the app resolves scopes once per view)."""
    with ws.cache() as cache:
        return project(cache, scope, params, refit=refit)


class ChangeRequest(Request):
    """Per-tile embedding change between two dates of a region (``softmap change``)."""

    before: str = Field(description="source id of the earlier acquisition")
    after: str = Field(description="source id of the later acquisition")
    region: RegionSpec
    model: str
    engine: EngineOptions = EngineOptions()
    k: int = Field(default=10, ge=1, description="most-changed tiles to list")
    out: Path | None = Field(default=None, description="write the distance map as a COG")


def detect_region_change(ws: Workspace, req: ChangeRequest) -> ChangeResult:
    """Embed the region in both sources (what is missing), match tiles, rank by distance."""
    before, after = ws.source(req.before), ws.source(req.after)
    region = req.region.resolve()
    engine = ws.engine(req.model, req.engine)
    with ws.cache() as cache:
        return detect_change(
            region,
            before,
            after,
            engine.model,
            cache,
            k=req.k,
            out=req.out,
            engine=engine,
            settings=ws.settings,
            catalog=ws.catalog(),
        )
