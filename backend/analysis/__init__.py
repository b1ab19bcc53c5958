"""Analysis: views across many tiles: 2-D projections (UMAP, PCA) and change between dates.

Projections are cached in the store; change compares two embedding sets on one grid.
"""

from backend.analysis.change import ChangeResult, detect_change
from backend.analysis.projection import Projection, ProjectionParams, project

__all__ = ["ChangeResult", "Projection", "ProjectionParams", "detect_change", "project"]
