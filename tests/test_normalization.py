"""Both normalisation schemes, against their definitions."""

from __future__ import annotations

import pytest
import torch

from backend.imagery.normalization import S2_L1C_MEAN, S2_L1C_STD, Normalization, neutral_value

SSL4EO = Normalization(scheme="ssl4eo", mean=S2_L1C_MEAN, std=S2_L1C_STD)
ZSCORE = Normalization(scheme="zscore", mean=S2_L1C_MEAN, std=S2_L1C_STD)


def _const(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(13, 1, 1).expand(13, 2, 2).clone()


def test_ssl4eo_maps_mean_pm_2std_to_0_255_then_unit_range() -> None:
    mean = torch.tensor(S2_L1C_MEAN)
    std = torch.tensor(S2_L1C_STD)
    low = SSL4EO.apply(_const((mean - 2 * std).tolist()))
    # Just past mean + 2·std (exactly on it, float32 rounding may land on 254.99…).
    high = SSL4EO.apply(_const((mean + 2.01 * std).tolist()))
    centre = SSL4EO.apply(_const(mean.tolist()))
    assert torch.all(low == 0)
    assert torch.allclose(high, torch.ones_like(high))
    # 127.5 truncated to uint8 gives 127, as the SSL4EO-S12 pipeline's uint8 cast does.
    assert torch.allclose(centre, torch.full_like(centre, 127 / 255))
    clipped = SSL4EO.apply(_const((mean + 10 * std).tolist()))
    assert torch.allclose(clipped, torch.ones_like(clipped))


def test_ssl4eo_is_quantised_to_uint8_levels() -> None:
    x = torch.rand(2, 13, 8, 8) * 5000
    y = SSL4EO.apply(x) * 255
    assert torch.allclose(y, y.round())
    assert y.min() >= 0 and y.max() <= 255


def test_zscore_is_plain_standardisation() -> None:
    x = torch.rand(13, 4, 4) * 4000
    expected = (x - torch.tensor(S2_L1C_MEAN).view(13, 1, 1)) / torch.tensor(S2_L1C_STD).view(
        13, 1, 1
    )
    assert torch.allclose(ZSCORE.apply(x), expected)


def test_neutral_fill_is_centre_of_range() -> None:
    b10 = 10
    assert neutral_value(ZSCORE, b10) == 22.0
    x = _const(list(S2_L1C_MEAN))
    assert ZSCORE.apply(x)[b10].abs().max() == 0


def test_schemes_hash_differently_and_validate() -> None:
    assert SSL4EO.fingerprint() != ZSCORE.fingerprint()
    with pytest.raises(ValueError, match="one value per band"):
        Normalization(scheme="zscore", mean=(1.0, 2.0), std=(1.0,))
    with pytest.raises(ValueError, match="expected 13 bands"):
        SSL4EO.apply(torch.zeros(12, 2, 2))
