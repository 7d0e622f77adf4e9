"""Model files that carry their own config: ``model.safetensors`` + ``config.json``.

``config.json`` holds the encoder config and, for models saved by a training run, the
front-end config the model declares (``SpectrogramEncoder.frontend_config``).

Loading needs no flags (no retyped patch shapes) and never unpickles anything. Before
anything is allocated, ``config.json`` is validated (types, bounds) and the model it
describes is built on the meta device and compared, tensor by tensor, with the shapes in
the safetensors header: a hand-edited or mismatched config is an error, not 15 GB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import nn

from ..config import config_from_dict, config_to_dict
from ..fileio import atomic_write, read_json
from .encoder_config import checked_labels
from .registry import config_class_of, family_of, model_from_config

from .files import CONFIG_NAME, FORMAT, FORMAT_VERSION, WEIGHTS_NAME



def model_meta(model: nn.Module) -> dict:
    """What ``config.json`` holds for ``model``: format, family, config and (when a
    training run set it) the front end."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family_of(model.config),
        "config": config_to_dict(model.config),
    }
    frontend = model.frontend_config  # declared by training runs and conversions
    if frontend is not None:
        meta["frontend"] = config_to_dict(frontend)
    if getattr(model, "labels", None) is not None:  # a fine-tuned classifier's classes
        meta["labels"] = model.labels
        meta["id2label"] = {str(i): name for i, name in enumerate(model.labels["names"])}  # as Hugging Face
    return meta


def model_fingerprint(model: nn.Module) -> str:
    """A content hash of ``model``: its weights (names, dtypes, values) and config; equal
    for the same model loaded anywhere, different for other weights or options."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    digest.update(repr(model.config).encode())
    return digest.hexdigest()[:20]


def save_model(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s weights and config into ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = model_meta(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, p))
    atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(json.dumps(meta, indent=2)))
    return directory


def resolve_model_dir(path: str | Path) -> Path:
    """The model directory behind ``path``: the directory itself, or for a training
    run's folder its ``final/`` model, else its newest checkpoint; for the name of an
    encoder shipped with the package (:mod:`ssamba.models.shipped`, no such local path)
    its folder; or for a Hugging Face repo id (``org/name[@revision]``, no such local
    path) its snapshot in the Hub cache (:mod:`ssamba.models.hub`)."""
    from . import hub
    from .shipped import shipped_dir

    shipped = shipped_dir(path)
    if shipped is not None:
        path = shipped
    elif hub.is_repo_id(path):
        path = hub.resolve_repo(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model folder: {path} (nor a shipped encoder or a Hugging "
                                "Face repo id: org/name)")
    candidates = [path, path / "final"]
    pointer = path / "checkpoints" / "latest"
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if not re.fullmatch(r"step-\d+", name):  # only a checkpoint of this run, never a path elsewhere
            raise ValueError(f"{pointer} must name a checkpoint folder of {pointer.parent} (step-<N>), "
                             f"not {name[:200]!r}")
        candidates.append(path / "checkpoints" / name)
    for candidate in candidates:
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise FileNotFoundError(
        f"{path} is not an ssamba model directory (no {CONFIG_NAME} in {', '.join(map(str, candidates))})"
    )


def _read_meta(config_path: Path) -> dict:
    meta = read_json(config_path, "model config")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{config_path} is not an ssamba model config (format {got!r})")
    for key, kind in (("family", str), ("config", dict)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{config_path}: {key!r} must be a {kind.__name__}, got {meta.get(key)!r}")
    return meta


def weight_shapes(weights_path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as err:  # noqa: BLE001 - SafetensorError and OSError: the file is not usable
        raise ValueError(f"{weights_path} is not a readable safetensors file: {err}") from None


def available_memory_bytes() -> int | None:
    """Memory this machine can still give (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_weights(config, weights_path: Path) -> None:
    """Raise ``ValueError`` unless the model ``config`` describes has exactly the tensors
    (names and shapes) of ``weights_path``; the model is built on the meta device (no memory).
    Loading holds the model and the file's tensors at once: twice their bytes must fit in
    the memory the machine has available, or the load is refused before allocating."""
    import torch

    stored = weight_shapes(weights_path)
    with torch.device("meta"):
        tensors = model_from_config(config).state_dict()
        expected = {name: tuple(t.shape) for name, t in tensors.items()}
        needed = 2 * sum(t.numel() * t.element_size() for t in tensors.values())
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise ValueError(f"{weights_path.parent}: loading this model needs about {needed / 2**30:.1f} GiB "
                         f"(its weights and the model), more than the {available / 2**30:.1f} GiB available here")
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = [f"{n}: config gives {expected[n]}, weights hold {stored[n]}"
             for n in sorted(set(expected) & set(stored)) if expected[n] != stored[n]]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. " + "; ".join(wrong[:3]))
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing, e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
        raise ValueError(f"{weights_path.parent}: config.json does not describe these weights: " + "; ".join(parts))


def load_native(directory: str | Path, map_location: str = "cpu", **overrides) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (or a training run's model: pass the
    run folder, or a Hugging Face repo id); ``overrides`` change runtime options that do
    not affect the weights' shapes (e.g. ``scan_backend``, ``attention``).
    :func:`ssamba.load_model` also takes official checkpoints."""
    from safetensors.torch import load_file

    directory = resolve_model_dir(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found: not an ssamba model directory")
    meta = _read_meta(config_path)
    config = config_from_dict(config_class_of(meta["family"]), {**meta["config"], **overrides}, str(config_path))
    check_weights(config, weights_path)
    labels = None
    if "labels" in meta:
        labels = meta["labels"]
        if not isinstance(labels, dict):
            raise ValueError(f"{config_path}: 'labels' must be an object with 'ids' and 'names'")
        try:
            labels = checked_labels(config.num_classes, labels.get("ids") or [], labels.get("names"),
                                    bool(labels.get("multilabel", False)))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{config_path}: {err}") from None
    frontend = None
    if "frontend" in meta:
        from ..frontend import FrontendConfig

        frontend = config_from_dict(FrontendConfig, meta["frontend"], "frontend")
    model = model_from_config(config, frontend, labels)
    model.load_state_dict(load_file(str(weights_path), device=map_location), strict=True)
    return model.to(map_location)
