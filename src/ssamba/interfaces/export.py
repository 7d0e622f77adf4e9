"""ONNX export of an encoder (``ssamba export``), checked against PyTorch with onnxruntime.

The exported graph maps a log-mel spectrogram ``(batch, frames, mel bins)`` to the
encoder's output tokens ``(batch, tokens, D)`` (:meth:`forward_features`), with batch and
frames as dynamic axes; with ``with_frontend`` it maps a waveform ``(batch, samples)`` at
the model's rate through the model's own front end (the Kaldi filterbank as ONNX ops, the
padding to its input length, its normalisation) to a classifier's class probabilities or
an encoder's tokens, so that a deployment needs no audio code of its own. SSAMBA's selective scan is exported as an ONNX ``Scan`` over time
(the ``export`` backend, :mod:`ssamba.ops.scan_export`), so no custom operator is needed
and any length runs; position embeddings follow the models' own resampling rule inside
the graph (centre crop when shorter than the trained length, bilinear when longer). The
model's config and front end travel in the file's metadata (``ssamba_config``).
Needs ``pip install 'ssamba[onnx]'`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import require
from ..fileio import atomic_write

#: Shortest input the exported graph takes: two time columns of 16-frame patches
#: (torch.export specialises a size-1 axis).
MIN_FRAMES = 32


class _Features(nn.Module):
    """``forward(spec) = encoder.forward_features(spec)``: what the graph computes."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, spec: Tensor) -> Tensor:
        return self.encoder.forward_features(spec)


class _WaveformPipeline(nn.Module):
    """``forward(waveform (B, S) at the front end's rate)``: the model's own front end
    (mean removal, Kaldi filterbank, padding or cropping to its input length,
    normalisation with its statistics), then the encoder; for a classifier, its class
    probabilities (softmax, or sigmoids when multi-label), else the tokens."""

    def __init__(self, model: nn.Module):
        super().__init__()
        from ..frontend import LogMelFrontend

        if model.frontend_config is None:
            raise ValueError("--with-frontend needs a model that carries its front end (one saved by a training "
                             "run or a conversion)")
        self.model = model
        self.frontend = LogMelFrontend(model.frontend_config)
        self.classifier = getattr(model, "head", None) is not None
        labels = getattr(model, "labels", None)
        self.multilabel = bool(labels and labels["multilabel"])

    def forward(self, waveform: Tensor) -> Tensor:
        from ..frontend.logmel import pad_or_crop

        fbank = self.frontend.fbank(waveform, checked=True)
        spec = self.frontend.normalize(pad_or_crop(fbank, self.frontend.config.target_length))
        if not self.classifier:
            return self.model.forward_features(spec)
        logits = self.model(spec)
        return logits.sigmoid() if self.multilabel else logits.softmax(dim=-1)


