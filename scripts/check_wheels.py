"""Check that ssamba's dependencies install from wheels alone: no compiler, no system package.

Resolves, with ``pip install --dry-run --only-binary=:all:`` into nothing (``--ignore-installed``):
the core dependencies of ``pyproject.toml`` (what ``pip install ssamba`` needs), the same
with the ``demo``, ``hub`` and ``onnx`` extras, and the demo's SoundFont renderer without its dependencies (how
``scripts/setup.sh`` installs it). torch is pinned to ``$SSAMBA_TORCH`` (default the CPU
build ``torch==2.13.0``) so that the check does not fetch a multi-GB CUDA build. Exit
status 1 names the set that needs a source build. Run by ``.ci/run``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RENDERER = "tinysoundfont>=0.3.7"  # installed with --no-deps (see pyproject.toml)


def resolve(requirements: list[str], no_deps: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           "--disable-pip-version-check", *(["--no-deps"] if no_deps else []), *requirements]
    return subprocess.run(cmd, capture_output=True, text=True)


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = os.environ.get("SSAMBA_TORCH", "torch==2.13.0")
    core = [torch_pin if re.match(r"torch\b", r) else r for r in project["dependencies"]]
    extras = project["optional-dependencies"]
    demo = extras["demo"] + extras["hub"] + extras["onnx"]
    failed = []
    for name, reqs, no_deps in (("core", core, False), ("core + demo + hub + onnx", core + demo, False),
                                ("renderer (--no-deps)", [RENDERER], True)):
        proc = resolve(reqs, no_deps)
        would = re.search(r"Would install (.*)", proc.stdout)
        if proc.returncode != 0:
            failed.append(name)
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            print(f"[wheels] {name}: NOT resolvable from wheels only: {tail}")
        else:
            print(f"[wheels] {name}: wheels only: {would.group(1) if would else 'nothing to install'}")
    if failed:
        print(f"[wheels] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
