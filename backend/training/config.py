"""The recipe of a SoftCon pretraining run, saved as JSON next to the checkpoint it produced."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.training.augment import AugmentConfig

#: The bundled scenes and the labels of their soft targets: ``"reference"`` (the combined
#: reference labels of ``backend.landcover.reference``: spectral rules, photo-interpreted polygons,
#: Brandenburg's OSM raster, ``train`` blocks only), a land-use raster's class mapping, or None
#: (no labels: plain InfoNCE rows).
DEFAULT_SOURCES: dict[str, str | None] = {
    "demo/brandenburg": "reference",
    "demo/virginia": "reference",
}


class HoldOut(BaseModel):
    """A spatial hold-out: whole blocks of tiles of one source kept out of training.

    Blocks are ``block × block`` tiles of ``chip`` pixels on the source's 10 m grid, counted
    row-major from the top-left; ``blocks`` lists the ``(block_row, block_col)`` held out.
    Training chips never overlap them, and keep ``buffer`` more tiles of clearance.
    """

    model_config = ConfigDict(frozen=True)

    source: str
    chip: int = 64
    block: int = 4
    blocks: tuple[tuple[int, int], ...]
    buffer: int = Field(default=0, ge=0, description="Tiles of clearance around held-out blocks")

    def pixel_boxes(self, *, with_buffer: bool) -> list[tuple[int, int, int, int]]:
        """Held-out areas as pixel boxes ``(row0, col0, row1, col1)`` (end exclusive)."""
        size = self.block * self.chip
        pad = self.buffer * self.chip if with_buffer else 0
        return [
            (r * size - pad, c * size - pad, (r + 1) * size + pad, (c + 1) * size + pad)
            for r, c in self.blocks
        ]


#: Brandenburg (24 × 12 tiles of 64 px = 6 × 3 blocks of 4 × 4 tiles): six blocks, two per block
#: row, spread over the scene so the held-out tiles see every kind of land cover it has.
DEFAULT_HOLDOUT = HoldOut(
    source="demo/brandenburg",
    blocks=((0, 1), (0, 4), (1, 0), (1, 3), (2, 2), (2, 5)),
)


class TrainConfig(BaseModel):
    """Everything that determines a SoftCon pretraining run (with the seed, the whole run)."""

    model_config = ConfigDict(frozen=True)

    model: str = Field(default="softmap-default", description="Registry id of the architecture")
    init: str = Field(
        default="scratch",
        description="'scratch', a checkpoint path, or 'model:<id>' (its published weights)",
    )
    sources: dict[str, str | None] = Field(default_factory=lambda: dict(DEFAULT_SOURCES))
    holdout: HoldOut | None = DEFAULT_HOLDOUT
    stride: int | None = Field(default=None, description="Step between training chips (px)")
    max_nodata_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    # optimisation
    epochs: int = Field(default=30, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps")
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    min_lr: float = Field(default=1e-5, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1)
    # SoftCon
    soft: bool = Field(default=True, description="False: plain InfoNCE (no label targets)")
    alpha: float = Field(default=0.5, ge=0, le=1, description="Weight of the label similarities")
    temperature: float = Field(default=0.2, gt=0)
    mask_ratio: float = Field(default=0.3, ge=0, lt=1, description="Siamese masking ratio")
    ema_start: float = Field(default=0.99, ge=0, le=1)
    ema_end: float = Field(default=1.0, ge=0, le=1)
    proj_hidden: int = 512
    proj_dim: int = 128
    min_labelled: float = Field(default=0.25, ge=0, le=1)
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Augmentation strengths of the two views"
    )
    # run
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    threads: int | None = Field(default=None, ge=1, description="CPU threads (default: torch's)")

    def save(self, path: Path) -> None:
        """Write the config as indented JSON."""
        path.write_text(self.model_dump_json(indent=2) + "\n")
