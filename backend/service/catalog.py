"""What there is to work with: sources (bundled, registered, from STAC), models, runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from backend.embedding.pipeline import EmbedResult, embed_region
from backend.imagery.reader import PixelWindow, SceneReader
from backend.imagery.scene_import import import_scene
from backend.imagery.sources import BUNDLED_PREFIX, SceneSource
from backend.imagery.stac import SearchResult, build_source, save_manifest, search, selection_tiles
from backend.imagery.tiling import parse_tile_id
from backend.models import ModelMeta, list_models
from backend.models.weights import find_local_weights
from backend.search.index_sync import drop_unused_indexes
from backend.service.workspace import EngineOptions, RegionSpec, Request, Workspace
from backend.store import catalog as store_catalog
from backend.store.acquisitions import record_source, record_tiles
from backend.store.cache import CacheStats


# --- sources -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceInfo:
    """A source as listed: its description and whether the user registered it."""

    source: SceneSource
    registered: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.source.summary(), "registered": self.registered}


def list_sources(ws: Workspace) -> list[SourceInfo]:
    """Every source the user can pick, bundled first by id."""
    return [
        SourceInfo(s, registered=not s.id.startswith(BUNDLED_PREFIX)) for s in ws.catalog().list()
    ]


class AddSourceRequest(Request):
    """Register local imagery (``softmap sources add``)."""

    path: Path = Field(description=".SAFE folder, folder of per-band files, or a multi-band file")
    bands: tuple[str, ...] | None = Field(default=None, description="band names in file order")
    source_id: str | None = None
    title: str | None = None
    date: str | None = Field(default=None, description="YYYY-MM-DD when the files do not say")
    dn_offset: float | None = None
    second_path: Path | None = Field(
        default=None, description="the other file of a Sentinel-1 VV/VH pair given as two files"
    )
    units: Literal["db", "linear"] | None = Field(
        default=None, description="Sentinel-1 backscatter units (default: detected)"
    )


def add_source(ws: Workspace, req: AddSourceRequest) -> SceneSource:
    """Describe the imagery, prove its pixels readable, and register it in the cache.

    Raises:
        SceneImportError: what is missing or wrong in the files (one line).
        RasterReadError: the pixels cannot be read.
    """
    source = import_scene(
        [req.path, req.second_path] if req.second_path is not None else req.path,
        bands=list(req.bands) if req.bands else None,
        source_id=req.source_id,
        title=req.title,
        date=req.date,
        dn_offset=req.dn_offset,
        units=req.units,
    )
    # One small read of every band proves the pixels (not only the headers) are readable.
    with SceneReader(source) as reader:
        reader.read(PixelWindow(0, 0, 16, 16), source.band_names)
    with ws.cache() as cache:
        store_catalog.register_source(cache, source)
    ws.catalog_changed()
    return source


def remove_source(ws: Workspace, source_id: str) -> int:
    """Unregister a source and drop its cached tiles; returns the tiles dropped."""
    with ws.cache() as cache:
        dropped = store_catalog.remove_source(cache, source_id)
        drop_unused_indexes(cache)
    ws.catalog_changed()
    return dropped


# --- models --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """A registered model and where its weights are (or that they are built in / missing)."""

    meta: ModelMeta
    weights: str
    available: bool

    def to_json(self) -> dict[str, Any]:
        m = self.meta
        return {
            "id": m.id,
            "title": m.title,
            "architecture": m.architecture,
            "sensor": m.sensor,
            "bands": list(m.bands),
            "normalization": m.normalization.scheme,
            "chip_size": m.chip_size,
            "patch_size": m.patch_size,
            "embed_dim": m.embed_dim,
            "license": m.license,
            "weights": self.weights,
        }


def list_model_infos() -> list[ModelInfo]:
    """Every registered model, with whether its weights are found locally."""
    out: list[ModelInfo] = []
    for meta in list_models():
        path = find_local_weights(meta)
        if meta.random_init_seed is not None:
            out.append(ModelInfo(meta, "built-in (seeded random init)", True))
        else:
            out.append(
                ModelInfo(meta, str(path) if path else "not found locally", path is not None)
            )
    return out


# --- runs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunsReport:
    """The cache's size and its most recent embedding runs."""

    stats: CacheStats
    runs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"cache": asdict(self.stats), "runs": self.runs}


