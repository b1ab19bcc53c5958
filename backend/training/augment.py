"""Multispectral-safe augmentations on normalised batches, vectorised over the batch.

Every operation treats all bands of a chip alike, so a view never gets a spectrum that no surface
has: geometric ops (random resized crop, flips, 90° rotations) move whole pixels, and radiometric
ops (brightness, contrast, noise) use one draw per chip for every band. No colour jitter, hue or
grey-scale: those assume RGB and would break the band relationships the model has to learn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor


class AugmentConfig(BaseModel):
    """Strength of each augmentation (defaults suit 64 px chips normalised to 0–1)."""

    model_config = ConfigDict(frozen=True)

    crop_scale: tuple[float, float] = Field(default=(0.35, 1.0), description="Area fraction")
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rotate90: bool = True
    jitter_p: float = Field(default=0.8, ge=0, le=1)
    brightness: float = Field(default=0.1, ge=0, description="Max additive shift (all bands)")
    contrast: float = Field(default=0.2, ge=0, description="Max relative contrast change")
    noise_std: float = Field(default=0.02, ge=0, description="Max Gaussian noise std")
    value_range: tuple[float, float] | None = Field(
        default=(0.0, 1.0), description="Clamp to this range (SSL4EO inputs live in 0–1)"
    )


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def random_resized_crop_grid(
    n: int, size: int, cfg: AugmentConfig, g: torch.Generator, device: torch.device
) -> Tensor:
    """Sampling grids ``[n, size, size, 2]`` for crops with random flips and 90° rotations.

    Each grid maps the output chip to an axis-aligned box of the input (area ``crop_scale``,
    aspect ``crop_ratio``) seen through one of the 8 symmetries of the square.
    """
    area = _uniform(n, *cfg.crop_scale, g, device)
    log_r = _uniform(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), g, device)
    ratio = torch.exp(log_r)
    sx = torch.sqrt(area * ratio).clamp(max=1.0)
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - sx)
    ty = (torch.rand(n, generator=g, device=device) * 2 - 1) * (1 - sy)
    # The 8 symmetries as 2×2 matrices: k quarter turns, then an optional mirror.
    k = torch.randint(0, 4 if cfg.rotate90 else 1, (n,), generator=g, device=device)
    angle = k.to(torch.float32) * (math.pi / 2)
    cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
    mirror = torch.ones(n, device=device)
    if cfg.flip:
        mirror = torch.where(torch.rand(n, generator=g, device=device) < 0.5, -mirror, mirror)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = sx * cos * mirror
    theta[:, 0, 1] = -sx * sin
    theta[:, 1, 0] = sy * sin * mirror
    theta[:, 1, 1] = sy * cos
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    return F.affine_grid(theta, [n, 1, size, size], align_corners=False)


def augment(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> Tensor:
    """One random view of every chip in a normalised batch ``[B, C, H, W]`` (same shape out).

    Args:
        x: Normalised chips (float).
        cfg: Augmentation strengths.
        g: Random generator on ``x``'s device (seeded by the caller for reproducible runs).
    """
    b, _, h, w = x.shape
    if h != w:
        raise ValueError(f"chips must be square, got {h}×{w}")
    device = x.device
    grid = random_resized_crop_grid(b, h, cfg, g, device)
    out = F.grid_sample(
        x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
    apply = (torch.rand(b, generator=g, device=device) < cfg.jitter_p).to(x.dtype)
    contrast = 1 + _uniform(b, -cfg.contrast, cfg.contrast, g, device).to(x.dtype) * apply
    bright = _uniform(b, -cfg.brightness, cfg.brightness, g, device).to(x.dtype) * apply
    mean = out.mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * contrast.view(b, 1, 1, 1) + mean + bright.view(b, 1, 1, 1)
    if cfg.noise_std > 0:
        std = _uniform(b, 0.0, cfg.noise_std, g, device).to(x.dtype).view(b, 1, 1, 1)
        noise = torch.randn(out.shape, generator=g, device=device, dtype=x.dtype)
        out = out + noise * std
    if cfg.value_range is not None:
        out = out.clamp(*cfg.value_range)
    return out


def two_views(x: Tensor, cfg: AugmentConfig, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two independent random views of each chip (SoftCon's online and momentum inputs)."""
    return augment(x, cfg, g), augment(x, cfg, g)


def random_token_masks(
    n: int, tokens: int, ratio: float, g: torch.Generator, device: torch.device
) -> Tensor:
    """Boolean masks ``[n, tokens]`` with exactly ``round(ratio·tokens)`` True per row."""
    k = round(ratio * tokens)
    masks = torch.zeros(n, tokens, dtype=torch.bool, device=device)
    if k == 0:
        return masks
    order = torch.rand(n, tokens, generator=g, device=device).argsort(dim=1)
    masks.scatter_(1, order[:, :k], True)
    return masks
