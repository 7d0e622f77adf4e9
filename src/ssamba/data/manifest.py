"""SSAST-style dataset manifests and label CSVs.

Manifest JSON (what SSAST / AST / SSAMBA users already have)::

    {"data": [{"wav": "/path/a.flac", "labels": "/m/07rwj01,/m/07rwj02"}, ...]}

``labels`` is a comma-separated list of label ids (the ``mid`` column of the label CSV);
pretraining manifests may carry a dummy label or none at all. Relative ``wav`` paths are
resolved against the folder holding the manifest, so a dataset folder can be moved.

Label CSV: header ``index,mid,display_name``; ``index`` runs over ``0 .. C-1``.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from ..fileio import atomic_write_text, read_json

LABEL_CSV_HEADER = ("index", "mid", "display_name")


@dataclass(frozen=True)
class ClipEntry:
    """One manifest row: an audio file and its label ids (possibly none)."""

    wav: str
    labels: tuple[str, ...] = ()


def split_labels(labels: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"/m/a, /m/b"`` or ``["/m/a", "/m/b"]`` -> ``("/m/a", "/m/b")``; empty ids are dropped."""
    if labels is None:
        return ()
    if isinstance(labels, str):
        parts = labels.split(",")
    elif isinstance(labels, (list, tuple)):
        parts = list(labels)
    else:
        raise ValueError(f"labels must be a comma-separated string of ids or a list of them, got {labels!r}")
    out = []
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"label ids must be strings, got {part!r}")
        part = part.strip()
        if part:
            out.append(part)
    return tuple(out)


