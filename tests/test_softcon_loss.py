"""The SoftCon loss: soft targets, masking, and which branch learns."""

from __future__ import annotations

import pytest
import torch

from backend.models.meta import VitConfig
from backend.models.vit import DinoVisionTransformer
from backend.training.augment import AugmentConfig, augment, random_token_masks, two_views
from backend.training.softcon_loss import (
    SoftConModel,
    label_similarity,
    lr_at,
    momentum_at,
    soft_cross_entropy,
    soft_targets,
)

TINY = VitConfig(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=32, layerscale_init=1.0)


def _tiny_vit(seed: int = 0) -> DinoVisionTransformer:
    torch.manual_seed(seed)
    return DinoVisionTransformer(TINY, in_chans=13)


def test_identical_labels_spread_mass_evenly() -> None:
    fractions = torch.tensor([[0.6, 0.4] + [0.0] * 7] * 4)
    targets = soft_targets(fractions, torch.ones(4, dtype=torch.bool), alpha=0.5)
    expected = 0.5 * torch.eye(4) + 0.5 / 4
    torch.testing.assert_close(targets, expected)
    assert (targets[~torch.eye(4, dtype=torch.bool)] > 0).all()


def test_no_labels_give_identity() -> None:
    fractions = torch.zeros(5, 9)
    targets = soft_targets(fractions, torch.zeros(5, dtype=torch.bool), alpha=0.7)
    torch.testing.assert_close(targets, torch.eye(5))


def test_mixed_batch_rows_and_columns() -> None:
    fractions = torch.tensor(
        [
            [1.0, 0, 0, 0, 0, 0, 0, 0, 0],  # water
            [0.5, 0.5, 0, 0, 0, 0, 0, 0, 0],  # water + trees
            [0, 0, 0, 0, 1.0, 0, 0, 0, 0],  # crops: shares nothing with the others
            [1.0, 0, 0, 0, 0, 0, 0, 0, 0],  # same as row 0, but unlabelled
        ]
    )
    has = torch.tensor([True, True, True, False])
    targets = soft_targets(fractions, has, alpha=0.5)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    # An unlabelled chip keeps the identity row and receives no mass from labelled rows.
    torch.testing.assert_close(targets[3], torch.eye(4)[3])
    assert (targets[:3, 3] == 0).all()
    # No shared class: all mass on itself. Partial overlap: cosine 1/√2 shares mass.
    torch.testing.assert_close(targets[2], torch.eye(4)[2])
    sim = 2**-0.5
    assert targets[0, 1].item() == pytest.approx(0.5 * sim / (1 + sim))
    assert targets[0, 0].item() == pytest.approx(0.5 + 0.5 / (1 + sim))
    assert label_similarity(fractions, has)[0, 3] == 0


def test_soft_cross_entropy_is_infonce_for_identity() -> None:
    logits = torch.randn(6, 6)
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(6))
    torch.testing.assert_close(soft_cross_entropy(logits, torch.eye(6)), expected)


def test_gradient_flows_only_through_the_online_branch() -> None:
    model = SoftConModel(_tiny_vit(), proj_hidden=16, proj_dim=8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 13, 32, 32, generator=g)
    v1, v2 = two_views(x, AugmentConfig(), g)
    fractions = torch.tensor([[1.0] + [0.0] * 8] * 4)
    masks = random_token_masks(4, 16, 0.5, g, x.device)
    out = model(v1, v2, fractions, torch.ones(4, dtype=torch.bool), masks)
    out.loss.backward()
    online = model.online_parameters()
    assert all(p.grad is not None for p in online)
    assert any(p.grad.abs().sum() > 0 for p in model.encoder.blocks.parameters())  # type: ignore[union-attr]
    assert model.encoder.mask_token.grad is not None
    assert model.encoder.mask_token.grad.abs().sum() > 0
    momentum = [*model.momentum_encoder.parameters(), *model.momentum_projector.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in momentum)

    before = [p.detach().clone() for p in model.momentum_encoder.parameters()]
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    model.update_momentum(0.9)
    for b, p, o in zip(
        before, model.momentum_encoder.parameters(), model.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(p, 0.9 * b + 0.1 * o)


def test_soft_off_uses_identity_targets() -> None:
    model = SoftConModel(_tiny_vit(), proj_hidden=16, proj_dim=8, soft=False)
    x = torch.rand(3, 13, 32, 32)
    out = model(x, x, torch.ones(3, 9) / 9, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(out.targets, torch.eye(3))


def test_masks_change_only_masked_inputs() -> None:
    vit = _tiny_vit().eval()
    with torch.no_grad():
        vit.mask_token.normal_()
    x = torch.rand(2, 13, 32, 32)
    with torch.no_grad():
        plain = vit.forward_features(x)[0]
        none_masked = vit.forward_features(x, torch.zeros(2, 16, dtype=torch.bool))[0]
        masked = vit.forward_features(
            x, random_token_masks(2, 16, 0.5, torch.Generator(), x.device)
        )[0]
    torch.testing.assert_close(plain, none_masked)
    assert not torch.allclose(plain, masked)
    with pytest.raises(ValueError, match="masks must be shaped"):
        vit.forward_features(x, torch.zeros(2, 15, dtype=torch.bool))


def test_token_masks_have_exact_count() -> None:
    masks = random_token_masks(7, 64, 0.3, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert masks.shape == (7, 64)
    assert (masks.sum(1) == round(0.3 * 64)).all()


def test_geometric_augmentation_keeps_every_pixel_spectrum() -> None:
    # Crops of scale 1 with flips and rotations only: each output pixel is an input pixel, so the
    # set of spectra (all 13 bands of a pixel together) is unchanged.
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0, noise_std=0.0)
    x = torch.rand(8, 13, 16, 16)
    y = augment(x, cfg, torch.Generator().manual_seed(3))
    for a, b in zip(x, y, strict=True):
        sa, sb = a.flatten(1).T, b.flatten(1).T
        torch.testing.assert_close(
            sa[sa[:, 0].argsort()], sb[sb[:, 0].argsort()], atol=1e-5, rtol=0
        )


def test_jitter_is_band_consistent_and_views_are_seeded() -> None:
    cfg = AugmentConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        rotate90=False,
        flip=False,
        jitter_p=1.0,
        noise_std=0.0,
        value_range=None,
    )
    x = torch.rand(4, 13, 8, 8)
    y = augment(x, cfg, torch.Generator().manual_seed(0))
    # One contrast factor per chip, the same for every band: (y - mean_y) = c · (x - mean_x).
    dx = x - x.mean((2, 3), keepdim=True)
    dy = y - y.mean((2, 3), keepdim=True)
    ratio = (dy / dx).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-3)
    a = two_views(x, AugmentConfig(), torch.Generator().manual_seed(5))
    b = two_views(x, AugmentConfig(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[0], a[1])


def test_schedules() -> None:
    assert momentum_at(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(99, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert lr_at(0, 100, 1e-3, 0.0, 10) == pytest.approx(1e-4)
    assert lr_at(10, 100, 1e-3, 0.0, 10) == pytest.approx(1e-3)
    assert lr_at(100, 100, 1e-3, 1e-5, 10) == pytest.approx(1e-5)
