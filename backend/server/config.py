"""Settings of the HTTP service: ``SOFTMAP_SERVER_*`` environment variables or ``softmap serve``.

The cache file itself is the usual ``SOFTMAP_DB_PATH`` (or ``--db``); everything a request may
read or write on the server's disk lives under :attr:`ServerConfig.data_dir`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8600


class ServerConfig(BaseSettings):
    """How ``softmap serve`` listens and what it allows."""

    model_config = SettingsConfigDict(env_prefix="SOFTMAP_SERVER_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="bind address (loopback by default)")
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="0 = any free port")
    db_path: Path | None = Field(default=None, description="cache file (default SOFTMAP_DB_PATH)")
    token: str | None = Field(
        default=None, description="bearer token; required when bound off loopback"
    )
    data_dir: Path | None = Field(
        default=None,
        description="folder for uploads and outputs (default: `<db folder>/service`)",
    )
    max_body_bytes: int = Field(
        default=64 * 2**20, ge=1024, description="largest request body accepted"
    )
    resume_interrupted: bool = Field(
        default=True, description="resume jobs a crash interrupted when the service starts"
    )
    keep_jobs: int = Field(default=500, ge=10, description="finished jobs kept in the list")
