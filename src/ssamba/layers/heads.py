"""Classification head: pool the tokens, LayerNorm, Linear."""

from __future__ import annotations

from torch import Tensor, nn

POOLINGS = ("mean", "cls")


class ClassifierHead(nn.Module):
    """``(B, L, D)`` tokens -> ``(B, num_classes)`` logits.

    ``pooling="mean"`` averages the patch tokens (every token after the
    ``num_prefix_tokens`` class tokens; the official ``ft_avgtok``); ``"cls"`` averages
    the prefix tokens (token 0 for SSAMBA, cls and dist for SSAST: ``ft_cls``).
    """

    def __init__(self, dim: int, num_classes: int, num_prefix_tokens: int, pooling: str = "mean",
                 device=None, dtype=None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if pooling == "cls" and num_prefix_tokens == 0:
            raise ValueError("pooling='cls' needs a class token (use_cls_token=True)")
        self.pooling = pooling
        self.num_prefix_tokens = num_prefix_tokens
        self.norm = nn.LayerNorm(dim, eps=1e-5, device=device, dtype=dtype)
        self.fc = nn.Linear(dim, num_classes, device=device, dtype=dtype)

    def pool(self, tokens: Tensor) -> Tensor:
        n = self.num_prefix_tokens
        chosen = tokens[:, n:] if self.pooling == "mean" else tokens[:, :n]
        return chosen.mean(dim=1)  # (B, D)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm(self.pool(tokens)))
