"""Convert the official SSAMBA and SSAST checkpoints (``.pth``) into ssamba models.

The official code (SiavashShams/ssamba ``AMBAModel`` on hustvl/Vim; YuanGongND/ssast
``ASTModel`` on timm 0.4.5 DeiT) saves the ``state_dict`` of a ``DataParallel`` wrapper
and nothing else: no config, no patch stride, no input length. :func:`convert_official`
rebuilds all of it from the tensors alone and returns a normal ssamba model whose
forward pass is the official computation (the SSAMBA presets' quirk options: layer
pairs on flipped sequences with summed residuals, bimamba v2 with the directions
averaged before ``out_proj``, the final norm applied twice, the class token at 0).

What is read from the tensors:

* family - ``v.layers.*`` (SSAMBA) or ``v.blocks.*`` (SSAST);
* width ``D`` (``v.cls_token``), depth (layer / block indices), the patch kernel
  (``v.patch_embed.proj.weight.shape[2:]``), SSAMBA's inner width, ``d_state``,
  ``d_conv`` and ``dt_rank`` (mixer shapes), SSAST's MLP ratio (``fc1``);
* size - tiny / small / base for the released widths 192 / 384 / 768 ("custom" else);
* stage - pretraining (``cpredlayer``/``gpredlayer``/``mask_embed``) or fine-tuned
  (``mlp_head``), and the number of classes (``mlp_head.1.weight.shape[0]``);
* SSAMBA norm - LayerNorm, or RMSNorm when every ``norm.bias`` is missing
  (``rms_norm=True`` builds);
* SSAMBA mixer - bimamba ``"v2"`` (all ``_b`` twins) or ``"none"`` (no twins, a causal
  Mamba mixer). ``"v1"`` (only ``A_b_log``) is refused: its fused scan is not
  implemented here;
* SSAST prefix tokens - cls + dist (``v.dist_token``) or cls only (``base_nokd``);
* pretraining input size - ``p_input_fdim`` / ``p_input_tdim`` when stored.

What is inferred, because the weights do not store it:

* patch stride and input length. Pretraining files use stride = kernel (the official
  code refuses anything else) and their ``p_input_*`` size. For fine-tuned files, the
  number of patch rows of ``v.pos_embed`` (rows minus the 1 or 2 prefix rows) is
  matched against the official recipe geometries: 128 mel bins; strides 10x10 or 16x16
  for 16x16 patches, 128x1 or 128x2 for 128x2 frames; 1024 (AudioSet), 512 (ESC-50)
  or 128 (Speech Commands) frames. Exactly one fit is taken, e.g. SSAMBA fine-tuned on
  Speech Commands: 145 rows = 1 + 12x12 = 128 frames at stride 10; SSAST frame model:
  129 rows = 2 + 1x127 = 128 frames at stride 128x1. When no recipe length fits, a
  stride that divides the rows is used with the shortest input length giving that
  grid; when several fit, or none, the error asks for ``input_tdim`` and/or
  ``patch_stride``, which the caller can always pass to override the inference
  (``input_fdim`` likewise; 128 otherwise);
* SSAST attention heads - 3 / 6 / 12 for 192 / 384 / 768 (DeiT), ``D / 64`` else;
  pass ``num_heads`` for anything else;
* front end - pretraining and 1024-frame models get the AudioSet statistics, 512-frame
  models ESC-50's, 128-frame models Speech Commands' (the official recipes); pass
  ``dataset`` to choose;
* classifier pooling - the recipes' mean over the patch tokens (``ft_avgtok``); pass
  ``pooling="cls"`` for models fine-tuned with ``ft_cls``.

Every key is mapped or on an explicit ignore list (the unused ImageNet heads ``v.head``
/ ``v.head_dist`` and the ``p_input_*`` metadata); anything else, and any missing key,
is an error that names it. Files are read with ``torch.load(weights_only=True)``: a
file that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

OFFICIAL_SUFFIXES = (".pth", ".pt")
KEY_PREFIX = "module."
OBJECTIVE_WEIGHTS = "objective.safetensors"
OBJECTIVE_CONFIG = "objective.json"
CONVERSION_INFO = "conversion.json"

#: Keys present in official files that no ssamba parameter receives (all optional).
IGNORED_KEYS = {
    "ssamba": ("v.head.weight", "v.head.bias", "p_input_fdim", "p_input_tdim"),
    "ssast": ("v.head.weight", "v.head.bias", "v.head_dist.weight", "v.head_dist.bias",
              "p_input_fdim", "p_input_tdim"),
}
#: Official recipe geometries used to infer the stride and input length of fine-tuned files.
RECIPE_FDIM = 128
RECIPE_TDIMS = (1024, 512, 128)
RECIPE_STRIDES = {(16, 16): ((10, 10), (16, 16)), (128, 2): ((128, 1), (128, 2))}
SIZES = {192: "tiny", 384: "small", 768: "base"}
SSAST_HEADS = {192: 3, 384: 6, 768: 12}
DATASET_BY_TDIM = {1024: "audioset", 512: "esc50", 128: "speechcommands"}

_PRETRAIN_HEADS = tuple(f"{head}.{i}.{p}" for head in ("cpredlayer", "gpredlayer")
                        for i in (0, 2) for p in ("weight", "bias"))
_OBJECTIVE_NAMES = {"cpredlayer": "nce_head", "gpredlayer": "mse_head"}
_FINETUNE_HEAD = {"mlp_head.0.weight": "head.norm.weight", "mlp_head.0.bias": "head.norm.bias",
                  "mlp_head.1.weight": "head.fc.weight", "mlp_head.1.bias": "head.fc.bias"}
# SSAMBA mixer: official name -> ours (``in_proj``/``out_proj`` shared; ``_b`` twins backward)
_MIXER_SHARED = {"in_proj.weight": "in_proj.weight", "out_proj.weight": "out_proj.weight"}
_MIXER_FORWARD = {"A_log": "forward_ssm.A_log", "D": "forward_ssm.D",
                  "conv1d.weight": "forward_ssm.conv1d.weight", "conv1d.bias": "forward_ssm.conv1d.bias",
                  "x_proj.weight": "forward_ssm.x_proj.weight",
                  "dt_proj.weight": "forward_ssm.dt_proj.weight", "dt_proj.bias": "forward_ssm.dt_proj.bias"}
_MIXER_BACKWARD = {"A_b_log": "backward_ssm.A_log", "D_b": "backward_ssm.D",
                   "conv1d_b.weight": "backward_ssm.conv1d.weight", "conv1d_b.bias": "backward_ssm.conv1d.bias",
                   "x_proj_b.weight": "backward_ssm.x_proj.weight",
                   "dt_proj_b.weight": "backward_ssm.dt_proj.weight", "dt_proj_b.bias": "backward_ssm.dt_proj.bias"}
# Config options the weights do not fix: the caller may change them (the defaults are official).
_BEHAVIOUR_OPTIONS = {"norm_eps", "use_direction_average", "use_layer_pairing", "use_double_final_norm"}
_BLOCK_PARAMS = tuple(f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
                      for p in ("weight", "bias"))


class OfficialCheckpointError(ValueError):
    """The file is not a (readable, safe, complete) official SSAMBA / SSAST checkpoint."""


@dataclass
class OfficialInfo:
    """What :func:`convert_official` found in (or inferred for) an official checkpoint."""

    family: str  # "ssamba" or "ssast"
    size: str  # "tiny", "small", "base" or "custom"
    stage: str  # "pretrain" or "finetune"
    embed_dim: int
    depth: int
    patch_size: tuple[int, int]  # conv kernel (freq, time)
    patch_stride: tuple[int, int]
    input_fdim: int
    input_tdim: int
    num_classes: int  # 0 for pretraining files
    pretrain_input: tuple[int, int] | None  # (p_input_fdim, p_input_tdim) when stored
    geometry: str  # how patch_stride / input_tdim were determined
    dataset: str  # front-end statistics given to the model
    norm: str | None = None  # SSAMBA: "layernorm" or "rmsnorm"
    bimamba: str | None = None  # SSAMBA: "v2" or "none"
    num_heads: int | None = None  # SSAST
    num_prefix_tokens: int = 1
    preset: str | None = None  # the ssamba preset of the same architecture, if any
    num_keys: int = 0
    mapped_keys: int = 0
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        kind = "pretrained" if self.stage == "pretrain" else f"fine-tuned, {self.num_classes} classes"
        arch = (f"{self.norm}, bimamba {self.bimamba}" if self.family == "ssamba"
                else f"{self.num_heads} heads, {self.num_prefix_tokens} prefix token(s)")
        lines = [
            f"official {self.family.upper()} {self.size} ({kind}): {self.depth} layers, D={self.embed_dim}, {arch}",
            f"kernel {self.patch_size[0]}x{self.patch_size[1]}, stride {self.patch_stride[0]}x{self.patch_stride[1]}, "
            f"input {self.input_fdim} bins x {self.input_tdim} frames ({self.geometry})",
            f"front end: {self.dataset} statistics; mapped {self.mapped_keys} of {self.num_keys} tensors"
            + (f"; ignored {', '.join(self.ignored_keys)}" if self.ignored_keys else ""),
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class ConvertedCheckpoint:
    """An official checkpoint as an ssamba model, its pretraining heads and what was found."""

    model: nn.Module
    objective_state: dict[str, Tensor] | None  # MaskedPatchModeling state (nce_head.*, mse_head.*)
    info: OfficialInfo


# -- reading ------------------------------------------------------------------------
def read_official(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path``, read with ``torch.load(weights_only=True)``."""
    import pickle

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if not path.is_file():
        raise OfficialCheckpointError(f"{path} is not a file (expected an official .pth checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        message = str(err)
        if "Weights only load failed" in message:
            reason = re.search(r"WeightsUnpickler error: ([^\n]*?)(?: Please use|\n|$)", message)
            raise OfficialCheckpointError(
                f"refusing to load {path}: it holds Python objects other than tensors "
                f"({reason.group(1).strip() if reason else 'not a plain state dict'}), and unpickling "
                "them could run arbitrary code. The official SSAMBA/SSAST checkpoints are plain state "
                "dicts; if you trust this file, load it yourself with torch.load(..., weights_only=False) "
                "and torch.save() its model state_dict() alone."
            ) from None
        raise OfficialCheckpointError(
            f"could not read {path}: the file is truncated or corrupt ({err})"
        ) from None
    except Exception as err:  # torch raises RuntimeError, EOFError, KeyError, ... on damaged files
        detail = f"{type(err).__name__}: {err}".strip().rstrip(":")
        raise OfficialCheckpointError(
            f"could not read {path}: the file is truncated or corrupt, or not a PyTorch checkpoint "
            f"({detail[:300]})"
        ) from None
    return _as_state_dict(state, str(path))


def _as_state_dict(state: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(state, Mapping):
        raise OfficialCheckpointError(
            f"{source} holds a {type(state).__name__}, not a state dict of an official SSAMBA/SSAST model"
        )
    if not all(isinstance(v, Tensor) for v in state.values()):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            inner = state.get(wrapper)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
        bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, Tensor)]
        raise OfficialCheckpointError(
            f"{source} is not a state dict of tensors: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        )
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise OfficialCheckpointError(f"{source} has non-string keys, e.g. {bad[0]!r}")
    return dict(state)


def _strip_prefix(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    prefixed = [k for k in state if k.startswith(KEY_PREFIX)]
    if not prefixed:
        return state
    if len(prefixed) != len(state):
        other = next(k for k in state if not k.startswith(KEY_PREFIX))
        raise OfficialCheckpointError(
            f"{source} mixes keys with and without the DataParallel prefix {KEY_PREFIX!r} (e.g. {other!r})"
        )
    return {k[len(KEY_PREFIX):]: v for k, v in state.items()}


def _names(keys, limit: int = 12) -> str:
    keys = sorted(keys, key=_natural)
    text = ", ".join(keys[:limit])
    return text + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _natural(key: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _detect_family(keys: list[str], source: str) -> str:
    ssamba = any(k.startswith("v.layers.") for k in keys)
    ssast = any(k.startswith("v.blocks.") for k in keys)
    if ssamba and ssast:
        raise OfficialCheckpointError(f"{source} has both SSAMBA (v.layers.*) and SSAST (v.blocks.*) keys")
    if ssamba or ssast:
        return "ssamba" if ssamba else "ssast"
    hint = ""
    if any(k.startswith(("layers.0.mixer.forward_ssm", "blocks.0.attn")) for k in keys) or "cls_tokens" in keys:
        hint = (" It looks like an ssamba state dict: ssamba saves model directories "
                "(model.safetensors + config.json), load those with ssamba.load_model().")
    raise OfficialCheckpointError(
        f"{source} is not an official SSAMBA or SSAST checkpoint: it has no v.layers.* (SSAMBA) or "
        f"v.blocks.* (SSAST) keys. Its keys begin: {', '.join(list(keys)[:6]) if keys else '(none)'}.{hint}"
    )


# -- key maps ------------------------------------------------------------------------
# A target is (destination, name, prefix slot): destination "model" or "objective";
# slot is the index in our ``cls_tokens`` for the official cls / dist tokens.
Target = tuple[str, str, "int | None"]


def _depth(keys: set[str], pattern: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(indices) + 1 if indices else 0


def _stage_keys(keys: set[str], source: str) -> tuple[str, dict[str, Target]]:
    if any(k.startswith("mlp_head.") for k in keys):
        return "finetune", {k: ("model", v, None) for k, v in _FINETUNE_HEAD.items()}
    if any(k == "mask_embed" or k.startswith(("cpredlayer.", "gpredlayer.")) for k in keys):
        mapping: dict[str, Target] = {"mask_embed": ("model", "mask_embed", None)}
        for key in _PRETRAIN_HEADS:
            head, rest = key.split(".", 1)
            mapping[key] = ("objective", f"{_OBJECTIVE_NAMES[head]}.{rest}", None)
        return "pretrain", mapping
    raise OfficialCheckpointError(
        f"{source} has neither the fine-tuning head (mlp_head.0.*, mlp_head.1.*) nor the pretraining "
        f"heads and mask embedding (mask_embed, {', '.join(_PRETRAIN_HEADS)}): missing keys"
    )


def _ssamba_keys(keys: set[str], source: str) -> tuple[dict[str, Target], dict[str, Any]]:
    depth = _depth(keys, r"v\.layers\.(\d+)\.")
    if any(k.endswith(".mixer.conv1d_b.weight") for k in keys):
        bimamba = "v2"
    elif any(k.endswith(".mixer.A_b_log") for k in keys):
        raise OfficialCheckpointError(
            f"{source} is a bimamba 'v1' SSAMBA model (A_b_log without the other _b twins); only the "
            "recipes' bimamba 'v2' (and 'none') can be converted"
        )
    else:
        bimamba = "none"
    norm = "layernorm" if any(k == "v.norm_f.bias" or re.match(r"v\.layers\.\d+\.norm\.bias$", k)
                              for k in keys) else "rmsnorm"
    mixer = {**_MIXER_SHARED, **_MIXER_FORWARD, **(_MIXER_BACKWARD if bimamba == "v2" else {})}
    params = ("weight", "bias") if norm == "layernorm" else ("weight",)
    mapping: dict[str, Target] = {
        "v.cls_token": ("model", "cls_tokens", 0),
        "v.pos_embed": ("model", "pos_embed", None),
        "v.patch_embed.proj.weight": ("model", "patch_embed.proj.weight", None),
        "v.patch_embed.proj.bias": ("model", "patch_embed.proj.bias", None),
    }
    for i in range(depth):
        for official, ours in mixer.items():
            mapping[f"v.layers.{i}.mixer.{official}"] = ("model", f"layers.{i}.mixer.{ours}", None)
        for p in params:
            mapping[f"v.layers.{i}.norm.{p}"] = ("model", f"layers.{i}.norm.{p}", None)
    for p in params:
        mapping[f"v.norm_f.{p}"] = ("model", f"norm_f.{p}", None)
    return mapping, {"depth": depth, "bimamba": bimamba, "norm": norm}


def _ssast_keys(keys: set[str], source: str) -> tuple[dict[str, Target], dict[str, Any]]:
    depth = _depth(keys, r"v\.blocks\.(\d+)\.")
    distilled = "v.dist_token" in keys
    mapping: dict[str, Target] = {
        "v.cls_token": ("model", "cls_tokens", 0),
        "v.pos_embed": ("model", "pos_embed", None),
        "v.patch_embed.proj.weight": ("model", "patch_embed.proj.weight", None),
        "v.patch_embed.proj.bias": ("model", "patch_embed.proj.bias", None),
        "v.norm.weight": ("model", "norm.weight", None),
        "v.norm.bias": ("model", "norm.bias", None),
    }
    if distilled:
        mapping["v.dist_token"] = ("model", "cls_tokens", 1)
    for i in range(depth):
        for name in _BLOCK_PARAMS:
            mapping[f"v.blocks.{i}.{name}"] = ("model", f"blocks.{i}.{name}", None)
    return mapping, {"depth": depth, "num_prefix_tokens": 2 if distilled else 1}


def _check_keys(keys: set[str], mapping: dict[str, Target], family: str, source: str) -> list[str]:
    ignored = [k for k in IGNORED_KEYS[family] if k in keys]
    missing = set(mapping) - keys
    extra = keys - set(mapping) - set(IGNORED_KEYS[family])
    problems = []
    if missing:
        problems.append(f"missing key(s): {_names(missing)}")
    if extra:
        problems.append(f"unexpected key(s): {_names(extra)}")
    if problems:
        raise OfficialCheckpointError(
            f"{source} does not match the official {family.upper()} layout "
            f"({len(keys)} keys): {'; '.join(problems)}"
        )
    return ignored


# -- geometry ------------------------------------------------------------------------
def _infer_geometry(num_patches: int, kernel: tuple[int, int], stage: str,
                    pretrain_input: tuple[int, int] | None, input_fdim: int | None,
                    input_tdim: int | None, patch_stride: tuple[int, int] | None,
                    source: str) -> tuple[tuple[int, int], int, int, str]:
    """``(stride, input_fdim, input_tdim, how)`` of a model with ``num_patches`` patch rows."""
    kf, kt = kernel
    stored = stage == "pretrain" and pretrain_input is not None
    if patch_stride is not None:
        strides = [tuple(patch_stride)]
    elif stage == "pretrain":
        strides = [kernel]  # the official code refuses overlapping patches in pretraining
    else:
        strides = list(RECIPE_STRIDES.get(kernel, (kernel,)))
    fdim = input_fdim or (pretrain_input[0] if stored else RECIPE_FDIM)
    tdim = input_tdim if input_tdim is not None else (pretrain_input[1] if stored else None)

    fits = []  # (stride, fewest frames, most frames, T') giving num_patches
    for sf, st in strides:
        if min(sf, st) <= 0 or fdim < kf:
            continue
        rows = (fdim - kf) // sf + 1
        if num_patches % rows:
            continue
        cols = num_patches // rows
        low = kt + (cols - 1) * st
        fits.append(((sf, st), low, low + st - 1, cols))

    def grid(fit) -> str:
        return f"{num_patches // fit[3]}x{fit[3]}"

    def describe(fit) -> str:
        (sf, st), low, high, _ = fit
        return f"stride {sf}x{st} with {low}-{high} frames ({grid(fit)})"

    strides_text = ", ".join(f"{s[0]}x{s[1]}" for s in strides)
    if tdim is not None:  # given, or stored in a pretraining file: only the stride is open
        fits = [f for f in fits if f[1] <= tdim <= f[2]]
        if len(fits) == 1:
            how = ("given input_tdim" if input_tdim is not None else "stored p_input_fdim/p_input_tdim")
            return fits[0][0], fdim, tdim, f"{how}: {grid(fits[0])} patches"
        if fits:
            raise OfficialCheckpointError(
                f"{source}: {num_patches} patch rows fit several strides at {tdim} frames "
                f"({'; '.join(map(describe, fits))}); pass patch_stride (--patch-stride F T)"
            )
        raise OfficialCheckpointError(
            f"{source}: v.pos_embed has {num_patches} patch rows, which an input of {fdim} bins x {tdim} "
            f"frames does not give with kernel {kf}x{kt} and stride {strides_text}"
        )
    recipe = [(f, t) for f in fits for t in RECIPE_TDIMS if f[1] <= t <= f[2]]
    if len(recipe) == 1:
        (fit, t), = recipe
        return fit[0], fdim, t, (f"inferred: {num_patches} patch rows = {grid(fit)}, the {t}-frame "
                                 f"recipe at stride {fit[0][0]}x{fit[0][1]}")
    if not recipe and len(fits) == 1:
        fit = fits[0]
        return fit[0], fdim, fit[1], (f"inferred: {num_patches} patch rows = {grid(fit)} at stride "
                                      f"{fit[0][0]}x{fit[0][1]}; no recipe length fits, so the shortest "
                                      f"input giving this grid ({fit[1]} of {fit[1]}-{fit[2]} frames)")
    options = "; ".join(map(describe, fits)) if fits else f"no stride of {strides_text} fits"
    raise OfficialCheckpointError(
        f"{source}: cannot tell the patch stride and input length from {num_patches} patch rows "
        f"(kernel {kf}x{kt}, {fdim} bins): {options}. Pass input_tdim and/or patch_stride "
        "(--input-tdim N, --patch-stride F T)"
    )


# -- conversion ----------------------------------------------------------------------
def _shape(state: dict[str, Tensor], key: str, dims: int, source: str) -> tuple[int, ...]:
    shape = tuple(state[key].shape)
    if len(shape) != dims:
        raise OfficialCheckpointError(f"{source}: {key} has shape {list(shape)}, expected {dims} dimensions")
    return shape


def _scalar(state: dict[str, Tensor], key: str, source: str) -> int | None:
    if key not in state:
        return None
    value = state[key]
    if value.numel() != 1 or value.is_floating_point() or value.is_complex():
        raise OfficialCheckpointError(f"{source}: {key} should be an integer scalar, got {value.dtype} "
                                      f"{list(value.shape)}")
    return int(value.item())


@dataclass
class _Detected:
    """What the keys of an official file say: its family, stage and key mapping."""

    name: str  # how errors name the source
    state: dict[str, Tensor]
    owned: bool  # tensors read from a file are ours to keep (a caller's dict is not)
    family: str
    stage: str
    mapping: dict
    arch: dict
    ignored: list


@dataclass(frozen=True)
class _Geometry:
    """What the tensor shapes say: the options they fix and what the report adds."""

    shape_options: dict[str, Any]  # encoder options fixed by the weights
    family_info: dict[str, Any]  # the family's extra fields of OfficialInfo
    preset: str | None
    kernel: tuple[int, int]
    pretrain_input: tuple[int, int] | None
    geometry: str
    notes: tuple[str, ...]


def convert_official(
    source: str | Path | Mapping[str, Tensor],
    *,
    input_tdim: int | None = None,
    patch_stride: tuple[int, int] | None = None,
    input_fdim: int | None = None,
    num_heads: int | None = None,
    dataset: str | None = None,
    **config_overrides: Any,
) -> ConvertedCheckpoint:
    """An official SSAMBA / SSAST checkpoint (a ``.pth`` path or its state dict) as a
    :class:`ConvertedCheckpoint`; see the module docstring for what is detected and
    what is inferred. ``input_tdim``, ``patch_stride``, ``input_fdim`` and ``num_heads``
    override the inference; ``dataset`` picks the front-end statistics
    (``"audioset"``, ``"esc50"``, ``"speechcommands"``); ``config_overrides`` set other
    encoder options that do not change shapes (``pooling``, ``scan_backend``, ``attention``...).

    Stages: detect (keys) -> infer geometry (shapes) -> build config (overrides) -> map
    tensors (into a model built on the meta device) -> report.
    """
    from ..frontend.logmel import DATASET_STATS

    if dataset is not None and dataset not in DATASET_STATS:
        raise ValueError(f"no statistics for dataset {dataset!r}; known: {sorted(DATASET_STATS)}")
    found = _detect(source)
    geo = _infer_architecture(found, input_fdim, input_tdim, patch_stride, num_heads)
    config, config_notes = _build_config(found.family, geo, config_overrides)
    dataset, frontend, frontend_notes = _frontend(found, config, dataset)
    model, objective_state, map_notes = _map_tensors(found, geo, config, frontend)
    return _report(found, geo, config, model, objective_state, dataset,
                   [*geo.notes, *config_notes, *map_notes, *frontend_notes])


def _detect(source: str | Path | Mapping[str, Tensor]) -> _Detected:
    """Read the file (or take the dict), strip wrappers' prefixes, and tell family, stage
    and the key mapping; every key is mapped or ignored on purpose."""
    owned = not isinstance(source, Mapping)
    if not owned:
        name = "the state dict"
        state = _as_state_dict(source, name)
    else:
        name = str(source)
        state = read_official(source)
    state = _strip_prefix(state, name)
    keys = set(state)
    family = _detect_family(list(state), name)
    stage, stage_map = _stage_keys(keys, name)
    mapping, arch = (_ssamba_keys if family == "ssamba" else _ssast_keys)(keys, name)
    mapping.update(stage_map)
    ignored = _check_keys(keys, mapping, family, name)
    for key, tensor in state.items():
        if key in mapping and not tensor.is_floating_point():
            raise OfficialCheckpointError(f"{name}: {key} is {tensor.dtype}, expected a float tensor")
    return _Detected(name, state, owned, family, stage, mapping, arch, ignored)


def _infer_architecture(found: _Detected, input_fdim, input_tdim, patch_stride, num_heads) -> _Geometry:
    """The encoder options the tensor shapes fix, the input geometry, and the preset
    they match (if any)."""
    state, name, stage, arch = found.state, found.name, found.stage, found.arch
    notes: list[str] = []
    dim = _shape(state, "v.cls_token", 3, name)[2]
    pos_rows = _shape(state, "v.pos_embed", 3, name)[1]
    out_dim, in_chans, kf, kt = _shape(state, "v.patch_embed.proj.weight", 4, name)
    if out_dim != dim or in_chans != 1:
        raise OfficialCheckpointError(
            f"{name}: v.patch_embed.proj.weight has shape {[out_dim, in_chans, kf, kt]}, expected "
            f"[{dim}, 1, kf, kt] (one input channel, D={dim} from v.cls_token)"
        )
    kernel = (kf, kt)
    depth = arch["depth"]
    n_prefix = arch.get("num_prefix_tokens", 1)
    num_classes = _shape(state, "mlp_head.1.weight", 2, name)[0] if stage == "finetune" else 0
    pretrain_input = None
    p_f, p_t = _scalar(state, "p_input_fdim", name), _scalar(state, "p_input_tdim", name)
    if (p_f is None) != (p_t is None):
        raise OfficialCheckpointError(f"{name}: p_input_fdim and p_input_tdim must come together")
    if p_f is not None:
        pretrain_input = (p_f, p_t)
        if stage == "finetune":
            notes.append("p_input_* found in a fine-tuned file: ignored (fine-tuned geometry inferred)")
    if pos_rows <= n_prefix:
        raise OfficialCheckpointError(f"{name}: v.pos_embed has {pos_rows} rows, no patch rows after "
                                      f"{n_prefix} prefix row(s)")
    stride, fdim, tdim, geometry = _infer_geometry(
        pos_rows - n_prefix, kernel, stage, pretrain_input, input_fdim, input_tdim, patch_stride, name
    )
    shape_options = dict(embed_dim=dim, depth=depth, patch_size=kernel, patch_stride=stride,
                         input_fdim=fdim, input_tdim=tdim, num_classes=num_classes)
    if found.family == "ssamba":
        body = _ssamba_architecture(state, name, arch, dim, depth, kernel)
    else:
        body = _ssast_architecture(state, name, dim, depth, kernel, n_prefix, num_heads)
    return _Geometry({**shape_options, **body.options}, {"num_prefix_tokens": n_prefix, **body.info}, body.preset,
                     kernel, pretrain_input, geometry, (*notes, *body.notes))


@dataclass(frozen=True)
class _Body:
    """What a family's first layer's shapes fix: encoder options, the family's fields of
    :class:`OfficialInfo`, notes for the report, and the matching preset (if any)."""

    options: dict[str, Any]
    info: dict[str, Any]
    notes: tuple[str, ...]
    preset: str | None


def _ssamba_architecture(state, name, arch, dim, depth, kernel) -> _Body:
    """SSAMBA's mixer options from the first layer's shapes."""
    if depth % 2:
        raise OfficialCheckpointError(
            f"{name}: {depth} SSAMBA layers; the official layer pairing (if_bidirectional) needs an "
            "even number (it would silently skip the last layer)"
        )
    d_inner2, in_dim = _shape(state, "v.layers.0.mixer.in_proj.weight", 2, name)
    d_inner = d_inner2 // 2
    d_state = _shape(state, "v.layers.0.mixer.A_log", 2, name)[1]
    d_conv = _shape(state, "v.layers.0.mixer.conv1d.weight", 3, name)[2]
    dt_rank = _shape(state, "v.layers.0.mixer.dt_proj.weight", 2, name)[1]
    if in_dim != dim or d_inner2 % 2 or d_inner % dim:
        raise OfficialCheckpointError(
            f"{name}: v.layers.0.mixer.in_proj.weight has shape {[d_inner2, in_dim]}, expected "
            f"[2 * expand * {dim}, {dim}]"
        )
    options = dict(d_state=d_state, d_conv=d_conv, expand=d_inner // dim, dt_rank=dt_rank,
                   norm=arch["norm"], norm_eps=1e-5, use_cls_token=True,
                   use_bidirectional_mixer=arch["bimamba"] == "v2", use_direction_average=True,
                   use_layer_pairing=True, use_double_final_norm=True)
    notes = (("bimamba 'none': converted with a causal forward-only mixer",) if arch["bimamba"] == "none" else ()) \
        + (("no norm biases: RMSNorm model (rms_norm=True)",) if arch["norm"] == "rmsnorm" else ())
    preset_ok = depth == 24 and d_inner == 2 * dim and d_state == 16 and kernel == (16, 16)
    return _Body(options, {"norm": arch["norm"], "bimamba": arch["bimamba"]}, notes,
                 f"ssamba_{SIZES[dim]}" if dim in SIZES and preset_ok else None)


def _ssast_architecture(state, name, dim, depth, kernel, n_prefix, num_heads) -> _Body:
    """SSAST's block options from the first block's shapes."""
    hidden = _shape(state, "v.blocks.0.mlp.fc1.weight", 2, name)[0]
    heads = num_heads or SSAST_HEADS.get(dim) or (dim // 64 if dim % 64 == 0 else None)
    if heads is None:
        raise OfficialCheckpointError(f"{name}: cannot tell the number of attention heads for D={dim}; pass num_heads")
    kind = {(16, 16): "patch", (128, 2): "frame"}.get(kernel)
    preset_ok = depth == 12 and hidden == 4 * dim and n_prefix == 2 and kind is not None
    notes = ("no v.dist_token: single class token (SSAST base_nokd)",) if n_prefix == 1 else ()
    return _Body(dict(num_heads=heads, mlp_ratio=hidden / dim, norm_eps=1e-6, num_prefix_tokens=n_prefix),
                 {"num_heads": heads}, notes, f"ssast_{SIZES[dim]}_{kind}" if dim in SIZES and preset_ok else None)


def _build_config(family: str, geo: _Geometry, overrides: dict[str, Any]):
    """The encoder config: the options the weights fix, with the caller's behaviour options
    (an option the weights fix cannot be overridden); and notes for the report."""
    from ..config import check_keys
    from .registry import config_class_of

    fixed = geo.shape_options
    config_class = config_class_of(family)
    check_keys(config_class, overrides, f"{family} config")
    clash = sorted(set(overrides) & (set(fixed) - _BEHAVIOUR_OPTIONS))
    if clash:
        raise TypeError(f"cannot override {clash}: the checkpoint's weights fix them")
    changed = sorted(k for k in set(overrides) & set(fixed) if overrides[k] != fixed[k])
    notes = (f"official behaviour changed by the caller: {', '.join(changed)}",) if changed else ()
    config = config_class(**{**fixed, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}})
    return config, notes


def _map_tensors(found: _Detected, geo: _Geometry, config, frontend):
    """The model, built on the meta device (no initialisation work the file's tensors would
    overwrite) and given the file's tensors as its parameters; the pretraining heads'
    state (None for a fine-tuned file); and notes for the report."""
    from .registry import model_from_config

    state, name, notes = found.state, found.name, []
    dim, depth, family = config.embed_dim, config.depth, found.family
    n_prefix = geo.family_info["num_prefix_tokens"]
    with torch.device("meta"):
        model = model_from_config(config, frontend)
    targets = model.state_dict()
    model_state: dict[str, Tensor] = {}
    objective: dict[str, Tensor] = {}
    prefix_slots: dict[int, Tensor] = {}
    cast = sorted({str(state[k].dtype).removeprefix("torch.") for k in found.mapping
                   if state[k].dtype != torch.float32})
    if cast:
        notes.append(f"{', '.join(cast)} tensors converted to float32")
    storages: set[int] = set()
    for key, (dest, ours, slot) in found.mapping.items():
        tensor = state[key].float()
        storage = tensor.untyped_storage().data_ptr()
        if not found.owned or storage in storages:  # never share memory with the caller or between parameters
            tensor = tensor.clone()
        storages.add(storage)
        if slot is not None:
            expected = (1, 1, dim)
            if tuple(tensor.shape) != expected:
                raise OfficialCheckpointError(f"{name}: {key} has shape {list(tensor.shape)}, expected "
                                              f"{list(expected)}")
            prefix_slots[slot] = tensor
            continue
        if dest == "model":
            expected = tuple(targets[ours].shape)
            if tuple(tensor.shape) != expected:
                raise OfficialCheckpointError(
                    f"{name}: {key} has shape {list(tensor.shape)}, but this {family.upper()} "
                    f"(D={dim}, depth {depth}) needs {list(expected)} for it"
                )
            model_state[ours] = tensor.contiguous()
        else:
            objective[ours] = tensor.contiguous()
    model_state["cls_tokens"] = torch.cat([prefix_slots[i] for i in range(n_prefix)], dim=1)
    if "mask_embed" not in model_state:  # fine-tuned files have none: a fresh one, as a new model gets
        mask_embed = torch.empty(tuple(targets["mask_embed"].shape))
        model_state["mask_embed"] = nn.init.xavier_normal_(mask_embed, generator=torch.Generator().manual_seed(0))
        notes.append("no mask_embed in a fine-tuned file: the model's is freshly initialised (seed 0)")
    if set(model_state) != set(targets):  # a bug in the maps above, not in the file
        raise RuntimeError(f"conversion does not cover the model: {_names(set(targets) ^ set(model_state))}")
    tags = {n: dict(p.__dict__) for n, p in model.named_parameters()}  # _no_weight_decay and the like
    model.load_state_dict(model_state, strict=True, assign=True)
    for n, p in model.named_parameters():
        p.__dict__.update(tags[n])
    stray = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if stray:
        raise RuntimeError(f"conversion left tensors on the meta device: {_names(stray)}")
    objective_state, head_notes = _objective_state(objective, geo, dim, name)
    return model, objective_state, [*notes, *head_notes]


def _objective_state(objective: dict[str, Tensor], geo: _Geometry, dim: int, name: str):
    """The pretraining heads' tensors (None where there are none), their shapes checked
    against D and the patch; and notes for the report."""
    if not objective:
        return None, []
    notes = []
    kf, kt = geo.kernel
    values = kf * kt
    for head in ("nce_head", "mse_head"):
        w1, w2 = objective[f"{head}.0.weight"], objective[f"{head}.2.weight"]
        if w1.shape != (dim, dim) or w2.dim() != 2 or w2.shape[1] != dim:
            raise OfficialCheckpointError(f"{name}: the pretraining head shapes {list(w1.shape)}, "
                                          f"{list(w2.shape)} do not fit D={dim}")
        if w2.shape[0] != values:
            notes.append(f"pretraining heads predict {w2.shape[0]} values, not {values} = {kf}x{kt}")
    return {k: v.contiguous() for k, v in objective.items()}, notes


def _frontend(found: _Detected, config, dataset: str | None):
    """The front end the model expects (the recipe's statistics): ``(dataset, front-end
    config, notes for the report)``."""
    from ..frontend import FrontendConfig

    fdim, tdim = config.input_fdim, config.input_tdim
    notes = ()
    if dataset is None:
        dataset = "audioset" if found.stage == "pretrain" else DATASET_BY_TDIM.get(tdim, "audioset")
        if found.stage == "finetune" and tdim not in DATASET_BY_TDIM:
            notes = (f"no recipe uses {tdim} frames: front end set to AudioSet statistics",)
    return dataset, FrontendConfig.for_dataset(dataset, num_mel_bins=fdim, target_length=tdim), notes


def _report(found: _Detected, geo: _Geometry, config, model: nn.Module, objective_state, dataset: str,
            notes: list[str]) -> ConvertedCheckpoint:
    """What was found, with the converted model and every stage's ``notes``."""
    fdim, tdim = config.input_fdim, config.input_tdim
    info = OfficialInfo(
        family=found.family, size=SIZES.get(config.embed_dim, "custom"), stage=found.stage,
        embed_dim=config.embed_dim, depth=config.depth, patch_size=geo.kernel,
        patch_stride=tuple(config.patch_stride), input_fdim=fdim, input_tdim=tdim,
        num_classes=config.num_classes, pretrain_input=geo.pretrain_input, geometry=geo.geometry,
        dataset=dataset, preset=geo.preset, num_keys=len(found.state), mapped_keys=len(found.mapping),
        ignored_keys=found.ignored, notes=notes, **geo.family_info,
    )
    return ConvertedCheckpoint(model, objective_state, info)


# -- files ---------------------------------------------------------------------------
def write_converted(converted: ConvertedCheckpoint, out_dir: str | Path) -> Path:
    """Write a normal ssamba model directory (``model.safetensors`` + ``config.json``, see
    :func:`ssamba.save_model`), ``conversion.json`` (what was detected), and for
    pretraining files the heads as ``objective.safetensors`` + ``objective.json``."""
    from safetensors.torch import save_file

    from ..fileio import atomic_write
    from .serialization import save_model

    out = save_model(converted.model, out_dir)
    info = converted.info
    for stale in (OBJECTIVE_WEIGHTS, OBJECTIVE_CONFIG):  # from an earlier conversion into out_dir
        (out / stale).unlink(missing_ok=True)
    if converted.objective_state:
        meta = {
            "format": "ssamba-objective",
            "format_version": 1,
            "objective": "masked_patch_modeling",
            "embed_dim": info.embed_dim,
            "patch_size": list(info.patch_size),
            "heads": {"nce_head": "official cpredlayer (discriminative, InfoNCE)",
                      "mse_head": "official gpredlayer (generative, MSE)"},
        }
        state = converted.objective_state
        atomic_write(out / OBJECTIVE_WEIGHTS, lambda p: save_file(state, p))
        atomic_write(out / OBJECTIVE_CONFIG, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    record = {"format": "ssamba-conversion", "source": "official", **info.to_dict()}
    atomic_write(out / CONVERSION_INFO, lambda p: Path(p).write_text(json.dumps(record, indent=2)))
    return out


def load_objective_state(directory: str | Path) -> dict[str, Tensor] | None:
    """The pretraining heads written by :func:`write_converted` (keys ``nce_head.*``,
    ``mse_head.*`` of :class:`ssamba.objectives.MaskedPatchModeling`), or None."""
    from safetensors.torch import load_file

    path = Path(directory) / OBJECTIVE_WEIGHTS
    return load_file(str(path)) if path.is_file() else None


def load_official(path: str | Path, map_location: str = "cpu", **options: Any) -> nn.Module:
    """The model of an official ``.pth`` converted on the fly (what :func:`ssamba.load_model`
    does with such a file); ``options`` as for :func:`convert_official`."""
    return convert_official(path, **options).model.to(map_location)


__all__ = [
    "ConvertedCheckpoint",
    "OfficialCheckpointError",
    "OfficialInfo",
    "convert_official",
    "load_objective_state",
    "load_official",
    "read_official",
    "write_converted",
]
