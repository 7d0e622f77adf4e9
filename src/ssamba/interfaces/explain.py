"""``ssamba explain``: what each token attends to, for SSAMBA's hidden attention and SSAST's.

A selective scan is an implicit attention (:mod:`ssamba.ops.hidden_attention`): every Mamba
layer of SSAMBA has one ``L x L`` matrix per direction - the direction that scans forward
in token order is causal (a token reads earlier ones), the other anti-causal - per inner
channel. :func:`explain` averages them over channels (``|alpha|`` by default, so that
channels of opposite sign do not cancel) and keeps chosen channels whole. For SSAST the
maps are the softmax attention of each block, averaged over heads (per head on request),
so both families can be drawn side by side.

Tokens are the model's own: the class token(s) first, then patches frequency row by row
(token ``prefix + f * T' + t``). :func:`attention_to_patches` turns a map into the
attention that one time column's output tokens pay to every patch, laid out on the
spectrogram's patch grid.

The maps are computed for the layers asked for only, ``L^2`` floats each; inputs of more
than ``max_tokens`` tokens are refused with a message instead of filling the memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import Tensor, nn

log = logging.getLogger(__name__)

MAX_TOKENS = 2048


@dataclass
class Explanation:
    """Attention maps of one input. ``maps["layer3/causal"]`` is ``(L, L)``, indexed
    ``[output token, source token]``; directions are ``causal`` / ``anticausal`` (SSAMBA)
    or ``attention`` (SSAST)."""

    family: str
    spectrogram: Tensor  # (T, F), the normalised model input
    grid: tuple[int, int]  # (F', T') patch grid
    num_prefix_tokens: int
    layers: list[int]
    directions: list[str]
    maps: dict[str, Tensor] = field(default_factory=dict)
    channel_maps: dict[str, Tensor] = field(default_factory=dict)  # (k, L, L): channels (SSAMBA) / heads (SSAST)
    channels: list[int] = field(default_factory=list)
    absolute: bool = True

    def layer_map(self, layer: int) -> Tensor:
        """The sum of a layer's direction maps ``(L, L)``: what its output reads in all."""
        return sum(self.maps[key] for d in self.directions if (key := f"layer{layer}/{d}") in self.maps)


def _token_count(encoder, frames: int) -> int:
    rows, columns = encoder.patch_grid(frames)
    return encoder.num_prefix_tokens + rows * columns


