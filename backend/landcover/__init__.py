"""Land cover: soft class fractions from labels, heads over embeddings, maps and areas.

Labels and their class mappings, linear heads (tile and token level), predicted maps stored per
tile, expected class areas with their range, and the colours the maps are drawn in.
"""

from backend.landcover.areas import ClassArea, class_areas
from backend.landcover.heads import LandCoverHead
from backend.landcover.labels import ClassMapping, SoftLabels, get_mapping
from backend.landcover.maps import FitResult, LandCoverResult, fit_head, predict_landcover

__all__ = [
    "ClassArea",
    "ClassMapping",
    "FitResult",
    "LandCoverHead",
    "LandCoverResult",
    "SoftLabels",
    "class_areas",
    "fit_head",
    "get_mapping",
    "predict_landcover",
]