def read_manifest(path: str | Path) -> list[ClipEntry]:
    """Read a manifest JSON into :class:`ClipEntry` rows (absolute ``wav`` paths).

    Raises ``FileNotFoundError`` for a missing manifest and ``ValueError`` (naming the
    file, and the row where it applies) for invalid JSON, a missing ``"data"`` list or a
    row without ``"wav"``. Whether the audio files exist is *not* checked here: bad clips
    are handled when they are loaded (see :class:`ssamba.data.ClipDataset`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    content = read_json(path, "manifest")
    if not isinstance(content, dict) or "data" not in content:
        raise ValueError(
            f"manifest {str(path)!r} has no \"data\" list; expected "
            '{"data": [{"wav": "a.flac", "labels": "id1,id2"}, ...]}'
        )
    rows = content["data"]
    if not isinstance(rows, list):
        raise ValueError(f"manifest {str(path)!r}: \"data\" must be a list, got {type(rows).__name__}")
    root = path.resolve().parent
    entries = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "wav" not in row:
            raise ValueError(f"manifest {str(path)!r}: entry {i} has no \"wav\" field: {row!r}")
        wav = row["wav"]
        if not isinstance(wav, str) or not wav:
            raise ValueError(f"manifest {str(path)!r}: entry {i} has an invalid \"wav\": {wav!r}")
        try:
            labels = split_labels(row.get("labels"))
        except ValueError as err:
            raise ValueError(f"manifest {str(path)!r}: entry {i} ({wav}): {err}") from err
        wav_path = Path(os.path.expanduser(wav))
        if not wav_path.is_absolute():
            wav_path = root / wav_path
        entries.append(ClipEntry(wav=str(wav_path), labels=labels))
    return entries


def write_manifest(entries: Iterable[ClipEntry], path: str | Path, relative: bool = False) -> None:
    """Write ``entries`` as a manifest JSON (atomically).

    With ``relative=True`` audio paths inside the manifest's folder are written relative
    to it, so the folder can be moved; other paths are written as given.
    """
    path = Path(path)
    root = path.resolve().parent
    rows = []
    for entry in entries:
        wav = entry.wav
        if relative:
            absolute = Path(wav).resolve()
            if absolute.is_relative_to(root):
                wav = absolute.relative_to(root).as_posix()
        rows.append({"wav": wav, "labels": ",".join(entry.labels)})
    atomic_write_text(path, json.dumps({"data": rows}, indent=1) + "\n")


class LabelMap:
    """Label ids (``mid``) <-> class indices ``0 .. C-1``, with display names.

    >>> labels = LabelMap.from_names(["dog", "rain"])
    >>> labels.encode("rain,dog")
    tensor([1., 1.])
    """

    def __init__(self, ids: Sequence[str], names: Sequence[str] | None = None):
        ids = tuple(ids)
        names = tuple(names) if names is not None else ids
        if len(names) != len(ids):
            raise ValueError(f"{len(ids)} label ids but {len(names)} display names")
        seen: dict[str, int] = {}
        for i, mid in enumerate(ids):
            if not isinstance(mid, str) or not mid.strip() or "," in mid:
                raise ValueError(f"label id {mid!r} (index {i}) must be a non-empty string without commas")
            if mid in seen:
                raise ValueError(f"label id {mid!r} appears twice (indices {seen[mid]} and {i})")
            seen[mid] = i
        self.ids: tuple[str, ...] = ids
        self.names: tuple[str, ...] = names
        self._index = seen

    @classmethod
    def from_names(cls, names: Sequence[str]) -> "LabelMap":
        """Map whose ids are the names themselves (ESC-50 categories, keyword lists)."""
        return cls(list(names), list(names))

    @property
    def num_classes(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, mid: str) -> bool:
        return mid in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and (self.ids, self.names) == (other.ids, other.names)

    def __repr__(self) -> str:
        return f"LabelMap({self.num_classes} classes: {list(self.ids[:3])}{'...' if len(self) > 3 else ''})"

    def index(self, mid: str, source: str | None = None) -> int:
        """Class index of label id ``mid``; ``ValueError`` naming it (and ``source``) if unknown."""
        try:
            return self._index[mid]
        except KeyError:
            where = f" in manifest entry {source!r}" if source else ""
            raise ValueError(
                f"unknown label {mid!r}{where}; the label map has {self.num_classes} classes "
                f"(e.g. {list(self.ids[:5])}); is this the right label CSV?"
            ) from None

    def encode(self, labels: str | Sequence[str] | ClipEntry, source: str | None = None) -> Tensor:
        """Multi-hot float32 target ``(C,)`` of ``labels`` (ids, a comma-separated string, or an entry).

        ``source`` (default: the entry's path) names the manifest entry in the error raised
        for an unknown label. No labels gives an all-zero target.
        """
        if isinstance(labels, ClipEntry):
            source = source or labels.wav
            labels = labels.labels
        target = torch.zeros(self.num_classes, dtype=torch.float32)
        for mid in split_labels(labels):
            target[self.index(mid, source)] = 1.0
        return target

    def decode(self, target: Tensor, threshold: float = 0.5) -> tuple[str, ...]:
        """Ids whose entry of ``target`` ``(C,)`` is at least ``threshold``."""
        return tuple(self.ids[i] for i in (target >= threshold).nonzero().flatten().tolist())


def read_label_csv(path: str | Path) -> LabelMap:
    """Read a label CSV with header ``index,mid,display_name`` (rows in any order)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label CSV {str(path)!r} does not exist")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = [name.strip() for name in (reader.fieldnames or [])]
        missing = [name for name in LABEL_CSV_HEADER if name not in fields]
        if missing:
            raise ValueError(
                f"label CSV {str(path)!r} lacks column(s) {missing}; "
                f"expected header {','.join(LABEL_CSV_HEADER)}, got {fields}"
            )
        reader.fieldnames = fields
        rows = {}
        for line, row in enumerate(reader, start=2):
            try:
                index = int(row["index"])
            except (TypeError, ValueError):
                raise ValueError(f"label CSV {str(path)!r} line {line}: bad index {row['index']!r}") from None
            if index in rows:
                raise ValueError(f"label CSV {str(path)!r} line {line}: index {index} appears twice")
            rows[index] = ((row["mid"] or "").strip(), (row["display_name"] or "").strip())
    if sorted(rows) != list(range(len(rows))):
        raise ValueError(f"label CSV {str(path)!r}: indices must be 0..{len(rows) - 1}, each once")
    try:
        return LabelMap([rows[i][0] for i in range(len(rows))], [rows[i][1] for i in range(len(rows))])
    except ValueError as err:
        raise ValueError(f"label CSV {str(path)!r}: {err}") from err


def write_label_csv(label_map: LabelMap, path: str | Path) -> None:
    """Write ``label_map`` as a label CSV (atomically)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_CSV_HEADER)
    for i, (mid, name) in enumerate(zip(label_map.ids, label_map.names)):
        writer.writerow([i, mid, name])
    atomic_write_text(Path(path), buffer.getvalue())
