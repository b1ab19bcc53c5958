"""What the app asks of the backend, in-process or through a SoftMap service, behind one object.

:func:`app.resources.operations` returns an :class:`InProcess` (the application layer on the
app's own workspace, as ``make run`` does) or, with ``SOFTMAP_BACKEND_URL`` set, a
:class:`ThroughService` (the typed HTTP client of ``softmap serve``; ``SOFTMAP_BACKEND_TOKEN``
is its bearer token). Both have the same methods and return the same types, so a view calls
``resources.operations().embed(request, progress)`` without knowing where the work runs.

Through a service the app never opens the DuckDB file: the service holds it (and the GPU).
The scenes' pixels (maps, thumbnails) are read from the app's own copy of the bundled scenes,
so only scenes both sides have are offered. Views not served yet raise
:class:`NotThroughServiceError`, which the page shows as one line.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from backend.service import (
    ChangeMap,
    ChangeRequest,
    ClassifyRequest,
    EmbedRequest,
    FusionChoice,
    LandCoverExportKind,
    LandCoverRequest,
    LandCoverResult,
    MatchHeatmap,
    PairsRequest,
    Progress,
    ProgressCallback,
    Projection,
    ProjectRequest,
    Region,
    RegionSpec,
    ReportRequest,
    Scope,
    ScopeRequest,
    SearchRequest,
    SearchResponse,
    SoftMapError,
    Suggestions,
    SuggestRequest,
    TileSelection,
    UserClass,
    add_labels,
    class_labels,
    classify_in,
    compare_dates,
    create_class,
    delete_class,
    embed,
    find_similar,
    fusion_choices,
    labels_geojson,
    landcover_download,
    landcover_export_name,
    landcover_heads,
    list_classes,
    list_pairs,
    map_landcover,
    model_version,
    overlapping_in,
    overlapping_sources,
    records,
    region_tiles,
    remove_labels,
    rename_class,
    report,
    resolve_scope,
    result_heatmap,
    scope_projection,
    suggest_in,
    tile_records,
    tile_under,
)

if TYPE_CHECKING:
    from backend.analysis.projection import ProjectionParams
    from backend.classes.classifier import Classification
    from backend.classes.user_classes import Label
    from backend.client import SoftMapClient
    from backend.embedding.pipeline import EmbedResult
    from backend.imagery.sources import SceneSource, SourceCatalog
    from backend.landcover.areas import ClassArea
    from backend.service import DataVersion, Workspace
    from backend.store.cache import CacheStats

#: Land-cover maps whose service job this app remembers (for their downloads).
MAPS_KEPT = 8
#: Tile ids asked for in one ``GET /tiles`` (its query string stays well under the URL limit).
TILES_PER_REQUEST = 200


#: The Change page's progress: one callback per date's embedding (a bar each).
DateProgress = Callable[["SceneSource"], ProgressCallback | None]


class NotThroughServiceError(SoftMapError):
    title = "Not available through the service"


class Operations(Protocol):
    """The backend calls of the app's main path (sources, analyse, land cover, search)."""

    #: Where the work runs, for the sidebar: ``in-process`` or the service's URL.
    where: str

    def catalog(self) -> SourceCatalog: ...
    def cache_stats(self) -> CacheStats: ...
    def embed(self, req: EmbedRequest, progress: ProgressCallback | None = None) -> EmbedResult: ...
    def tile_records(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]: ...
    def map_landcover(
        self, req: LandCoverRequest, progress: ProgressCallback | None = None
    ) -> LandCoverResult: ...
    def landcover_heads(self, model_id: str) -> list[str]: ...
    def find_similar(self, req: SearchRequest) -> SearchResponse: ...
    def model_version(self, model_id: str) -> DataVersion: ...
    def records(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]: ...
    def tile_under(self, model_id: str, lon: float, lat: float) -> str | None: ...
    def region_tiles(
        self, model_id: str, source_id: str, region: Region, limit: int
    ) -> list[dict[str, Any]]: ...
    def result_heatmap(
        self, model_id: str, preprocessing_hash: str, tile_id: str, query: NDArray[np.float32]
    ) -> MatchHeatmap | None: ...
    def list_classes(self) -> list[UserClass]: ...
    def report_html(self, req: ReportRequest, landcover: LandCoverResult) -> str: ...
    def landcover_export(self, kind: LandCoverExportKind, result: LandCoverResult) -> bytes: ...
    def list_pairs(self, req: PairsRequest) -> list[Any]: ...
    def fusion_choices(self, source_id: str) -> list[FusionChoice]: ...
    def resolve_scope(self, req: ScopeRequest) -> Scope: ...
    def scope_projection(self, scope: Scope, params: ProjectionParams) -> Projection: ...
    def create_class(self, name: str) -> UserClass: ...
    def rename_class(self, old: str, new: str) -> UserClass: ...
    def delete_class(self, name: str) -> int: ...
    def class_labels(self, name: str) -> list[Label]: ...
    def labels_geojson(self, name: str) -> dict[str, Any]: ...
    def add_labels(
        self, name: str, sel: TileSelection, *, positive: bool = True, origin: str | None = None
    ) -> None: ...
    def remove_labels(self, name: str, sel: TileSelection) -> None: ...
    def classify_in(self, name: str, scope: Scope) -> tuple[Classification, list[ClassArea]]: ...
    def suggest_in(self, name: str, scope: Scope, k: int = 10) -> Suggestions: ...
    def overlapping_sources(self, source_id: str) -> list[SceneSource]: ...
    def compare_dates(
        self, req: ChangeRequest, progress: DateProgress | None = None
    ) -> ChangeMap: ...


