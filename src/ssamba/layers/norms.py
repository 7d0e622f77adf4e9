"""Normalisation and stochastic depth shared by both encoder families."""

from __future__ import annotations

from torch import Tensor, nn

NORMS = ("layernorm", "rmsnorm")


def make_norm(kind: str, dim: int, eps: float, device=None, dtype=None) -> nn.Module:
    """``"layernorm"`` (weight and bias) or ``"rmsnorm"`` (weight only)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, device=device, dtype=dtype)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps, device=device, dtype=dtype)
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's branch with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def linear_drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly over depth: ``linspace(0, rate, depth)``."""
    return [rate * i / (depth - 1) for i in range(depth)] if depth > 1 else [0.0] * depth