def recent_runs(ws: Workspace, limit: int = 10) -> RunsReport:
    """Size and counts of the cache plus its last ``limit`` runs."""
    with ws.cache(read_only=True) as cache:
        return RunsReport(cache.stats(), cache.runs(limit=limit))


# --- STAC ----------------------------------------------------------------------------------
class StacSearchRequest(Request):
    """A STAC search over a region and dates (``softmap stac search``)."""

    region: RegionSpec
    dates: str = Field(description="YYYY-MM-DD or START/END (either may be ..)")
    api_url: str | None = None
    collections: tuple[str, ...] | None = None
    max_cloud: float | None = Field(default=None, ge=0, le=100, description="% cloud at most")
    limit: int | None = Field(default=None, ge=1, description="items fetched at most")


def stac_search(ws: Workspace, req: StacSearchRequest) -> SearchResult:
    """Items over the region, least cloudy first.

    Raises:
        CatalogueUnreachableError: offline or the API does not answer.
        EmptySearchError: nothing matched.
    """
    return search(
        req.region.resolve(),
        req.dates,
        api_url=req.api_url,
        collections=list(req.collections) if req.collections else None,
        max_cloud=req.max_cloud,
        max_items=req.limit,
        settings=ws.settings,
    )


class StacAddRequest(StacSearchRequest):
    """Make a source from the best item or a per-tile least-cloudy selection."""

    item_id: str | None = None
    per_tile: bool = False
    chip: int | None = Field(default=None, ge=8, description="selection cell (default: model's)")
    model: str | None = Field(default=None, description="also embed the region with this model")
    engine: EngineOptions = EngineOptions()


@dataclass(frozen=True)
class StacAddResult:
    """The registered source, its manifest and what it was built from."""

    source: SceneSource
    manifest: Path
    mode: str
    items: list[dict[str, Any]]
    cells_per_item: dict[str, int] | None
    embedded: EmbedResult | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source.id,
            "manifest": str(self.manifest),
            "mode": self.mode,
            "items": self.items,
            "cells_per_item": self.cells_per_item,
        }
        if self.embedded is not None:
            out["embedded"] = {k: v for k, v in self.embedded.to_json().items() if k != "tile_ids"}
        return out


def stac_add(ws: Workspace, req: StacAddRequest) -> StacAddResult:
    """Search, build the source (VRTs for a mosaic), register it, optionally embed the region."""
    engine = ws.engine(req.model, req.engine) if req.model else None
    chip = req.chip or (engine.model.meta.chip_size if engine else 224)
    region = req.region.resolve()
    result = stac_search(ws, req)
    folder = ws.db_path.parent / "stac"
    stac = build_source(
        result, region, per_tile=req.per_tile, chip=chip, item_id=req.item_id, folder=folder
    )
    manifest = save_manifest(stac.source, folder / stac.source.id.replace("/", "_"))
    embedded = None
    with ws.cache() as cache:
        store_catalog.register_source(cache, stac.source)
        record_source(cache, stac, manifest)
        record_tiles(cache, stac, selection_tiles(stac, region, chip))
        if engine is not None:
            embedded = embed_region(
                region, stac.source, engine.model, cache, engine=engine, settings=ws.settings
            )
            record_tiles(cache, stac, [_offsets(t) for t in embedded.tile_ids])
    ws.catalog_changed()
    return StacAddResult(
        stac.source,
        manifest,
        "per-tile" if stac.selection else "best",
        [i.summary() for i in stac.items],
        stac.selection.counts() if stac.selection else None,
        embedded,
    )


def _offsets(tile_id: str) -> tuple[str, int, int, int]:
    _, size, stride, row, col = parse_tile_id(tile_id)
    return tile_id, row * stride, col * stride, size
