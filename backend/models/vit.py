"""A DINOv2-style Vision Transformer in plain PyTorch, state-dict compatible with SoftCon.

The parameter names and shapes are exactly those of ``facebookresearch/dinov2``'s
``vision_transformer.DinoVisionTransformer`` built with ``block_chunks=0`` and no register tokens,
which is what the SoftCon ViT checkpoints were saved from. ``mask_token`` replaces masked patch
tokens only when ``forward_features`` is given a mask (Siamese masking in SoftMap's own SoftCon
pretraining, ``backend.training``); without one it is unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backend.models.meta import VitConfig

#: DINOv2 builds every LayerNorm with this epsilon; the pretrained statistics assume it.
LAYER_NORM_EPS = 1e-6

#: DINOv2's ``interpolate_offset``: scaling by (n + 0.1) / M avoids floating-point rounding
#: producing a grid one token short.
INTERPOLATE_OFFSET = 0.1


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: a Conv2d with kernel = stride = patch size."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """Patch features shaped ``[B, D, H / patch, W / patch]``."""
        out: Tensor = self.proj(x)
        return out


class Attention(nn.Module):
    """Multi-head self-attention with a fused, biased qkv projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Attend over tokens ``[B, N, D]``."""
        b, n, c = x.shape
        # DINOv2's layout: the 3·D outputs are (q|k|v) × heads × head_dim.
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(b, n, c)
        out: Tensor = self.proj(x)
        return out


class Mlp(nn.Module):
    """Two-layer MLP with exact (erf) GELU, as in DINOv2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply fc1 → GELU → fc2."""
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class LayerScale(nn.Module):
    """Per-channel residual scaling (CaiT/DINOv2); the parameter is named ``gamma``."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Scale ``x`` channel-wise."""
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, init_value: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, mlp_hidden)
        self.ls2 = LayerScale(dim, init_value)

    def forward(self, x: Tensor) -> Tensor:
        """One attention and one MLP residual step."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        out: Tensor = x + self.ls2(self.mlp(self.norm2(x)))
        return out


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT backbone returning normalised class and patch tokens.

    Args:
        cfg: Width, depth, heads, patch size and the image size the position embeddings cover.
        in_chans: Number of input bands (13 for Sentinel-2 L1C, 2 for Sentinel-1 GRD).
    """

    def __init__(self, cfg: VitConfig, in_chans: int) -> None:
        super().__init__()
        if cfg.img_size % cfg.patch_size:
            raise ValueError(
                f"img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}"
            )
        self.cfg = cfg
        self.in_chans = in_chans
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.grid_size = cfg.img_size // cfg.patch_size
        dim = cfg.embed_dim

        self.patch_embed = PatchEmbed(in_chans, dim, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size**2, dim))
        hidden = int(dim * cfg.mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, hidden, cfg.layerscale_init) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        # Used by masked pretraining (Siamese masking); kept so official checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def interpolate_pos_encoding(self, grid_h: int, grid_w: int) -> Tensor:
        """Position embeddings for a ``grid_h × grid_w`` token grid, as DINOv2 computes them.

        The trained grid is returned as is; any other grid is resampled bicubically with
        DINOv2's +0.1 scale offset (no antialiasing), so embeddings match the reference code.

        Args:
            grid_h: Token rows (input height / patch size).
            grid_w: Token columns (input width / patch size).

        Returns:
            Float tensor ``[1, 1 + grid_h·grid_w, D]``: class position first, then row-major.
        """
        m = self.grid_size
        if grid_h == m and grid_w == m:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = pos.shape[-1]
        if patch_pos.shape[1] != m * m:
            raise RuntimeError(f"pos_embed holds {patch_pos.shape[1]} patches, expected {m}²")
        resized = F.interpolate(
            patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2),
            scale_factor=((grid_h + INTERPOLATE_OFFSET) / m, (grid_w + INTERPOLATE_OFFSET) / m),
            mode="bicubic",
            antialias=False,
        )
        if tuple(resized.shape[-2:]) != (grid_h, grid_w):
            raise RuntimeError(
                f"position-embedding interpolation gave {tuple(resized.shape[-2:])}, "
                f"expected {(grid_h, grid_w)}"
            )
        resized = resized.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
        return torch.cat((cls_pos, resized), dim=1)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected a batch shaped [B, C, H, W], got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input bands, got {x.shape[1]}")
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(
                f"input height and width must be multiples of the patch size {p}; got {h}x{w} "
                f"(nearest valid sizes: {h // p * p or p}x{w // p * p or p})"
            )

    def forward_features(self, x: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embed a batch of chips.

        Args:
            x: Normalised input ``[B, in_chans, H, W]`` with H and W multiples of the patch size.
            masks: Optional boolean ``[B, h·w]`` (row-major tokens); True replaces that patch
                token by ``mask_token`` before position embeddings are added, as DINOv2's
                ``prepare_tokens_with_masks`` does. None leaves the forward pass unchanged.

        Returns:
            ``(cls, tokens)``: the class token ``[B, D]`` and patch tokens ``[B, h, w, D]``, both
            after the final LayerNorm (DINOv2's ``x_norm_clstoken`` / ``x_norm_patchtokens``).

        Raises:
            ValueError: if the shape, band count or spatial size is not valid for this model.
        """
        self._check_input(x)
        b = x.shape[0]
        feats = self.patch_embed(x)
        grid_h, grid_w = feats.shape[-2:]
        tokens = feats.flatten(2).transpose(1, 2)
        if masks is not None:
            if masks.shape != tokens.shape[:2]:
                raise ValueError(
                    f"masks must be shaped {tuple(tokens.shape[:2])}, got {tuple(masks.shape)}"
                )
            fill = self.mask_token.to(tokens.dtype).unsqueeze(0)
            tokens = torch.where(masks.unsqueeze(-1), fill, tokens)
        tokens = torch.cat((self.cls_token.expand(b, -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(grid_h, grid_w).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return tokens[:, 0], tokens[:, 1:].reshape(b, grid_h, grid_w, self.embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """The normalised class token ``[B, D]`` (what DINOv2's ``forward`` returns)."""
        return self.forward_features(x)[0]
