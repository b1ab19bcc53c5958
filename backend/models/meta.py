"""Model metadata that travels with the weights: what goes in, what comes out, where it is from."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.imagery.normalization import Normalization

Architecture = Literal["vit", "resnet50"]
Sensor = Literal["S2-L1C", "S1-GRD"]


class VitConfig(BaseModel):
    """Shape of a DINOv2-style ViT."""

    model_config = ConfigDict(frozen=True)

    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int = Field(description="Input size the position embeddings were trained for")
    mlp_ratio: float = 4.0
    layerscale_init: float = 1e-5


class ModelMeta(BaseModel):
    """Everything downstream needs to know about a model; nothing else may hard-code it."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    architecture: Architecture
    sensor: Sensor
    bands: tuple[str, ...] = Field(description="Input bands, in the order the weights expect")
    normalization: Normalization
    chip_size: int = Field(description="Tile edge in pixels at 10 m")
    stride: int | None = Field(
        default=None, description="Tile step in pixels; None means the chip size (no overlap)"
    )
    patch_size: int | None = Field(description="ViT patch size; None for CNNs")
    embed_dim: int
    vit: VitConfig | None = None
    license: str
    source: str = Field(description="Where the weights come from (paper, repository, URL)")
    weight_files: tuple[str, ...] = Field(
        default=(), description="Accepted checkpoint file names, preferred first"
    )
    hf_repo: str | None = Field(default=None, description="Hugging Face repo holding weight_files")
    random_init_seed: int | None = Field(
        default=None, description="Weights are a seeded random init (test models only)"
    )
    description: str = ""

    @property
    def in_chans(self) -> int:
        return len(self.bands)

    @property
    def tile_stride(self) -> int:
        """The step between tiles: ``stride`` or, by default, the chip size."""
        return self.stride or self.chip_size

    @property
    def token_grid(self) -> int | None:
        """Patch tokens per side for a chip, or None for CNNs."""
        if self.patch_size is None:
            return None
        return self.chip_size // self.patch_size

    def preprocessing(self) -> dict[str, object]:
        """What turns imagery into this model's input tensor (hashed into the cache key)."""
        return {
            "bands": list(self.bands),
            "normalization": self.normalization.model_dump(mode="json"),
            "chip_size": self.chip_size,
        }

    def preprocessing_hash(self, extra: dict[str, object] | None = None) -> str:
        """Stable hash of :meth:`preprocessing` plus reader settings (resampling, band fill)."""
        blob = {**self.preprocessing(), **(extra or {})}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
