"""Files and folders that are never seen half-written, and the one file lock: the
package's helpers for replacing anything on disk.

:func:`atomic_write` (a file a writer fills by name), :class:`AtomicFile` (a file written
piece by piece), :func:`atomic_folder` (a folder filled, then swapped in) and
:func:`file_lock` (one writer at a time across processes). This module must not import
torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["AtomicFile", "atomic_folder", "atomic_write", "atomic_write_text", "file_lock", "is_leftover",
           "is_write_failure", "new_mode", "read_json", "replace_folder", "strict_json"]

# what ``_temp_beside`` names a file: ".<target>.<mkstemp's 8 random characters>.tmp<suffix>"
_LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]*)?$")


def _temp_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """A new private temporary file in ``path``'s folder (so the rename cannot cross file
    systems), hidden, named after it and ending ``.tmp<suffix>`` (:func:`is_leftover`
    knows the name): ``(fd, name)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")


def is_leftover(path: str | Path) -> bool:
    """Whether ``path`` is a temporary file that :func:`atomic_write` names, which a killed
    process leaves behind (its target was never replaced)."""
    return bool(_LEFTOVER.match(Path(path).name))


def _write_error(path: Path, err: BaseException) -> BaseException:
    """``err`` as one ``OSError`` naming ``path`` where it says the file system refused the
    write (whatever the writer library called it), else ``err`` itself."""
    if is_write_failure(err):
        return OSError(f"could not write {path}: {' '.join(str(err).split()) or type(err).__name__}")
    return err


def atomic_write(path: str | Path, write: Callable[[str], object], mode: int | None = None) -> Path:
    """``write(tmp)`` fills a temporary file beside ``path`` (same suffix, so ``np.savez``
    adds none), which then replaces ``path`` in one rename, with permissions ``mode``
    (default: those of the file it replaces, else what ``open()`` gives a new file). On
    any error the temporary file is removed and the error propagates; ``path`` is either
    the old file or the complete new one."""
    path = Path(path)
    fd, tmp = _temp_beside(path, path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path) if mode is None else mode)  # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failure = _write_error(path, err)
        if failure is not err:
            raise failure from err
        raise
    return path


class AtomicFile:
    """A file written piece by piece (``.file``, binary) into a temporary file beside
    ``path``: :meth:`commit` syncs it and renames it into place, :meth:`abort` removes it.
    Until the commit, ``path`` is the old file or absent."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        fd, self.tmp = _temp_beside(self.path)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> Path:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp, _mode_for(self.path))
            os.replace(self.tmp, self.path)
        except BaseException as err:
            self.abort()
            failure = _write_error(self.path, err)
            if failure is not err:
                raise failure from err
            raise
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block ends without error its
    files are synced and it replaces ``path`` (removed first where it exists) in one
    rename, with the permissions ``mkdir`` and ``open()`` give under the umask. On an
    error it is removed and ``path`` stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
                os.chmod(f, new_mode())
        os.chmod(tmp, new_mode(directory=True))  # mkdtemp's folder is private (0700)
        replace_folder(tmp, path)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(err) and not isinstance(err, OSError):  # e.g. safetensors on a full disk
            raise _write_error(path, err) from err
        raise


def replace_folder(source: str | Path, path: str | Path) -> Path:
    """Put the finished folder ``source`` at ``path`` (same file system), removing what
    was there: the rename is atomic, the removal before it is not, so a reader sees the
    old folder, none, or the complete new one, never a mix."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    os.replace(source, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (where the platform can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | Path, mode: int = 0o666) -> Iterator[None]:
    """An exclusive lock on the file ``path`` (made with ``mode`` under the umask where
    missing; a symlink there is refused, not followed), held for the block: one holder at
    a time across processes. Where the platform has no ``flock`` it holds nothing."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
