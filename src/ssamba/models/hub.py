"""Models on the Hugging Face Hub: load by repo id, push with a generated model card.

A Hub repository holds what :func:`ssamba.save_model` writes (``config.json`` +
``model.safetensors``) and a ``README.md`` model card. Everywhere a model directory is
accepted - :func:`ssamba.load_model`, :func:`ssamba.load`, ``from_pretrained``,
``--checkpoint``, ``model.init_from`` - a repo id ``org/name`` (optionally
``org/name@revision``: a branch, tag or commit) is accepted too, when no local path of
that name exists. It resolves through ``huggingface_hub``'s cache, by its own rules:
``HF_HOME`` / ``HF_HUB_CACHE`` say where the cache is, ``HF_HUB_OFFLINE=1`` forbids the
network (a repo not in the cache is then an error), ``HF_TOKEN`` authenticates. Both
variables are read at each call, not when ``huggingface_hub`` is imported.

``huggingface_hub`` is an optional dependency: ``pip install 'ssamba[hub]'``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserError, require
from .files import CONFIG_NAME, WEIGHTS_NAME

__all__ = ["is_repo_id", "model_card", "push_to_hub", "resolve_repo"]

CARD_NAME = "README.md"
_REPO_ID = re.compile(r"^(?:hf://)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?$")


class HubError(UserError):
    """A repo id that cannot be resolved (not cached while offline, unknown, no access)."""


def is_repo_id(spec: str | Path) -> bool:
    """``org/name`` or ``org/name@revision`` (``hf://`` allowed) that is not a local path.
    Without ``hf://``, a spec whose first part is a local folder (``runs/x`` beside a
    ``runs/`` folder) is a mistyped path, not a repo id."""
    text = str(spec)
    if not _REPO_ID.match(text) or Path(text).exists():
        return False
    return text.startswith("hf://") or not Path(text.split("@")[0]).parent.is_dir()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(home) / "hub"


def resolve_repo(spec: str | Path) -> Path:
    """The local snapshot folder of the Hub model ``spec`` (``org/name[@revision]``),
    downloaded into the cache unless it is there (or ``HF_HUB_OFFLINE`` is set)."""
    match = _REPO_ID.match(str(spec))
    if not match:
        raise ValueError(f"{str(spec)!r} is not a Hugging Face repo id (org/name or org/name@revision)")
    repo_id, revision = match.group(1), match.group(2)
    if revision is not None and any(part in ("", ".", "..") for part in revision.split("/")):
        raise ValueError(f"{str(spec)!r}: a revision is a branch, tag or commit, not a path ({revision!r})")
    hub = require("huggingface_hub", f"loading {repo_id!r} from the Hugging Face Hub")
    cache, offline = _cache_dir(), _offline()
    try:
        folder = hub.snapshot_download(repo_id, revision=revision, cache_dir=str(cache), local_files_only=offline,
                                       allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
                                       library_name="ssamba")
    except Exception as err:  # huggingface_hub's errors: not cached, no network, unknown repo, no access
        where = f"{repo_id}@{revision}" if revision else repo_id
        if offline:
            raise HubError(f"{where} is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set "
                           "(unset it to download, or set HF_HOME / HF_HUB_CACHE to the cache that has it)") from None
        raise HubError(f"{where} is neither a local path nor a model that could be fetched from the Hugging Face "
                       f"Hub ({type(err).__name__}: {err})") from None
    folder = Path(folder)
    # a ref file or snapshot link in the cache may point anywhere: accept only the repo's
    # own snapshots, so that a planted cache cannot load a model from an arbitrary folder
    snapshots = (cache / f"models--{repo_id.replace('/', '--')}" / "snapshots").resolve()
    resolved = folder.resolve()
    if resolved.parent != snapshots:
        raise HubError(f"{repo_id}: the Hugging Face cache points its snapshot outside {snapshots} ({resolved}); "
                       "refusing it")
    for name in (CONFIG_NAME, WEIGHTS_NAME):  # files are links into the repo's blobs
        target = (folder / name).resolve()
        if (folder / name).exists() and target.parent != snapshots.parent / "blobs" and target.parent != resolved:
            raise HubError(f"{repo_id}: {name} in the Hugging Face cache points outside the repo ({target}); "
                           "refusing it")
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise HubError(f"{repo_id} holds no ssamba model ({CONFIG_NAME} + {WEIGHTS_NAME}) at {folder}")
    return folder


def _fmt_pair(value: Any) -> str:
    return "x".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def model_card(meta: dict[str, Any], repo_id: str, num_params: int | None = None,
               training: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> str:
    """A model card from a saved model's ``config.json`` content ``meta``: its family and
    geometry, the front end it expects, and, when given, the training data and metrics
    (``training`` / ``metrics``: flat dicts)."""
    family, config, frontend = meta["family"], meta["config"], meta.get("frontend")
    size = f"{num_params / 1e6:.2f} M parameters, " if num_params else ""
    lines = [
        "---",
        "library_name: ssamba",
        f"tags: [audio, self-supervised-learning, audio-classification, ssamba, {family}]",
        "---",
        "",
        f"# {repo_id}",
        "",
        f"A {family.upper()} audio encoder for [ssamba](https://pypi.org/project/ssamba/): {size}"
        f"embedding size {config.get('embed_dim')}, depth {config.get('depth')}, patches "
        f"{_fmt_pair(config.get('patch_size'))} with stride {_fmt_pair(config.get('patch_stride'))} over a "
        f"{config.get('input_fdim')}-bin log-mel input of {config.get('input_tdim')} frames.",
        "",
        "```python",
        "import ssamba",
        f'model = ssamba.load_model("{repo_id}")      # the encoder',
        f'embedder = ssamba.load("{repo_id}")         # waveform -> embeddings, with its front end',
        "```",
        "",
        "## Configuration",
        "",
        "| option | value |",
        "| --- | --- |",
    ]
    lines += [f"| `{key}` | `{value}` |" for key, value in sorted(config.items())]
    lines += ["", "## Front end", ""]
    if frontend:
        lines += ["| option | value |", "| --- | --- |"]
        lines += [f"| `{k}` | `{v}` |" for k, v in sorted(frontend.items())]
    else:
        lines.append("Not recorded: ssamba's default Kaldi log-mel front end (128 bins, 25/10 ms).")
    lines += ["", "## Training", ""]
    lines += [f"- **{k}**: {v}" for k, v in training.items()] if training else ["Not recorded."]
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("Not recorded.")
    return "\n".join(lines) + "\n"


def push_to_hub(model, repo_id: str, *, private: bool | None = None, token: str | None = None,
                revision: str | None = None, training: dict[str, Any] | None = None,
                metrics: dict[str, Any] | None = None, commit_message: str = "Upload ssamba model") -> str:
    """Save ``model`` with a generated model card (:func:`model_card`) and upload it to
    the Hub repository ``repo_id`` (created if missing); returns the commit URL."""
    if not _REPO_ID.match(repo_id) or "@" in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hugging Face repo id (org/name)")
    if _offline():
        raise HubError(f"cannot push {repo_id}: HF_HUB_OFFLINE is set")
    hub = require("huggingface_hub", f"pushing {repo_id!r} to the Hugging Face Hub")
    api = hub.HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ssamba-push-") as tmp:
        model.save_pretrained(tmp)
        meta = json.loads((Path(tmp) / CONFIG_NAME).read_text(encoding="utf-8"))
        card = model_card(meta, repo_id, sum(p.numel() for p in model.parameters()), training, metrics)
        (Path(tmp) / CARD_NAME).write_text(card, encoding="utf-8")
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=commit_message,
                                 repo_type="model")
    return str(getattr(info, "commit_url", info))
