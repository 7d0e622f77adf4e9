"""What both encoder families share: spectrogram -> tokens -> body -> optional classifier.

Every encoder maps a normalised log-mel spectrogram ``(B, T, F)`` (and an optional
boolean patch mask) to tokens ``(B, L, D)``. It never sees a loss or a task: the
objectives and the training loop live elsewhere.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from ..frontend import FrontendConfig
from ..layers import ClassifierHead, PatchEmbed, resample_pos_embed
from .encoder_config import EncoderConfig, checked_labels


class SpectrogramEncoder(nn.Module):
    """Shared token pipeline; families implement :meth:`encode` ``(B, L, D) -> (B, L, D)``."""

    family: str = ""
    #: The front end the encoder's input comes from (log-mel options and the dataset
    #: statistics it was trained with), or None where unknown: constructor-level metadata,
    #: given by training runs, conversions and loading, written to and read from
    #: ``config.json`` by :mod:`ssamba.models.serialization`; the embedder and the
    #: evaluation commands build their front end from it.
    frontend_config: FrontendConfig | None
    #: The classes of a classifier's outputs, in output order: ``{"ids": [...], "names":
    #: [...], "multilabel": bool}`` (label ids, display names, sigmoid rather than softmax
    #: scores), or None where unknown: constructor-level metadata (see
    #: :func:`checked_labels`), given by fine-tuning and loading and saved in
    #: ``config.json``, so that evaluate, predict and exports name the classes.
    labels: dict | None

    def __init__(self, config: EncoderConfig, num_prefix_tokens: int, frontend: FrontendConfig | None = None,
                 labels: dict | None = None):
        super().__init__()
        self.config = config
        if frontend is not None and frontend.num_mel_bins != config.input_fdim:
            raise ValueError(f"front end with {frontend.num_mel_bins} mel bins for an encoder laid out for "
                             f"{config.input_fdim} (input_fdim)")
        self.frontend_config = frontend
        self.labels = None if labels is None else checked_labels(
            config.num_classes, labels.get("ids"), labels.get("names"), labels.get("multilabel", False))
        dim = config.embed_dim
        self.num_prefix_tokens = num_prefix_tokens
        self.patch_embed = PatchEmbed(dim, config.patch_size, config.patch_stride)
        self.grid = self.patch_embed.grid(config.input_tdim, config.input_fdim)  # (F', T')
        self.num_patches = self.grid[0] * self.grid[1]
        self.cls_tokens = nn.Parameter(torch.zeros(1, num_prefix_tokens, dim)) if num_prefix_tokens else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_prefix_tokens + self.num_patches, dim))
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_tokens is not None:
            nn.init.trunc_normal_(self.cls_tokens, std=0.02)
        nn.init.xavier_normal_(self.mask_embed)
        for p in (self.pos_embed, self.cls_tokens, self.mask_embed):
            if p is not None:
                p._no_weight_decay = True
        self.head = (
            ClassifierHead(dim, config.num_classes, num_prefix_tokens, config.pooling)
            if config.num_classes > 0
            else None
        )

    # -- tokens -------------------------------------------------------------------
    def patch_grid(self, num_frames: int) -> tuple[int, int]:
        """Patch grid ``(F', T')`` for a spectrogram of ``num_frames`` frames."""
        return self.patch_embed.grid(num_frames, self.config.input_fdim)

    def embed(self, spec: Tensor, mask: Tensor | None = None) -> Tensor:
        """Patch tokens with masked ones replaced, class tokens prepended, positions added."""
        if spec.dim() != 3 or spec.shape[2] != self.config.input_fdim:
            raise ValueError(
                f"spectrogram must be (batch, frames, {self.config.input_fdim} mel bins), "
                f"got shape {tuple(spec.shape)}"
            )
        grid = self.patch_grid(spec.shape[1])  # raises if shorter than one patch
        tokens = self.patch_embed(spec)  # (B, P, D)
        batch, num_patches, dim = tokens.shape
        if mask is not None:
            if mask.dtype != torch.bool or tuple(mask.shape) != (batch, num_patches):
                raise ValueError(
                    f"mask must be a bool tensor of shape {(batch, num_patches)}, "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            tokens = torch.where(mask.unsqueeze(-1), self.mask_embed.to(tokens.dtype), tokens)
        n = self.num_prefix_tokens
        pos_prefix, pos_patch = self.pos_embed[:, :n], self.pos_embed[:, n:]
        pos_patch = resample_pos_embed(pos_patch, self.grid, grid)  # identity on the native grid
        tokens = tokens + pos_patch
        if n:
            tokens = torch.cat([(self.cls_tokens + pos_prefix).expand(batch, -1, -1), tokens], dim=1)
        return tokens  # (B, n + P, D)

    # -- forward ------------------------------------------------------------------
    def encode(self, tokens: Tensor, hidden_states: list[Tensor] | None = None) -> Tensor:
        """Run the body; append each layer's (or layer pair's) output to ``hidden_states``."""
        raise NotImplementedError

    def forward_features(self, spec: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, T, F)`` spectrogram (+ ``(B, num_patches)`` bool mask) -> ``(B, L, D)`` tokens.

        ``L = num_prefix_tokens + F' * T'``: class token(s) first, then patches in
        frequency-row-first order.
        """
        return self.encode(self.embed(spec, mask))

    def forward_hidden_states(self, spec: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """Every representation on the way, each ``(B, L, D)``: the embedded tokens, the
        output of each layer (each layer pair for SSAMBA with ``use_layer_pairing``), and
        last the normalised output of :meth:`forward_features` - as SUPERB-style layer
        weighting wants them."""
        tokens = self.embed(spec, mask)
        states = [tokens]
        states.append(self.encode(tokens, states))
        return states

    # -- attention maps (ssamba explain) ---------------------------------------------
    #: Units whose maps :meth:`attention_maps` can keep whole: inner channels (SSAMBA) or
    #: heads (SSAST); 0 where the family has no attention to draw.
    attention_units: int = 0

    def attention_maps(self, spec: Tensor, layers: list[int], channels: Sequence[int] = (),
                       absolute: bool = True) -> Iterator[tuple[str, Tensor, Tensor | None]]:
        """What each token reads, per layer of ``layers`` (block indices) and direction,
        for one spectrogram batch ``(B, T, F)``: ``(key, mean (B, L, L), kept (B, k, L,
        L) or None)``, indexed ``[output token, source token]``, with ``key`` like
        ``"layer3/causal"``; the maps of ``channels`` (units, see
        :attr:`attention_units`) are kept whole. One layer at a time: each map is
        ``L^2`` floats per unit."""
        raise ValueError(f"{type(self).__name__} has no attention maps to draw")

    def block_inputs(self, spec: Tensor, modules: dict[int, nn.Module]) -> dict[int, tuple[Tensor, bool]]:
        """The input of each of ``modules`` (index -> submodule) in one eval forward of
        ``spec``, with whether it was called ``mirrored``: on the path where every block
        calls its mixer, without recording an autograd graph."""
        captured: dict[int, tuple[Tensor, bool]] = {}

        def hook_for(index: int):
            def hook(module, args, kwargs):
                captured[index] = (args[0].detach(), bool(kwargs.get("mirrored", False)))
            return hook

        handles = [module.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, module in modules.items()]
        flags = [(p, p.requires_grad) for p in self.parameters()]
        was_training = self.training
        self.eval()
        try:
            for p, _ in flags:  # grad mode on (the per-block path), no graph recorded
                p.requires_grad_(False)
            with torch.enable_grad():
                self.forward_features(spec)
        finally:
            for handle in handles:
                handle.remove()
            for p, flag in flags:
                p.requires_grad_(flag)
            self.train(was_training)
        return captured

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` + ``model.safetensors`` (see :func:`ssamba.save_model`)."""
        from .serialization import save_model

        save_model(self, directory)

    def push_to_hub(self, repo_id: str, **options) -> str:
        """Upload to the Hugging Face Hub with a generated model card; see
        :func:`ssamba.models.hub.push_to_hub` (``private``, ``token``, ``training``,
        ``metrics``, ...). Returns the commit URL."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **options)

    @classmethod
    def from_pretrained(cls, directory, **overrides) -> "SpectrogramEncoder":
        """Load a directory written by :meth:`save_pretrained`, a training run, or a
        Hugging Face repo id (``org/name[@revision]``, see :mod:`ssamba.models.hub`)."""
        from .loading import load_model

        model = load_model(directory, **overrides)
        if not isinstance(model, cls):
            raise TypeError(f"{directory} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def _require_head(self) -> ClassifierHead:
        if self.head is None:
            raise RuntimeError(
                "this encoder has no classifier head; build it with num_classes > 0 "
                "or use forward_features() for embeddings"
            )
        return self.head

    def forward_head(self, tokens: Tensor) -> Tensor:
        """``(B, L, D)`` tokens -> ``(B, num_classes)`` logits."""
        return self._require_head()(tokens)

    def forward(self, spec: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits ``(B, num_classes)``; needs ``num_classes > 0``."""
        head = self._require_head()
        return head(self.forward_features(spec, mask))

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters tagged ``_no_weight_decay`` (positions, tokens, A_log, D)."""
        return {name for name, p in self.named_parameters() if getattr(p, "_no_weight_decay", False)}