def exportable(encoder: nn.Module) -> nn.Module:
    """``encoder`` itself, or for SSAMBA a copy that scans with the ``export`` backend."""
    from ..models.registry import model_from_config

    config = encoder.config
    if getattr(config, "scan_backend", "export") == "export":
        return encoder.eval()
    copy = model_from_config(replace(config, scan_backend="export"), encoder.frontend_config,
                             getattr(encoder, "labels", None))
    copy.load_state_dict(encoder.state_dict())
    return copy.eval()


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log records kept off the terminal
    (an error still raises, with its message)."""
    names = ("torch", "torch.onnx", "torch.export", "onnxscript", "onnx_ir")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(encoder: nn.Module, path: str | Path, frames: int | None = None, with_frontend: bool = False,
                say=None) -> Path:
    """Write ``encoder`` to ``path`` as ONNX (see the module docstring); ``frames`` is the
    example input's length (default: the trained length). With ``with_frontend`` the graph
    takes a waveform instead (:class:`_WaveformPipeline`: input ``waveform``, output
    ``probabilities`` for a classifier, else ``tokens``). ``say`` (a callable) hears what
    the export is doing. Returns ``path``."""
    from ..models.serialization import model_meta

    say = say or (lambda text: None)
    for module in ("onnx", "onnxscript"):
        require(module, "ONNX export")
    model = exportable(encoder)
    config = model.config
    batch = torch.export.Dim("batch", min=1, max=4096)
    if with_frontend:
        module = _WaveformPipeline(model)
        rate = module.frontend.config.sample_rate
        example = torch.zeros(2, rate)  # one second
        dims = {0: batch, 1: torch.export.Dim("samples", min=module.frontend.frame_length + 1, max=1 << 26)}
        names = (["waveform"], ["probabilities" if module.classifier else "tokens"])
    else:
        module = _Features(model)
        frames = max(MIN_FRAMES, frames or config.input_tdim)
        example = torch.zeros(2, frames, config.input_fdim)
        dims = {0: batch, 1: torch.export.Dim("frames", min=MIN_FRAMES, max=1 << 22)}
        names = (["spectrogram"], ["tokens"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    say("tracing the model into a graph (a minute or two for the larger presets)")
    with torch.enable_grad(), _quiet():  # the plain path: inference's lean path sizes its blocks by the length
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=(dims,),
                                    input_names=names[0], output_names=names[1], verbose=False)
    meta = model_meta(model)
    meta["onnx"] = {"input": names[0][0], "output": names[1][0], "with_frontend": with_frontend}
    program.model.metadata_props["ssamba_config"] = json.dumps(meta)  # as config.json holds it, classes included
    say(f"writing {path}")
    atomic_write(path, lambda tmp: program.save(tmp))  # a killed export leaves the old file whole
    return path


def check_onnx_waveforms(path: str | Path, encoder: nn.Module, seconds: list[float], batch: int = 2,
                         seed: int = 0) -> list[dict]:
    """A ``--with-frontend`` file run by onnxruntime against the PyTorch pipeline on the
    same random waveforms of each duration: the largest absolute and relative difference."""
    ort = require("onnxruntime", "checking an ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    pipeline = _WaveformPipeline(encoder.eval())
    output = session.get_outputs()[0].name
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for duration in seconds:
        wave = 0.1 * torch.randn(batch, int(duration * pipeline.frontend.config.sample_rate), generator=gen)
        with torch.no_grad():
            want = pipeline(wave)
        got = torch.from_numpy(session.run([output], {"waveform": wave.numpy()})[0])
        if got.shape != want.shape:
            raise RuntimeError(f"onnxruntime gave shape {tuple(got.shape)} for {duration} s, torch {tuple(want.shape)}")
        diff = (got - want).abs().max().item()
        rows.append({"seconds": duration, "max_abs_diff": diff,
                     "max_rel_diff": diff / max(want.abs().max().item(), 1e-12)})
    return rows


def check_onnx(path: str | Path, encoder: nn.Module, lengths: list[int], batch: int = 1,
               repeats: int = 3, seed: int = 0) -> list[dict]:
    """Run the exported file with onnxruntime (CPU) and ``encoder`` in PyTorch on the
    same random spectrograms of each length; per length the largest absolute and relative
    difference and both median times."""
    from ..timing import timeit

    ort = require("onnxruntime", "checking an ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    encoder = encoder.eval()
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for frames in lengths:
        spec = torch.randn(batch, frames, encoder.config.input_fdim, generator=gen)
        with torch.no_grad():
            want = encoder.forward_features(spec)
        got = torch.from_numpy(session.run(["tokens"], {"spectrogram": spec.numpy()})[0])
        if got.shape != want.shape:
            raise RuntimeError(f"onnxruntime gave shape {tuple(got.shape)} at {frames} frames, torch {tuple(want.shape)}")
        diff = (got - want).abs().max().item()
        with torch.no_grad():
            torch_s = timeit(lambda: encoder.forward_features(spec), repeats)
        ort_s = timeit(lambda: session.run(["tokens"], {"spectrogram": spec.numpy()}), repeats)
        rows.append({"frames": frames, "tokens": want.shape[1], "max_abs_diff": diff,
                     "max_rel_diff": diff / max(want.abs().max().item(), 1e-12),
                     "torch_s": torch_s, "onnxruntime_s": ort_s})
    return rows
