"""Configuration in one place: environment variables with the ``SOFTMAP_`` prefix.

Defaults work offline on a fresh clone: the cache lives in ``./data/softmap.duckdb`` and models are
looked up in ``./models`` and the bundled ``assets/models``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Repository root (the folder holding ``assets/``), used for the bundled demo data.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"

DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]


class Settings(BaseSettings):
    """SoftMap settings; every field can be set as ``SOFTMAP_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="SOFTMAP_", extra="ignore")

    db_path: Path = Field(default=Path("data/softmap.duckdb"), description="DuckDB cache file")
    models_dir: Path = Field(default=Path("models"), description="Folder searched for weights")
    assets_dir: Path = Field(default=ASSETS_DIR, description="Bundled demo scenes and models")
    device: DeviceChoice = Field(default="auto", description="cuda, mps, cpu or auto")
    batch_size: int = Field(default=32, ge=1, le=4096)
    prefetch_batches: int = Field(default=2, ge=1, le=64, description="Read-ahead queue depth")
    readers: int | None = Field(
        default=None, ge=0, le=64, description="Reader threads; 0 = in line; unset = by device"
    )
    tune_malloc: bool = Field(
        default=True, description="Keep freed memory in the heap on CPU (see backend/allocator)"
    )
    jit_cache_dir: Path | None = Field(
        default=None,
        description="numba's on-disk cache for UMAP (default: in the venv, else beside the db)",
    )
    warm_up: bool = Field(default=True, description="Load UMAP's JIT code when the app starts")
    max_region_km2: float = Field(default=2500.0, gt=0)
    max_nodata_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    offline: bool = Field(default=False, description="Never try the network (Hugging Face, STAC)")
    hf_repo: str = Field(default="wangyi111/softcon", description="Hugging Face repo of weights")
    stac_api_url: str = Field(
        default="https://earth-search.aws.element84.com/v1",
        description="STAC API searched by `softmap stac` (Earth Search by default)",
    )
    stac_collections: tuple[str, ...] = Field(
        default=("sentinel-2-l2a",), description="STAC collections searched by default"
    )
    stac_max_cloud: float = Field(
        default=30.0, ge=0.0, le=100.0, description="Largest eo:cloud_cover (%) kept"
    )
    stac_max_items: int = Field(default=50, ge=1, le=1000, description="Items fetched per search")
    stac_timeout_s: float = Field(default=20.0, gt=0, description="STAC API request timeout")
    stac_planetary_computer_url: str = Field(
        default="https://planetarycomputer.microsoft.com/api/stac/v1",
        description="Planetary Computer STAC API (its asset URLs are signed with a SAS token)",
    )
    stac_pc_token_url: str = Field(
        default="https://planetarycomputer.microsoft.com/api/sas/v1/token",
        description="Planetary Computer SAS token endpoint (`{url}/{collection}`)",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()
