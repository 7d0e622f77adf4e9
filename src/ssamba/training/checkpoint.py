"""Training checkpoints: safetensors + JSON, written atomically, never unpickled.

A checkpoint is a directory ``step-00001234/`` holding

* ``model.safetensors`` + ``config.json`` - the model, loadable on its own with
  :func:`ssamba.load_model`;
* ``state.safetensors`` + ``state.json`` - everything else: objective heads, optimiser
  moments, schedule, step counters, the experiment config.

It is written under a temporary name and renamed into place; then the ``latest`` file
is replaced atomically. A run killed at any moment leaves the previous checkpoint
complete and ``latest`` pointing at it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import atomic_folder, atomic_write_text, read_json
from ..models import load_model, save_model

LATEST = "latest"


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split a nested structure into ``{path: tensor}`` and a JSON skeleton that names them."""
    tensors: dict[str, Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Tensor):
            tensors[path] = node.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(node, dict):
            return {"__dict__": [[walk(k, f"{path}/k{i}"), walk(v, f"{path}/{i}")] for i, (k, v) in enumerate(node.items())]}
        if isinstance(node, (list, tuple)):
            return {"__list__": [walk(v, f"{path}/{i}") for i, v in enumerate(node)], "tuple": isinstance(node, tuple)}
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot checkpoint a {type(node).__name__} at {path or '/'}")

    return tensors, walk(state, prefix)


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {unflatten_state(k, tensors): unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            items = [unflatten_state(v, tensors) for v in skeleton["__list__"]]
            return tuple(items) if skeleton["tuple"] else items
    return skeleton


def save_checkpoint(root: str | Path, step: int, model: torch.nn.Module, state: dict, keep: int = 2) -> Path:
    """Write checkpoint ``root/step-<step>`` atomically and point ``root/latest`` at it."""
    from safetensors.torch import save_file

    root = Path(root)
    final = root / f"step-{step:08d}"
    with atomic_folder(final) as tmp:
        save_model(model, tmp)
        tensors, skeleton = flatten_state(state)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(skeleton))
    atomic_write_text(root / LATEST, final.name)
    _prune(root, keep, final.name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".step-*"):  # leftovers of a killed write
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The checkpoint ``root/latest`` names, or None if there is none yet."""
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if not re.fullmatch(r"step-\d+", name):  # only a checkpoint of this folder, never a path elsewhere
        raise ValueError(f"{pointer} must name a checkpoint folder of {root} (step-<N>), not {name[:200]!r}")
    path = Path(root) / name
    return path if path.is_dir() else None


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(model, state)`` of a checkpoint directory."""
    from safetensors.torch import load_file

    path = Path(path)
    model = load_model(path, map_location=map_location)
    skeleton = read_json(path / "state.json", "checkpoint state")
    tensors = load_file(str(path / "state.safetensors"), device=map_location)
    return model, unflatten_state(skeleton, tensors)
