"""The application layer: one typed operation per thing a user does, over every stage below.

The CLI commands, the Streamlit pages and the HTTP service call these names and nothing under
them: each operation takes a :class:`Workspace` and a typed request and returns a typed result.
"""

# The results' types, the parsers of user input and the pure map helpers the UI shows them with.
from backend.analysis.projection import Projection
from backend.classes.active_learning import Suggestions
from backend.classes.user_classes import UserClass
from backend.errors import InvalidRegionError, SoftMapError
from backend.imagery.preview import region_grid_geojson, tile_at, tile_grid_geojson
from backend.imagery.regions import Region, parse_bbox, parse_geojson, point_region
from backend.imagery.sources import SceneSource
from backend.imagery.tiling import parse_tile_id
from backend.landcover.maps import LandCoverResult
from backend.models import ModelMeta, get_model_meta
from backend.models.inference import Progress, ProgressCallback
from backend.search.heatmap import MatchHeatmap
from backend.search.query import SearchResponse
from backend.service.analysis import (
    ChangeRequest,
    ProjectOutcome,
    ProjectRequest,
    detect_region_change,
    project_scope,
    scope_projection,
)
from backend.service.catalog import (
    AddSourceRequest,
    ModelInfo,
    RunsReport,
    SourceInfo,
    StacAddRequest,
    StacAddResult,
    StacSearchRequest,
    add_source,
    list_model_infos,
    list_sources,
    recent_runs,
    remove_source,
    stac_add,
    stac_search,
)
from backend.service.classes import (
    ClassifyOutcome,
    ClassifyRequest,
    ScopeRequest,
    SuggestOutcome,
    SuggestRequest,
    TileSelection,
    add_labels,
    class_labels,
    classify,
    create_class,
    delete_class,
    export_labels,
    import_labels,
    labels_geojson,
    list_classes,
    remove_labels,
    rename_class,
    scope_json,
    single_source,
    suggest_labels,
)
from backend.service.embedding import EmbedRequest, embed, tile_records
from backend.service.landcover import (
    FitHeadRequest,
    LandCoverRequest,
    fit_landcover_head,
    landcover_heads,
    map_landcover,
)
from backend.service.outputs import (
    LANDCOVER_EXPORTS,
    ExportOutcome,
    ExportRequest,
    ReportRequest,
    export,
    landcover_download,
    landcover_export_name,
    report,
)
from backend.service.search import SearchRequest, find_similar, search_scope
from backend.service.sensors import (
    FuseOutcome,
    FuseRequest,
    FusionChoice,
    PairsRequest,
    fuse_region,
    fusion_choices,
    list_pairs,
    tile_coverage,
)
from backend.service.training import (
    EvalRequest,
    EvaluationOutcome,
    StepInfo,
    TrainConfig,
    TrainRequest,
    evaluate_model,
    pretrain,
)
from backend.service.workspace import EngineOptions, RegionSpec, Workspace, region_spec
from backend.store.scopes import Scope

__all__ = [
    "LANDCOVER_EXPORTS",
    "AddSourceRequest",
    "ChangeRequest",
    "ClassifyOutcome",
    "ClassifyRequest",
    "EmbedRequest",
    "EngineOptions",
    "EvalRequest",
    "EvaluationOutcome",
    "ExportOutcome",
    "ExportRequest",
    "FitHeadRequest",
    "FuseOutcome",
    "FuseRequest",
    "FusionChoice",
    "InvalidRegionError",
    "LandCoverRequest",
    "LandCoverResult",
    "MatchHeatmap",
    "ModelInfo",
    "ModelMeta",
    "PairsRequest",
    "Progress",
    "ProgressCallback",
    "ProjectOutcome",
    "ProjectRequest",
    "Projection",
    "Region",
    "RegionSpec",
    "ReportRequest",
    "RunsReport",
    "SceneSource",
    "Scope",
    "ScopeRequest",
    "SearchRequest",
    "SearchResponse",
    "SoftMapError",
    "SourceInfo",
    "StacAddRequest",
    "StacAddResult",
    "StacSearchRequest",
    "StepInfo",
    "SuggestOutcome",
    "SuggestRequest",
    "Suggestions",
    "TileSelection",
    "TrainConfig",
    "TrainRequest",
    "UserClass",
    "Workspace",
    "add_labels",
    "add_source",
    "class_labels",
    "classify",
    "create_class",
    "delete_class",
    "detect_region_change",
    "embed",
    "evaluate_model",
    "export",
    "export_labels",
    "find_similar",
    "fit_landcover_head",
    "fuse_region",
    "fusion_choices",
    "get_model_meta",
    "import_labels",
    "labels_geojson",
    "landcover_download",
    "landcover_export_name",
    "landcover_heads",
    "list_classes",
    "list_model_infos",
    "list_pairs",
    "list_sources",
    "map_landcover",
    "parse_bbox",
    "parse_geojson",
    "parse_tile_id",
    "point_region",
    "pretrain",
    "project_scope",
    "recent_runs",
    "region_grid_geojson",
    "region_spec",
    "remove_labels",
    "remove_source",
    "rename_class",
    "report",
    "scope_json",
    "scope_projection",
    "search_scope",
    "single_source",
    "stac_add",
    "stac_search",
    "suggest_labels",
    "tile_at",
    "tile_coverage",
    "tile_grid_geojson",
    "tile_records",
]
