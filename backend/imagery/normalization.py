"""Input normalisation schemes for Sentinel imagery; a scheme travels with the model's weights.

Two schemes are implemented:

``ssl4eo``
    What SoftCon (and SSL4EO-S12) were pretrained with: each band is mapped from
    ``[mean - 2·std, mean + 2·std]`` to 0–255, clipped, truncated to uint8, then divided by 255.
    Embeddings only mean what the authors measured when inputs match the pretraining
    distribution, so this is the default for every SoftCon model.
``zscore``
    ``(x - mean) / std`` as torchgeo's SSL4EO-S12 transforms do. Offered for weights trained
    that way and for comparisons; with SoftCon weights it shifts the input distribution.

Sentinel-1 (the ``softcon-*-s1`` models)
    Input is VV, VH (in that order) as σ⁰ backscatter **in dB**, as in SSL4EO-S12's S1 GRD
    (Earth Engine ``COPERNICUS/S1_GRD``: thermal noise removed, radiometrically calibrated,
    terrain corrected, ``10·log10`` of linear power). Linear-power sources are converted to dB
    when read (:mod:`backend.imagery.reader`). The statistics :data:`S1_GRD_MEAN` /
    :data:`S1_GRD_STD` (VV −12.59 ± 5.26 dB, VH −20.26 ± 5.91 dB) are SSL4EO-S12's, so with
    ``ssl4eo`` VV spans −23.11 … −2.07 dB and VH −32.08 … −8.44 dB before clipping to 0…255.
    Checked against the six real BigEarthNet-S1 patches in ``../shared/data`` (86,400 pixels per
    band, ``tests/test_s1_real.py``): pooled VV −10.95 ± 3.53 dB, VH −16.95 ± 3.30 dB; 1.2 % of
    VV and 0.2 % of VH pixels fall outside the ±2σ range and are clipped. The patches are brighter
    and less spread than SSL4EO's global sample (European farmland, forest and one snowy
    February scene; no deserts, no open sea), but they sit well inside the range the models saw.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator

Scheme = Literal["ssl4eo", "zscore"]

#: SSL4EO-S12 L1C statistics in DN, bands B01…B12 in L1C order (13 values).
S2_L1C_MEAN: tuple[float, ...] = (
    1612.9,
    1397.6,
    1322.3,
    1373.1,
    1561.0,
    2108.4,
    2390.7,
    2318.7,
    2581.0,
    837.7,
    22.0,
    2195.2,
    1537.4,
)
S2_L1C_STD: tuple[float, ...] = (
    791.0,
    854.3,
    878.7,
    1144.9,
    1127.5,
    1164.2,
    1276.0,
    1249.5,
    1345.9,
    577.5,
    47.5,
    1340.0,
    1142.9,
)
#: SSL4EO-S12 Sentinel-1 GRD statistics (VV, VH) in dB, as used by SoftCon's S1 models.
S1_GRD_MEAN: tuple[float, ...] = (-12.59, -20.26)
S1_GRD_STD: tuple[float, ...] = (5.26, 5.91)


class Normalization(BaseModel):
    """A normalisation scheme with its per-band statistics (in the model's band order)."""

    model_config = ConfigDict(frozen=True)

    scheme: Scheme
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have one value per band")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be positive")
        return self

    @property
    def num_bands(self) -> int:
        return len(self.mean)

    def fingerprint(self) -> str:
        """A stable hash of the scheme and statistics (part of the preprocessing hash)."""
        blob = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise raw values ``x`` shaped ``[..., C, H, W]`` (float) and return float32."""
        return normalize(x, self)


def normalize(x: torch.Tensor, spec: Normalization) -> torch.Tensor:
    """Normalise raw values ``x`` (``[..., C, H, W]``, DN or dB) with ``spec``; float32 out."""
    if x.shape[-3] != spec.num_bands:
        raise ValueError(f"expected {spec.num_bands} bands, got {x.shape[-3]}")
    x = x.to(torch.float32)
    shape = (spec.num_bands, 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(shape)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(shape)
    if spec.scheme == "zscore":
        return (x - mean) / std
    low = mean - 2 * std
    scaled = (x - low) / (4 * std) * 255.0
    # The SSL4EO-S12 pipeline stores uint8: clip, then truncate, exactly as the training data did.
    return torch.floor(scaled.clamp_(0.0, 255.0)) / 255.0


def neutral_value(spec: Normalization, band_index: int) -> float:
    """The raw value that a band is filled with when the imagery lacks it: its training mean.

    After normalisation this is the centre of the band's range (0 for z-score, ~0.5 for ssl4eo), so
    a missing band carries no signal instead of an extreme one.
    """
    return spec.mean[band_index]
