"""An encoder with its front end, as a feature extractor: waveforms in, embeddings out.

Long audio is cut into windows of the model's input length, so memory stays bounded
whatever the duration; windows tile the time axis exactly, so the timestamp grid is
uniform across window borders. With ``whole=True`` (``ssamba embed --whole``) the encoder
instead runs over each file in one pass: every token sees the whole file (the point of a
bidirectional SSM), position embeddings follow the model's rule for a longer grid (time
resized bilinearly from the trained length, as fine-tuning at another length does; a
shorter file takes the centre columns), and SSAMBA's lean path keeps memory linear in the
length (the filterbank is computed window by window, the mixers run in pieces). Windows
are the better choice for SSAST (attention is quadratic in the length) and for files not
much longer than the trained input; whole files for SSAMBA on long recordings, where
context across window borders matters.

* timestamp (frame-level) embeddings: the patch tokens of one time column averaged over
  the frequency rows, one per ``hop_frames`` (10 ms each), stamped at the column's centre
  in milliseconds;
* scene (clip-level) embeddings: the mean of the timestamp embeddings.

Any layer can be read (``layer=k`` indexes :meth:`forward_hidden_states`: 0 is the
embedded input, -1 the final output), or a weighted sum of all of them
(``layer="mean"`` or a list of weights), as the SUPERB protocol does.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ..frontend import FrontendConfig, LogMelFrontend
from ..models import load_model, model_from_config
from ..models.adapt import load_encoder_weights


class Embedder(nn.Module):
    """``Embedder(encoder)``; see the module docstring. ``hop_frames`` sets the time
    stride of the patches (default: the encoder's own); the encoder is rebuilt at that
    stride with its weights carried over (position embeddings resampled)."""

    def __init__(self, encoder: nn.Module, frontend: FrontendConfig | None = None, layer: int | str | list = -1,
                 hop_frames: int | None = None, window_frames: int | None = None, batch_windows: int = 8,
                 whole: bool = False):
        super().__init__()
        config = encoder.config
        if hop_frames is not None and hop_frames != config.patch_stride[1]:
            adapted = model_from_config(replace(config, patch_stride=(config.patch_stride[0], hop_frames),
                                                num_classes=0), encoder.frontend_config)  # the same input
            load_encoder_weights(adapted, encoder)
            encoder = adapted
        self.encoder = encoder.eval()
        frontend = frontend or encoder.frontend_config or FrontendConfig(
            num_mel_bins=config.input_fdim)
        self.frontend = LogMelFrontend(frontend)
        self.window_frames = window_frames or config.input_tdim
        self.batch_windows = batch_windows
        self.whole = bool(whole)
        self.layer = layer
        kt = self.encoder.config.patch_size[1]
        if self.window_frames < kt:
            raise ValueError(f"window of {self.window_frames} frames is shorter than a patch ({kt})")
        if layer != -1 and layer != "mean":
            self._check_layer(kt)

    def _check_layer(self, frames: int) -> None:
        """A layer index or weight list that fits this encoder's hidden states (counted on
        one patch of silence), or ``ValueError`` saying what does."""
        with torch.no_grad():
            count = len(self.encoder.forward_hidden_states(torch.zeros(1, frames, self.encoder.config.input_fdim)))
        what = (f"this model has {count} hidden states: 0 is the embedded input, 1 to {count - 2} its layers"
                + (" (SSAMBA pairs its Mamba layers: each index is a pair)"
                   if getattr(self.encoder.config, "use_layer_pairing", False) else "")
                + f", {count - 1} (or -1) the normalised output")
        if isinstance(self.layer, int) and not -count <= self.layer < count:
            raise ValueError(f"layer {self.layer} is out of range: {what}")
        if isinstance(self.layer, (list, tuple)) and len(self.layer) != count:
            raise ValueError(f"{len(self.layer)} layer weights given: {what}")

    # -- geometry -------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.frontend.config.sample_rate

    @property
    def embedding_size(self) -> int:
        return self.encoder.config.embed_dim

    scene_embedding_size = embedding_size  # HEAR's names
    timestamp_embedding_size = embedding_size

    @property
    def hop_ms(self) -> float:
        return self.encoder.config.patch_stride[1] * self.frontend.config.frame_shift_ms

    def _column_times_ms(self, count: int) -> Tensor:
        """Centre (ms) of time columns 0..count-1: the middle of their patch's frames."""
        c = self.frontend.config
        kt, st = self.encoder.config.patch_size[1], self.encoder.config.patch_stride[1]
        return (torch.arange(count) * st + (kt - 1) / 2) * c.frame_shift_ms + c.frame_length_ms / 2

    def columns_for(self, num_samples: int) -> int:
        """Time columns whose centre lies within a clip of ``num_samples`` (at least one)."""
        duration_ms = 1000 * num_samples / self.sample_rate
        first = float(self._column_times_ms(1)[0])
        return max(1, int(math.floor((duration_ms - first) / self.hop_ms)) + 1)

    # -- embeddings -----------------------------------------------------------------
    def _select(self, spec: Tensor) -> Tensor:
        if self.layer == -1:
            return self.encoder.forward_features(spec)
        states = self.encoder.forward_hidden_states(spec)
        if isinstance(self.layer, int):
            return states[self.layer]
        weights = torch.ones(len(states)) if self.layer == "mean" else torch.as_tensor(self.layer, dtype=torch.float32)
        if weights.numel() != len(states):
            raise ValueError(f"{weights.numel()} layer weights for {len(states)} hidden states")
        weights = weights / weights.sum()
        return sum(w * s for w, s in zip(weights.tolist(), states))

    @torch.no_grad()
    def timestamp_embeddings(self, waveforms: Tensor | list[Tensor],
                             lengths: list[int] | None = None) -> list[tuple[Tensor, Tensor]]:
        """Waveforms -> per clip ``(embeddings (N_i, D), timestamps_ms (N_i,))``.

        ``waveforms`` is a ``(B, S)`` tensor (``lengths`` = real samples of each row,
        default S) or a list of 1-D tensors of any lengths. The filterbank is computed
        window by window (memory is a few windows, whatever the duration), and a clip's
        embeddings do not depend on the other clips of the call.
        """
        if isinstance(waveforms, Tensor):
            if waveforms.dim() == 1:
                waveforms = waveforms.unsqueeze(0)
            lengths = lengths or [waveforms.shape[1]] * waveforms.shape[0]
            clips = [w[:n] for w, n in zip(waveforms, lengths)]
        else:
            clips = [w.reshape(-1) for w in waveforms]
            lengths = lengths or [w.numel() for w in clips]
            clips = [w[:n] for w, n in zip(clips, lengths)]
        kt, st = self.encoder.config.patch_size[1], self.encoder.config.patch_stride[1]
        per_window = (self.window_frames - kt) // st + 1  # columns per window
        counts = [self.columns_for(n) for n in lengths]
        means = [float(w.mean()) if w.numel() else 0.0 for w in clips]  # mean removal over the real samples
        if self.whole:
            return [self._whole_file(clip, mean, count) for clip, mean, count in zip(clips, means, counts)]
        jobs = [(b, w) for b, count in enumerate(counts) for w in range(math.ceil(count / per_window))]

        device = next(self.encoder.parameters()).device
        rows_f = self.encoder.patch_grid(self.window_frames)[0]
        columns: list[list[Tensor]] = [[] for _ in clips]
        for i in range(0, len(jobs), self.batch_windows):
            part = jobs[i:i + self.batch_windows]
            spec = torch.stack([self._window_fbank(clips[b], means[b], w * per_window * st) for b, w in part])
            tokens = self._select(self.frontend.normalize(spec).to(device))
            patches = tokens[:, self.encoder.num_prefix_tokens:]
            pooled = patches.unflatten(1, (rows_f, per_window)).mean(dim=1).float().cpu()  # (b, C, D)
            for (b, _), cols in zip(part, pooled):
                columns[b].append(cols)
        times = self._column_times_ms(max(counts, default=0))
        return [(torch.cat(cols)[:count], times[:count]) for cols, count in zip(columns, counts)]

    def _whole_file(self, wave: Tensor, mean: float, count: int) -> tuple[Tensor, Tensor]:
        """``(embeddings (count, D), timestamps_ms)`` of one clip from one encoder pass over
        all of it: the filterbank computed ``window_frames`` at a time (the same frames as in
        one piece) and zero-padded to whole columns, at least one window long (so that a
        clip of one window gets exactly its windowed embeddings)."""
        kt, st = self.encoder.config.patch_size[1], self.encoder.config.patch_stride[1]
        frames = max(kt + (count - 1) * st, self.window_frames)
        spec = torch.cat([self._window_fbank(wave, mean, start, min(self.window_frames, frames - start))
                          for start in range(0, frames, self.window_frames)])  # (frames, F)
        device = next(self.encoder.parameters()).device
        tokens = self._select(self.frontend.normalize(spec).unsqueeze(0).to(device))
        del spec
        rows_f, columns = self.encoder.patch_grid(frames)
        patches = tokens[:, self.encoder.num_prefix_tokens:]
        pooled = patches.unflatten(1, (rows_f, columns))[:, :, :count].mean(dim=1)[0].float().cpu()  # (count, D)
        return pooled, self._column_times_ms(count)

    def _window_fbank(self, wave: Tensor, mean: float, start: int, length: int | None = None) -> Tensor:
        """The un-normalised filterbank ``(length, F)`` (default ``window_frames``) of the
        window whose first frame is ``start``, with the clip's mean removed: the clip's own
        frames, then zeros (as a clip alone is padded)."""
        length = self.window_frames if length is None else length
        frame_len, shift = self.frontend.frame_length, self.frontend.frame_shift
        first = start * shift
        stop = min(wave.numel(), (start + length - 1) * shift + frame_len)
        piece = wave[first:stop] - mean
        if piece.numel() < frame_len:  # shorter than one frame (a very short clip): pad with silence
            piece = nn.functional.pad(piece, (0, frame_len - piece.numel())) if start == 0 else piece[:0]
        out = torch.zeros(length, self.frontend.config.num_mel_bins)
        if piece.numel() >= frame_len:
            fbank = self.frontend.fbank(piece, mean=0.0)[0]  # the clip's mean, removed above
            out[: fbank.shape[0]] = fbank[:length]
        return out

    @torch.no_grad()
    def scene_embeddings(self, waveforms: Tensor, lengths: list[int] | None = None) -> Tensor:
        """``(B, S)`` -> ``(B, D)``: the mean of each clip's timestamp embeddings."""
        return torch.stack([emb.mean(dim=0) for emb, _ in self.timestamp_embeddings(waveforms, lengths)])


def load(path_or_name: str | Path, **options) -> Embedder:
    """A ready :class:`Embedder`: from a model directory, a checkpoint or a training
    run's folder (weights and front end come from its files), the name of an encoder
    shipped with the package (:mod:`ssamba.models.shipped`), or a preset name (randomly
    initialised: no weights are ever downloaded)."""
    from ..models import create_model, list_models
    from ..models.hub import is_repo_id
    from ..models.shipped import shipped_dir, shipped_names

    if str(path_or_name) in list_models():
        return Embedder(create_model(str(path_or_name)), **options)
    if not Path(path_or_name).exists() and not is_repo_id(path_or_name) and shipped_dir(path_or_name) is None:
        shipped = f", a shipped encoder ({', '.join(shipped_names())})" if shipped_names() else ""
        raise FileNotFoundError(
            f"{path_or_name!r} is neither a model directory, a Hugging Face repo id (org/name){shipped} nor a "
            f"preset ({', '.join(list_models())})"
        )
    return Embedder(load_model(path_or_name), **options)
