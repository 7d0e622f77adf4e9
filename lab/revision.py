"""A package module as it is at a git revision, imported beside the current one, for the
lab's A/B rigs (``mixer_ab.py``, ``shard_io_ab.py``)."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_at(rev: str, module: str, rig: str):
    """``module`` (dotted, e.g. ``"ssamba.layers.mamba"``) as of git revision ``rev``,
    imported as a sibling of the current one so that its relative imports resolve in the
    current package. ``SystemExit`` naming ``rig`` when git cannot show the file."""
    package, _, name = module.rpartition(".")
    source = f"src/{module.replace('.', '/')}.py"
    proc = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{source}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{rig}: error: cannot read {source} at {rev}: {proc.stderr.strip()}")
    importlib.import_module(package)
    path = Path(tempfile.mkdtemp(prefix=f"{rig}-")) / f"{name}.py"
    path.write_text(proc.stdout)
    qualified = f"{package}._{name}_at_revision"
    spec = importlib.util.spec_from_file_location(qualified, path)
    loaded = importlib.util.module_from_spec(spec)
    loaded.__package__ = package
    sys.modules[qualified] = loaded
    spec.loader.exec_module(loaded)
    return loaded
