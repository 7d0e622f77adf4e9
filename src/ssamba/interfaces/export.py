"""ONNX export of an encoder (``ssamba export``), checked against PyTorch with onnxruntime.

The exported graph maps a log-mel spectrogram ``(batch, frames, mel bins)`` to the
encoder's output tokens ``(batch, tokens, D)`` (:meth:`forward_features`), with batch and
frames as dynamic axes. SSAMBA's selective scan is exported as an ONNX ``Scan`` over time
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


def exportable(encoder: nn.Module) -> nn.Module:
    """``encoder`` itself, or for SSAMBA a copy that scans with the ``export`` backend."""
    from ..models.registry import model_from_config

    config = encoder.config
    if getattr(config, "scan_backend", "export") == "export":
        return encoder.eval()
    copy = model_from_config(replace(config, scan_backend="export"))
    copy.load_state_dict(encoder.state_dict())
    copy.use_frontend(encoder.frontend_config)
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


def export_onnx(encoder: nn.Module, path: str | Path, frames: int | None = None) -> Path:
    """Write ``encoder`` to ``path`` as ONNX (see the module docstring); ``frames`` is the
    example input's length (default: the trained length). Returns ``path``."""
    from ..models.serialization import model_meta

    for module in ("onnx", "onnxscript"):
        require(module, "ONNX export")
    model = exportable(encoder)
    config = model.config
    frames = max(MIN_FRAMES, frames or config.input_tdim)
    example = torch.zeros(2, frames, config.input_fdim)
    dims = {1: torch.export.Dim("frames", min=MIN_FRAMES, max=1 << 22),
            0: torch.export.Dim("batch", min=1, max=4096)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.enable_grad(), _quiet():  # the plain path: inference's lean path sizes its blocks by the length
        program = torch.onnx.export(_Features(model), (example,), dynamo=True, dynamic_shapes=(dims,),
                                    input_names=["spectrogram"], output_names=["tokens"], verbose=False)
    program.model.metadata_props["ssamba_config"] = json.dumps(model_meta(model))  # as config.json holds it
    atomic_write(path, lambda tmp: program.save(tmp))  # a killed export leaves the old file whole
    return path


def check_onnx(path: str | Path, encoder: nn.Module, lengths: list[int], batch: int = 1,
               repeats: int = 3, seed: int = 0) -> list[dict]:
    """Run the exported file with onnxruntime (CPU) and ``encoder`` in PyTorch on the
    same random spectrograms of each length; per length the largest absolute and relative
    difference and both median times."""
    from ..benchmarks.common import timeit

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
