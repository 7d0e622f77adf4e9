"""Transformer (DeiT) block of SSAST: pre-norm multi-head self-attention and a GELU MLP."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .norms import DropPath

ATTENTION_KINDS = ("sdpa", "explicit")


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (rows ordered q; k; v).

    ``attention="sdpa"`` uses PyTorch's ``scaled_dot_product_attention`` (memory-efficient
    kernels); ``"explicit"`` materialises ``softmax(Q K^T / sqrt(d)) V`` as the official
    code does - the efficiency comparison needs both.
    """

    def __init__(self, dim: int, num_heads: int, attention: str = "sdpa", device=None, dtype=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {attention!r}; choose one of {ATTENTION_KINDS}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attention = attention
        self.qkv = nn.Linear(dim, 3 * dim, bias=True, device=device, dtype=dtype)
        self.proj = nn.Linear(dim, dim, device=device, dtype=dtype)

    def _qkv(self, x: Tensor) -> Tensor:
        """``(3, B, H, L, hd)``: queries, keys and values per head."""
        batch, length, _ = x.shape
        return self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    @staticmethod
    def _weights(q: Tensor, k: Tensor) -> Tensor:
        return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)  # (B, H, L, L)

    def attention_weights(self, x: Tensor) -> Tensor:
        """``softmax(Q K^T / sqrt(d))`` of the block input ``x``: ``(B, H, L, L)``, indexed
        ``[output, source]`` (what ``ssamba explain`` draws)."""
        q, k, _ = self._qkv(x)
        return self._weights(q, k)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        q, k, v = self._qkv(x)  # (B, H, L, hd) each
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = self._weights(q, k) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` (exact GELU)."""

    def __init__(self, dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, dim, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``, LayerNorm eps 1e-6, MLP ratio 4."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attention: str = "sdpa",
                 norm_eps: float = 1e-6, drop_path: float = 0.0, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **kw)
        self.attn = Attention(dim, num_heads, attention, **kw)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **kw)
        self.mlp = Mlp(dim, hidden, **kw)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
