"""The shared backbone: a transformer encoder over the set of objects of an event.

There is no position encoding, so the encoder is permutation-equivariant: permuting the objects of an
event permutes the output tokens the same way, and the masked-mean pool is invariant. Padding is kept
out of attention with a key mask, and padded tokens are zeroed on the way out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, n_obj, dim = x.shape
        q, k, v = self.qkv(x).view(batch, n_obj, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, n_obj, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), key_mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class Backbone(nn.Module):
    """Shared across experiments: the encoder blocks and the learned dummy-object token.

    The dummy token lives here (not in a private adapter) because every experiment's replaced-object
    and masked-regression tasks put the same token in place of a hidden object. It is used inside this
    module's forward so that ZeRO-3 gathers it with the rest of the backbone.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.dummy_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, replaced: torch.Tensor | None = None) -> torch.Tensor:
        if replaced is not None:
            tokens = torch.where(replaced[..., None], self.dummy_token.to(tokens.dtype), tokens)
        # An event without any real object would have every key masked, and softmax over nothing is NaN:
        # let such events attend to their (zeroed) padding instead; their tokens are zeroed below anyway.
        key_mask = mask | ~mask.any(dim=1, keepdim=True)
        x = tokens
        for block in self.blocks:
            x = block(x, key_mask)
        return torch.where(mask[..., None], self.norm(x), 0.0)
