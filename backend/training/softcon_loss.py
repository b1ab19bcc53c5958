"""The SoftCon objective: contrastive learning whose targets are softened by label similarity.

An online encoder + projection head sees view 1 with some patch tokens masked (Siamese masking);
a momentum (EMA) copy of both sees view 2. Logits are ``z_i · z'_j / τ`` between L2-normalised
projections. Plain InfoNCE would ask row ``i`` to put all its mass on ``j = i``; SoftCon instead
gives mass to other chips of the batch in proportion to how similar their land-cover labels are,
so chips with the same land cover are not pushed apart as negatives.

Label similarity: the cosine of the two class-fraction vectors. It is 1 for identical
compositions, 0 for chips sharing no class, in between for partial overlap; it ignores how much of
the chip is labelled (fractions are over labelled pixels) and, unlike a Jaccard of multi-hot
vectors, it does not jump when a class crosses a presence threshold.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.models.vit import DinoVisionTransformer


def label_similarity(fractions: Tensor, has_label: Tensor) -> Tensor:
    """Cosine similarity ``[B, B]`` of class-fraction vectors; 0 where either chip is unlabelled.

    Args:
        fractions: ``[B, K]`` class fractions (non-negative).
        has_label: ``[B]`` boolean, False for chips without a usable label.
    """
    unit = F.normalize(fractions.float(), dim=1, eps=1e-8)
    sim = (unit @ unit.T).clamp(min=0)
    both = has_label[:, None] & has_label[None, :]
    return torch.where(both, sim, torch.zeros_like(sim))


def soft_targets(fractions: Tensor, has_label: Tensor, alpha: float) -> Tensor:
    """Target distributions ``[B, B]``: ``(1 − α)·I + α·rownorm(S)``, identity rows if unlabelled.

    Args:
        fractions: ``[B, K]`` class fractions.
        has_label: ``[B]`` boolean.
        alpha: Weight of the label-similarity part (0 = plain InfoNCE).

    Returns:
        Row-stochastic targets on ``fractions``' device, float32.
    """
    b = fractions.shape[0]
    eye = torch.eye(b, device=fractions.device)
    sim = label_similarity(fractions, has_label)
    rows = sim.sum(dim=1, keepdim=True)
    spread = torch.where(rows > 0, sim / rows.clamp(min=1e-12), eye)
    target = (1 - alpha) * eye + alpha * spread
    return torch.where(has_label[:, None], target, eye)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over rows of ``−Σ_j t_ij · log softmax(logits)_ij``."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


class ProjectionHead(nn.Module):
    """Two-layer MLP from the class token to the contrastive space."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        """Project ``[B, dim]`` to ``[B, out]`` (not normalised)."""
        out: Tensor = self.net(x)
        return out


@dataclass(frozen=True)
class LossOutput:
    """One step's loss and what it was made of."""

    loss: Tensor
    logits: Tensor
    targets: Tensor
    labelled: int


class SoftConModel(nn.Module):
    """Online encoder + projector, their EMA copies, and the SoftCon loss.

    Args:
        encoder: The backbone being trained (its class token is the chip embedding).
        proj_hidden: Projector hidden width.
        proj_dim: Contrastive space dimension.
        temperature: ``τ`` in ``z·z′ᵀ/τ``.
        alpha: Weight of the label similarities in the targets.
        soft: False ignores labels (plain InfoNCE with a momentum encoder).
    """

    def __init__(
        self,
        encoder: DinoVisionTransformer,
        *,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.2,
        alpha: float = 0.5,
        soft: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionHead(encoder.embed_dim, proj_hidden, proj_dim)
        self.momentum_encoder = copy.deepcopy(encoder)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in (*self.momentum_encoder.parameters(), *self.momentum_projector.parameters()):
            p.requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha
        self.soft = soft

    def online_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (encoder and projector)."""
        return [*self.encoder.parameters(), *self.projector.parameters()]

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """``θ′ ← m·θ′ + (1 − m)·θ`` for the momentum encoder and projector."""
        pairs = (
            (self.encoder, self.momentum_encoder),
            (self.projector, self.momentum_projector),
        )
        for online, target in pairs:
            src: list[Tensor] = [p.data for p in online.parameters()]
            dst: list[Tensor] = [p.data for p in target.parameters()]
            torch._foreach_mul_(dst, m)
            torch._foreach_add_(dst, src, alpha=1 - m)

    def forward(
        self,
        view1: Tensor,
        view2: Tensor,
        fractions: Tensor,
        has_label: Tensor,
        masks: Tensor | None = None,
    ) -> LossOutput:
        """The SoftCon loss of a batch.

        Args:
            view1: Online view ``[B, C, H, W]``.
            view2: Momentum view, same shape.
            fractions: ``[B, 9]`` class fractions of each chip.
            has_label: ``[B]`` boolean.
            masks: ``[B, tokens]`` Siamese mask of the online view's patch tokens, or None.
        """
        z = F.normalize(self.projector(self.encoder.forward_features(view1, masks)[0]), dim=1)
        with torch.no_grad():
            cls2 = self.momentum_encoder.forward_features(view2)[0]
            z2 = F.normalize(self.momentum_projector(cls2), dim=1)
        logits = z.float() @ z2.float().T / self.temperature
        if self.soft:
            targets = soft_targets(fractions, has_label, self.alpha)
        else:
            targets = torch.eye(logits.shape[0], device=logits.device)
        return LossOutput(
            soft_cross_entropy(logits, targets), logits.detach(), targets, int(has_label.sum())
        )


def momentum_at(step: int, total: int, start: float, end: float) -> float:
    """EMA momentum on a cosine ramp from ``start`` to ``end`` over ``total`` steps."""
    if total <= 1:
        return end
    return end - (end - start) * (math.cos(math.pi * step / (total - 1)) + 1) / 2


def lr_at(step: int, total: int, base: float, minimum: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to ``minimum``."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return minimum + (base - minimum) * (1 + math.cos(math.pi * progress)) / 2