def explain(encoder: nn.Module, spec: Tensor, layers: list[int] | None = None, channels: list[int] = (),
            absolute: bool = True, max_tokens: int = MAX_TOKENS, progress: bool = False) -> Explanation:
    """Attention maps of ``encoder`` (SSAMBA or SSAST) on one spectrogram ``(T, F)``.

    ``layers``: block indices (default all; negative counts from the end); ``channels``:
    inner channels (SSAMBA) or heads (SSAST) whose maps are kept whole; ``absolute``:
    SSAMBA's channel mean of ``|alpha|`` (else of ``alpha``). ``ValueError`` past
    ``max_tokens`` tokens, for MambaOut (no SSM, nothing to draw) and for bad indices.
    """
    from ..progress import progress as progress_bar

    if not hasattr(encoder, "attention_maps"):
        raise ValueError(f"explain draws SSAMBA and SSAST encoders, not {type(encoder).__name__}")
    spec = spec.reshape(-1, spec.shape[-1]) if spec.dim() == 3 and spec.shape[0] == 1 else spec
    if spec.dim() != 2:
        raise ValueError(f"explain takes one spectrogram (frames, mel bins), got shape {tuple(spec.shape)}")
    depth = encoder.config.depth
    layers = list(range(depth)) if layers is None else [i + depth if i < 0 else i for i in layers]
    if not layers or any(not 0 <= i < depth for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct indices of the {depth} blocks (negative from the end)")
    channels = list(channels)
    limit = encoder.attention_units
    if limit and any(not 0 <= c < limit for c in channels):
        unit = "heads" if encoder.family == "ssast" else "inner channels"
        raise ValueError(f"channels must be in 0..{limit - 1} ({unit})")
    tokens = _token_count(encoder, spec.shape[0])
    if tokens > max_tokens:
        per_map = tokens * tokens * 4 / 2**20
        raise ValueError(f"the input makes {tokens} tokens; each map is {tokens} x {tokens} "
                         f"({per_map:.0f} MiB) per layer and direction, and explain stops at {max_tokens} tokens: "
                         "shorten the input (--frames, --start) or raise --max-tokens")

    result = Explanation(encoder.family, spec.cpu(), encoder.patch_grid(spec.shape[0]), encoder.num_prefix_tokens,
                         layers, [], channels=channels, absolute=absolute)
    device = next(encoder.parameters()).device
    maps = encoder.attention_maps(spec.unsqueeze(0).to(device), layers, channels, absolute)
    bar = progress_bar(len(layers), "explain", unit="layer", enabled=progress, every=max(1, len(layers) // 4))
    done = set()
    for key, mean, kept in maps:
        result.maps[key] = mean[0].cpu()
        if kept is not None:
            result.channel_maps[key] = kept[0].cpu()
        layer = key.split("/")[0]
        if layer not in done:
            done.add(layer)
            bar.update(1)
    bar.close()
    # a causal mixer under layer pairing scans forward in the even layers, backward in the odd
    seen = {key.split("/")[1] for key in result.maps}
    result.directions = [d for d in ("causal", "anticausal", "attention") if d in seen]
    return result


def attention_to_patches(explanation: Explanation, layer: int, column: int) -> Tensor:
    """``(F', T')``: the attention that the patch tokens of time column ``column`` pay to
    each patch (mean over the column's frequency rows, directions summed), on the grid."""
    rows, columns = explanation.grid
    if not 0 <= column < columns:
        raise ValueError(f"column {column} outside the {columns} time columns")
    n = explanation.num_prefix_tokens
    full = explanation.layer_map(layer)
    outputs = [n + f * columns + column for f in range(rows)]
    return full[outputs, n:].mean(0).reshape(rows, columns)


# -- files and figures ---------------------------------------------------------------------

def _input(path: str | Path, encoder, frames: int | None, start_s: float) -> tuple[Tensor, object, int]:
    """The model input ``(T, F)`` of an audio file as the model's front end makes it,
    from ``start_s`` seconds on, padded or cropped to ``frames`` (default: the front end's
    length); its front-end config; and how many of its frames are audio, not padding."""
    from ..frontend import FrontendConfig, LogMelFrontend, load_audio

    config = encoder.frontend_config or FrontendConfig(num_mel_bins=encoder.config.input_fdim,
                                                       target_length=encoder.config.input_tdim)
    if frames is not None:
        config = replace(config, target_length=frames)
    wave = load_audio(path, sample_rate=config.sample_rate)
    first = int(round(start_s * config.sample_rate))
    if start_s < 0 or first >= wave.numel():
        raise ValueError(f"--start {start_s:g} s is outside {path} ({wave.numel() / config.sample_rate:.2f} s)")
    frontend = LogMelFrontend(config)
    available = frontend.num_frames(wave.numel() - first)
    if available > config.target_length:  # said, never done silently
        log.warning("%s: explaining %.2f s of its %.2f s from %g s (%d frames; --frames and --start choose "
                    "another stretch)", path, config.target_length * config.frame_shift_ms / 1000,
                    (wave.numel() - first) / config.sample_rate, start_s, config.target_length)
    return frontend(wave[first:])[0], config, min(available, config.target_length)


def _query_columns(explanation: Explanation, times_s: list[float] | None, frame_shift_ms: float,
                   stride: int, kernel: int) -> list[tuple[float, int]]:
    """``(time in s, column)`` of the output columns to draw; default a quarter, half and
    three quarters of the way."""
    columns = explanation.grid[1]
    if not times_s:
        return [((c * stride + kernel / 2) * frame_shift_ms / 1000, c)
                for c in sorted({max(0, min(columns - 1, round(columns * q))) for q in (0.25, 0.5, 0.75)})]
    out = []
    for t in times_s:
        c = int(round((t * 1000 / frame_shift_ms - kernel / 2) / stride))
        if not 0 <= c < columns:
            raise ValueError(f"--at {t:g} s is outside the input's {columns} time columns")
        out.append((t, c))
    return out


def draw_token_maps(explanations: list[tuple[str, Explanation]], path: Path, max_layers: int = 6) -> None:
    """One row per model and direction, one column per layer (at most ``max_layers``,
    evenly spaced): the patch-to-patch maps on a log colour scale."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    rows = [(name, ex, d) for name, ex in explanations for d in ex.directions]
    picks = {name: _spread(ex.layers, max_layers) for name, ex in explanations}
    width = max(len(p) for p in picks.values())
    fig, axes = plt.subplots(len(rows), width, figsize=(max(4.0, 2.7 * width), 2.6 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")
    for r, (name, ex, direction) in enumerate(rows):
        n = ex.num_prefix_tokens
        for c in range(width):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(picks[name]):
                ax.axis("off")
                continue
            layer = picks[name][c]
            key = f"layer{layer}/{direction}"
            if key not in ex.maps:  # a causal mixer's mirrored layer scans the other way only
                ax.set_title(f"{name} layer {layer}\n(no {direction} scan)", fontsize=8)
                continue
            m = ex.maps[key][n:, n:].abs().numpy()
            top = float(m.max()) or 1.0
            image = ax.imshow(m.clip(min=top * 1e-4), cmap="magma", norm=LogNorm(vmin=top * 1e-4, vmax=top),
                              interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            ax.set_title(f"{name} layer {layer}\n{direction}", fontsize=8)
            if c == 0:
                ax.set_ylabel("output patch", fontsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("source patch", fontsize=7)
    fig.suptitle("token-to-token attention\n(patch tokens, frequency row by row; log scale per panel)", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spread(values: list[int], count: int) -> list[int]:
    if len(values) <= count:
        return list(values)
    return [values[round(k * (len(values) - 1) / (count - 1))] for k in range(count)]


def draw_spectrogram_attention(explanations: list[tuple[str, Explanation]], times_s: list[float],
                               columns_of: dict[str, list[int]], layer_of: dict[str, int], frame_shift_ms: float,
                               geometry: dict[str, tuple], path: Path, real_frames: dict[str, int] | None = None) -> None:
    """Per model a row: the spectrogram, then for each query column the attention its
    output tokens pay to every patch (directions summed; log scale over three decades),
    over the spectrogram. Frames past ``real_frames[name]`` (padding) are left blank."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(len(explanations), 1 + len(times_s), figsize=(3.9 * (1 + len(times_s)),
                             2.8 * len(explanations)), squeeze=False, layout="constrained")
    for r, (name, ex) in enumerate(explanations):
        spec = np.ma.masked_array(ex.spectrogram.numpy().T)  # (F, T)
        if real_frames and real_frames.get(name) is not None:
            spec[:, real_frames[name]:] = np.ma.masked  # padding: drawn as background, not as loud energy
        seconds = spec.shape[1] * frame_shift_ms / 1000
        extent = (0, seconds, 0, spec.shape[0])
        image = axes[r][0].imshow(spec, origin="lower", aspect="auto", cmap="viridis", extent=extent)
        fig.colorbar(image, ax=axes[r][0], fraction=0.046, pad=0.02).ax.tick_params(
            labelsize=6)
        axes[r][0].set_title(f"{name}: input (log-mel)", fontsize=8)
        axes[r][0].set_ylabel("mel bin", fontsize=7)
        (kf, kt), (sf, st) = geometry[name]
        rows, columns = ex.grid
        covered = ((columns - 1) * st + kt) * frame_shift_ms / 1000
        # each model's own column for each time (the models may have other strides)
        for c, (t, column) in enumerate(zip(times_s, columns_of[name])):
            ax = axes[r][c + 1]
            ax.imshow(spec, origin="lower", aspect="auto", cmap="gray", extent=extent)
            heat = attention_to_patches(ex, layer_of[name], column).abs().numpy()
            top = float(heat.max()) or 1.0
            heat_image = ax.imshow(heat.clip(min=top * 1e-3), origin="lower", aspect="auto", cmap="inferno",
                                   alpha=0.7, norm=LogNorm(vmin=top * 1e-3, vmax=top),
                                   extent=(0, covered, 0, (rows - 1) * sf + kf), interpolation="nearest")
            fig.colorbar(heat_image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            ax.axvline(t, color="cyan", lw=1)
            ax.set_title(f"{name.split(' (')[-1].rstrip(')')} layer {layer_of[name]}: what {t:.2f} s reads "
                         "(log)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)", fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def explain_file(audio: str | Path, checkpoint: str | Path, out_dir: str | Path, layers: list[int] | None = None,
                 channels: list[int] = (), times_s: list[float] | None = None, frames: int | None = None,
                 start_s: float = 0.0, compare: str | Path | None = None, absolute: bool = True,
                 max_tokens: int = MAX_TOKENS, progress: bool = True) -> dict:
    """``ssamba explain``: maps of ``checkpoint`` (and of ``compare``, drawn beside it) on
    ``audio``; writes ``maps.npz``, ``explain.json``, ``token_maps.png`` and
    ``spectrogram_attention.png`` to ``out_dir`` and returns the summary."""
    import numpy as np

    from ..errors import require
    from ..fileio import atomic_write, atomic_write_text, strict_json
    from .embedder import load

    require("matplotlib", "the explain figures")
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, geometry, layer_of, real_frames = [], {}, {}, {}
    arrays: dict[str, np.ndarray] = {}
    summary: dict = {"audio": str(audio), "start_s": start_s, "absolute": absolute, "models": {}}
    for source in [checkpoint] + ([compare] if compare else []):
        encoder = load(source).encoder  # weights and front end as ssamba embed loads them
        spec, config, real = _input(audio, encoder, frames, start_s)
        ex = explain(encoder, spec, layers, channels, absolute, max_tokens, progress)
        name = f"{Path(str(source)).name or source} ({ex.family})"
        runs.append((name, ex))
        real_frames[name] = real
        geometry[name] = (encoder.config.patch_size, encoder.config.patch_stride)
        layer_of[name] = ex.layers[-1]
        prefix = f"model{len(runs) - 1}/"
        arrays[prefix + "spectrogram"] = ex.spectrogram.float().numpy()
        for key, value in ex.maps.items():
            arrays[prefix + key] = value.float().numpy()
        for key, value in ex.channel_maps.items():
            arrays[prefix + key + "/channels"] = value.float().numpy()
        summary["models"][prefix.rstrip("/")] = {
            "source": str(source), "family": ex.family, "grid": list(ex.grid), "tokens": ex.maps[next(iter(ex.maps))].shape[0],
            "num_prefix_tokens": ex.num_prefix_tokens, "layers": ex.layers, "directions": ex.directions,
            "channels": ex.channels, "frames": spec.shape[0], "frame_shift_ms": config.frame_shift_ms}
    frame_shift_ms = summary["models"]["model0"]["frame_shift_ms"]
    times, columns_of = times_s, {}
    for k, (name, ex) in enumerate(runs):  # each model's own columns (raises if a time lies outside them)
        (_, kt), (_, st) = geometry[name]
        found = _query_columns(ex, times, frame_shift_ms, st, kt)
        times = [t for t, _ in found]  # the first model sets the default times
        columns_of[name] = summary["models"][f"model{k}"]["query_columns"] = [c for _, c in found]
    summary["query_times_s"] = [round(t, 3) for t in times]
    atomic_write(out / "maps.npz", lambda tmp: np.savez_compressed(tmp, **arrays))
    draw_token_maps(runs, out / "token_maps.png")
    draw_spectrogram_attention(runs, times, columns_of, layer_of, frame_shift_ms, geometry,
                               out / "spectrogram_attention.png", real_frames)
    summary["files"] = ["maps.npz", "token_maps.png", "spectrogram_attention.png", "explain.json"]
    atomic_write_text(out / "explain.json", strict_json(summary, indent=2))
    return summary


__all__ = ["Explanation", "MAX_TOKENS", "attention_to_patches", "explain", "explain_file"]
