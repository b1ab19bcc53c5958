"""One error hierarchy for everything a user can get wrong or run into.

Every error carries a short ``title`` and a ``message`` that says what to do next. The CLI maps
them to exit code 2 and one line on stderr; the app maps them to ``st.error``/``st.warning``.
Code catches library exceptions at the boundary and re-raises one of these ``from`` the original.
"""

from __future__ import annotations


class SoftMapError(Exception):
    """Base class: a problem the user can understand and act on."""

    title: str = "SoftMap error"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = title

    def __str__(self) -> str:
        return self.message

    def one_line(self) -> str:
        """Title and message on one line, for a terminal."""
        return f"{self.title}: {' '.join(self.message.split())}"


# --- regions -------------------------------------------------------------------------------
class InvalidRegionError(SoftMapError):
    title = "Invalid region"


class RegionTooLargeError(InvalidRegionError):
    title = "Region too large"


class RegionOutsideSourceError(InvalidRegionError):
    title = "Region outside the imagery"


# --- sources and rasters -------------------------------------------------------------------
class UnknownSourceError(SoftMapError):
    title = "Unknown source"


class RasterReadError(SoftMapError):
    title = "Cannot read raster"


class BandMismatchError(SoftMapError):
    title = "Wrong bands"


# --- models --------------------------------------------------------------------------------
class UnknownModelError(SoftMapError):
    title = "Unknown model"


class WeightsNotFoundError(SoftMapError):
    title = "Model weights not found"


class CheckpointMismatchError(SoftMapError):
    title = "Checkpoint does not match the model"


class DeviceError(SoftMapError):
    title = "Device unavailable"


# --- cache ---------------------------------------------------------------------------------
class CacheError(SoftMapError):
    title = "Cache database error"


class CacheLockedError(CacheError):
    title = "Cache database in use"


class NotFoundError(SoftMapError):
    title = "Not found"


class ConfigurationError(SoftMapError):
    title = "Invalid setting"


# --- projections, user classes, exports ----------------------------------------------------
class UnknownClassError(NotFoundError):
    title = "Unknown class"


class NotEnoughLabelsError(SoftMapError):
    title = "Not enough labels"


# --- labels and land cover -----------------------------------------------------------------
class UnknownMappingError(SoftMapError):
    title = "Unknown class mapping"


class UnknownHeadError(SoftMapError):
    title = "Unknown land-cover head"


class HeadMismatchError(UnknownHeadError):
    title = "Land-cover head does not fit these embeddings"


# --- STAC catalogues and change ------------------------------------------------------------
class CatalogueUnreachableError(SoftMapError):
    title = "STAC catalogue unreachable"


class EmptySearchError(SoftMapError):
    title = "No imagery found"


class StacItemError(SoftMapError):
    title = "Unusable STAC item"


class ChangeError(SoftMapError):
    title = "Cannot compare dates"


# --- search --------------------------------------------------------------------------------
class NoEmbeddingsError(NotFoundError):
    title = "No cached embeddings"


class EmptyScopeError(SoftMapError):
    title = "Nothing in scope"


# --- clusters (softmap embed --ray) --------------------------------------------------------
class RayUnavailableError(SoftMapError):
    title = "Ray not installed"


class ClusterError(SoftMapError):
    title = "Ray cluster problem"


# --- local scenes (softmap sources add) ----------------------------------------------------
class SceneImportError(SoftMapError):
    title = "Cannot use this imagery"
