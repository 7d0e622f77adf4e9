"""Encoders that ship inside the package, loaded by name: ``ssamba.load_model("ssamba-demo")``.

Each is a folder of :data:`SHIPPED_ROOT` named after the encoder: ``config.json`` and
``model.safetensors`` (what :func:`ssamba.save_model` writes, front end included), with
its provenance beside them: ``experiment.json`` (the pretraining recipe), ``metrics.csv``
(its training and validation curves) and ``provenance.json`` (the commit it was trained
at, its steps, how the run was carried out). A name is looked up only where no local
path of that name exists, so a folder in the working directory always wins.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_ROOT = Path(__file__).parent / "pretrained"
PROVENANCE_FILES = ("experiment.json", "metrics.csv", "provenance.json")


def shipped_names() -> list[str]:
    """The names of the encoders shipped with this installation, sorted."""
    if not SHIPPED_ROOT.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_ROOT.iterdir() if (p / "config.json").is_file())


def shipped_dir(name: str | Path) -> Path | None:
    """The folder of the shipped encoder ``name``, or None (not a shipped name, or a local
    path of that name exists)."""
    text = str(name)
    if Path(text).exists() or text not in shipped_names():
        return None
    return SHIPPED_ROOT / text