class InProcess:
    """The application layer on the app's own workspace (one writable DuckDB connection)."""

    where = "in-process"

    def __init__(self, ws: Workspace) -> None:
        self.workspace = ws

    def catalog(self) -> SourceCatalog:
        return self.workspace.catalog()

    def cache_stats(self) -> CacheStats:
        return self.workspace.shared_cache().stats()

    def embed(self, req: EmbedRequest, progress: ProgressCallback | None = None) -> EmbedResult:
        return embed(self.workspace, req, progress=progress)

    def tile_records(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
        return tile_records(self.workspace, tile_ids)

    def map_landcover(
        self, req: LandCoverRequest, progress: ProgressCallback | None = None
    ) -> LandCoverResult:
        return map_landcover(self.workspace, req, progress=progress)

    def landcover_heads(self, model_id: str) -> list[str]:
        return [h.head_id for h in landcover_heads(self.workspace, model_id)]

    def find_similar(self, req: SearchRequest) -> SearchResponse:
        return find_similar(self.workspace, req)

    def model_version(self, model_id: str) -> DataVersion:
        return model_version(self.workspace, model_id)

    def records(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
        return records(self.workspace, tile_ids)

    def tile_under(self, model_id: str, lon: float, lat: float) -> str | None:
        return tile_under(self.workspace, model_id, lon, lat)

    def region_tiles(
        self, model_id: str, source_id: str, region: Region, limit: int
    ) -> list[dict[str, Any]]:
        return region_tiles(self.workspace, model_id, source_id, region, limit)

    def result_heatmap(
        self, model_id: str, preprocessing_hash: str, tile_id: str, query: NDArray[np.float32]
    ) -> MatchHeatmap | None:
        return result_heatmap(self.workspace, model_id, preprocessing_hash, tile_id, query)

    def list_classes(self) -> list[UserClass]:
        return list_classes(self.workspace)

    def report_html(self, req: ReportRequest, landcover: LandCoverResult) -> str:
        return report(self.workspace, req, landcover=landcover).html

    def landcover_export(self, kind: LandCoverExportKind, result: LandCoverResult) -> bytes:
        with tempfile.TemporaryDirectory(prefix="softmap-export-") as tmp:
            path = Path(tmp) / landcover_export_name(kind, result)
            landcover_download(self.workspace, kind, result, path)
            return path.read_bytes()

    def list_pairs(self, req: PairsRequest) -> list[Any]:
        return list(list_pairs(self.workspace, req))

    def fusion_choices(self, source_id: str) -> list[FusionChoice]:
        return list(fusion_choices(self.workspace, source_id))

    def resolve_scope(self, req: ScopeRequest) -> Scope:
        return resolve_scope(self.workspace, req)

    def scope_projection(self, scope: Scope, params: ProjectionParams) -> Projection:
        return scope_projection(self.workspace, scope, params)

    def create_class(self, name: str) -> UserClass:
        return create_class(self.workspace, name)

    def rename_class(self, old: str, new: str) -> UserClass:
        return rename_class(self.workspace, old, new)

    def delete_class(self, name: str) -> int:
        return delete_class(self.workspace, name)

    def class_labels(self, name: str) -> list[Label]:
        return class_labels(self.workspace, name)

    def labels_geojson(self, name: str) -> dict[str, Any]:
        return labels_geojson(self.workspace, name)

    def add_labels(
        self, name: str, sel: TileSelection, *, positive: bool = True, origin: str | None = None
    ) -> None:
        add_labels(self.workspace, name, sel, positive=positive, origin=origin)

    def remove_labels(self, name: str, sel: TileSelection) -> None:
        remove_labels(self.workspace, name, sel)

    def classify_in(self, name: str, scope: Scope) -> tuple[Classification, list[ClassArea]]:
        return classify_in(self.workspace, name, scope)

    def suggest_in(self, name: str, scope: Scope, k: int = 10) -> Suggestions:
        return suggest_in(self.workspace, name, scope, k=k)

    def overlapping_sources(self, source_id: str) -> list[SceneSource]:
        return overlapping_sources(self.workspace, source_id)

    def compare_dates(self, req: ChangeRequest, progress: DateProgress | None = None) -> ChangeMap:
        return compare_dates(self.workspace, req, progress=progress)


class ThroughService:
    """The same calls on a SoftMap service (``softmap serve``), through its typed client."""

    def __init__(self, client: SoftMapClient, local: SourceCatalog) -> None:
        self.client = client
        self.where = client.url
        self._local = local
        self._catalog: SourceCatalog | None = None
        self._maps: list[tuple[LandCoverResult, str]] = []
        self._lock = threading.Lock()

    def catalog(self) -> SourceCatalog:
        """The service's scenes that this app can draw (bundled here too), asked once."""
        if self._catalog is None:
            from backend.imagery.sources import SourceCatalog

            listed = self.client.sources().sources
            served = {s.id for s in listed}
            found = [s for s in self._local.list() if s.id in served]
            for info in listed:  # registered there, on a disk this app reads too
                local = _readable(info.model_dump().get("manifest"))
                if local is not None and local.id not in {s.id for s in found}:
                    found.append(local)
            self._catalog = SourceCatalog(found)
        return self._catalog

    def cache_stats(self) -> CacheStats:
        return self.client.cache_stats()

    def embed(self, req: EmbedRequest, progress: ProgressCallback | None = None) -> EmbedResult:
        return self.client.embed(req, progress)

    def tile_records(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
        ids = list(tile_ids)
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), TILES_PER_REQUEST):
            out.extend(self.client.tile_records(ids[i : i + TILES_PER_REQUEST]))
        return out

    def map_landcover(
        self, req: LandCoverRequest, progress: ProgressCallback | None = None
    ) -> LandCoverResult:
        source = self.catalog().get(req.source)
        job = self.client.submit("landcover", req)
        self.client.wait(job.id, progress)
        result = self.client.landcover_arrays(job.id, source)
        with self._lock:  # the map's job, for its downloads (the service keeps its last 8)
            self._maps = [*self._maps[-(MAPS_KEPT - 1) :], (result, job.id)]
        return result

    def _job_of(self, result: LandCoverResult) -> str:
        with self._lock:
            found = next((job for r, job in self._maps if r is result), None)
        if found is None:
            raise NotThroughServiceError(
                "This land-cover map was not made through the service: analyse the region again."
            )
        return found

    def list_classes(self) -> list[UserClass]:
        return self.client.list_classes()

    def report_html(self, req: ReportRequest, landcover: LandCoverResult) -> str:
        return self.client.report_html(req)

    def landcover_export(self, kind: LandCoverExportKind, result: LandCoverResult) -> bytes:
        return self.client.landcover_export(self._job_of(result), kind)

    def landcover_heads(self, model_id: str) -> list[str]:
        return [str(h["head_id"]) for h in self.client.landcover_heads(model_id)]

    def find_similar(self, req: SearchRequest) -> SearchResponse:
        return self.client.find_similar(req)

    def model_version(self, model_id: str) -> DataVersion:
        """A key that changes when the service's embeddings do (cached searches go stale)."""
        stats = self.client.cache_stats()
        return ((stats.embeddings, stats.runs),)

    def records(self, tile_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The stored records in the order asked (missing ids left out)."""
        by_id = {r["tile_id"]: r for r in self.tile_records(tile_ids)}
        return [by_id[t] for t in tile_ids if t in by_id]

    def tile_under(self, model_id: str, lon: float, lat: float) -> str | None:
        return self.client.tile_under(model_id, lon, lat)

    def region_tiles(
        self, model_id: str, source_id: str, region: Region, limit: int
    ) -> list[dict[str, Any]]:
        spec = RegionSpec.of(region)
        return self.client.region_tiles(model_id, source_id, spec, limit)

    def result_heatmap(
        self, model_id: str, preprocessing_hash: str, tile_id: str, query: NDArray[np.float32]
    ) -> MatchHeatmap | None:
        return self.client.result_heatmap(model_id, preprocessing_hash, tile_id, query)

    def list_pairs(self, req: PairsRequest) -> list[Any]:
        return []  # S1/S2 partners are not offered through the service yet

    def fusion_choices(self, source_id: str) -> list[FusionChoice]:
        return []

    def resolve_scope(self, req: ScopeRequest) -> Scope:
        """The scope's tiles, from its PCA (``POST /projection``; instant, cached there)."""
        return self.client.project_scope(ProjectRequest(scope=req, method="pca")).scope

    def scope_projection(self, scope: Scope, params: ProjectionParams) -> Projection:
        """The projection the service computes (or has cached) for the same scope."""
        req = ProjectRequest(
            scope=_named(scope),
            method=params.method,
            pca_dims=params.pca_dims,
            neighbors=params.n_neighbors,
            min_dist=params.min_dist,
            epochs=params.n_epochs,
            seed=params.seed,
        )
        return self.client.project_scope(req).projection

    def create_class(self, name: str) -> UserClass:
        return self.client.create_class(name)

    def rename_class(self, old: str, new: str) -> UserClass:
        return self.client.rename_class(old, new)

    def delete_class(self, name: str) -> int:
        return self.client.delete_class(name)

    def class_labels(self, name: str) -> list[Label]:
        return self.client.class_labels(name)

    def labels_geojson(self, name: str) -> dict[str, Any]:
        return self.client.labels_geojson(name)

    def add_labels(
        self, name: str, sel: TileSelection, *, positive: bool = True, origin: str | None = None
    ) -> None:
        from backend.server.schemas import LabelRequest

        body = LabelRequest(**sel.model_dump(), negative=not positive, origin=origin)
        self.client.add_labels(name, body)

    def remove_labels(self, name: str, sel: TileSelection) -> None:
        from backend.server.schemas import LabelRequest

        self.client.remove_labels(name, LabelRequest(**sel.model_dump()))

    def classify_in(self, name: str, scope: Scope) -> tuple[Classification, list[ClassArea]]:
        return self.client.classify_scope(ClassifyRequest(name=name, scope=_named(scope)))

    def suggest_in(self, name: str, scope: Scope, k: int = 10) -> Suggestions:
        return self.client.suggest_labels(SuggestRequest(name=name, scope=_named(scope), k=k))

    def overlapping_sources(self, source_id: str) -> list[SceneSource]:
        """Second dates among the scenes this app and the service both have."""
        catalog = self.catalog()
        return overlapping_in(catalog.list(), catalog.get(source_id))

    def compare_dates(self, req: ChangeRequest, progress: DateProgress | None = None) -> ChangeMap:
        """The comparison run on the service (``POST /compare``: both dates embedded there),
        rebuilt here; the job's one progress stream moves the before bar, then the after bar."""
        catalog = self.catalog()
        before, after = catalog.get(req.before), catalog.get(req.after)
        per_date = _by_date(progress, (before, after)) if progress is not None else None
        return self.client.compare_dates(req, before, after, per_date)


def _readable(manifest: Any) -> SceneSource | None:
    """A service's registered source whose folder this app can read, else None."""
    if not isinstance(manifest, dict) or not Path(str(manifest.get("root", ""))).is_dir():
        return None
    from backend.imagery.sources import source_from_manifest

    try:
        return source_from_manifest(manifest)
    except SoftMapError:
        return None


def _by_date(progress: DateProgress, sources: tuple[SceneSource, SceneSource]) -> ProgressCallback:
    """One callback that feeds the first date's bar until its embedding ends (the count starts
    again or its total changes), then the second's."""
    bars: list[ProgressCallback | None] = []
    last: list[Progress] = []

    def update(p: Progress) -> None:
        if last and len(bars) == 1 and (p.total != last[0].total or p.done < last[0].done):
            bars.append(progress(sources[1]))
        if not bars:
            bars.append(progress(sources[0]))
        last[:] = [p]
        bar = bars[-1]
        if bar is not None:
            bar(p)

    return update


def _named(scope: Scope) -> ScopeRequest:
    """The request naming a resolved scope again (the service resolves it on its cache)."""
    return ScopeRequest(
        model=scope.eset.model_id,
        source=scope.source_id if scope.kind != "all" else None,
        region=RegionSpec.of(scope.region) if scope.region is not None else None,
    )
