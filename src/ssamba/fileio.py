"""Files that are never seen half-written: one atomic-write helper for the package.

This module must not import torch.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "atomic_write_text", "is_write_failure", "new_mode", "read_json", "strict_json"]


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """``write(tmp)`` fills a temporary file beside ``path`` (same folder, so the rename
    cannot cross file systems; same suffix, so ``np.savez`` adds none), which then
    replaces ``path`` in one rename. On any error the temporary file is removed and the
    error propagates; ``path`` is either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path))  # mkstemp made it 0600; a replaced file keeps its mode
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_write_failure(err):  # one message naming the file, whatever the writer said
            raise OSError(f"could not write {path}: {' '.join(str(err).split()) or type(err).__name__}") from err
        raise
    return path


def _mode_for(path: Path) -> int:
    """The permissions ``path`` should get: those of the file it replaces, else what
    ``open()`` would give a new file under this process's umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return new_mode()


def new_mode(directory: bool = False) -> int:
    """The mode ``open()`` (or ``mkdir``) gives a new file (folder) under the umask:
    what a file made with ``mkstemp`` (``mkdtemp``) must be given before it is renamed
    into place, since those are private (0600, 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def is_write_failure(err: BaseException) -> bool:
    """Whether ``err`` (from a writer library) says the file system refused the write:
    an ``OSError``, or a library's own error carrying one (safetensors reports a full
    disk as ``SafetensorError``)."""
    if isinstance(err, OSError):
        return True
    text = str(err)
    return type(err).__name__ == "SafetensorError" or "No space left on device" in text or "Errno 28" in text


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 ``text`` (line endings as given)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline=""))


def read_json(path: str | Path, what: str = "file"):
    """The JSON value in ``path``; ``ValueError`` naming the file (and ``what`` it is) when
    it is not UTF-8 JSON or nests deeper than the parser can follow."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {' '.join(str(err).split())}") from None
    except RecursionError:
        raise ValueError(f"{what} {str(path)!r} nests its JSON too deeply to read") from None


def strict_json(value, **options) -> str:
    """``json.dumps(value)`` as strict JSON: NaN and infinities become ``null`` (Python's
    default writes ``NaN`` / ``Infinity``, which other readers refuse)."""
    import math

    def finite(node):
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, dict):
            return {k: finite(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [finite(v) for v in node]
        return node

    return json.dumps(finite(value), allow_nan=False, **options)
