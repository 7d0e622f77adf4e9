"""Readers for the on-disk layouts public datasets ship in, and :func:`prepare`.

Each reader turns a dataset folder, as downloaded and unpacked, into named splits of
:class:`ClipEntry` rows plus a :class:`LabelMap` (``None`` for unlabelled sets).
:func:`prepare` writes them as ``<split>.json`` manifests and ``labels.csv``, the files
``ssamba finetune`` / ``ssamba pretrain`` read:

- ``esc50``: ``ROOT/audio/*.wav``, ``ROOT/meta/esc50.csv`` -> ``fold{k}_train``,
  ``fold{k}_test`` for k = 1..5; labels: the 50 categories.
- ``speechcommands`` (V2, 35 words) and ``speechcommands-v1`` (V1, 30 words):
  ``ROOT/<word>/*.wav``, ``ROOT/validation_list.txt``, ``ROOT/testing_list.txt`` ->
  ``train``, ``validation``, ``test``; labels: the words.
- ``speechcommands-v1-12``: V1 as the 12 classes of SUPERB KS1 (10 commands,
  ``_unknown_``, ``_silence_`` cut from ``_background_noise_``) -> the same splits.
- ``voxceleb1``: ``ROOT/wav/<id>/<video>/<n>.wav``, ``ROOT/iden_split.txt`` -> ``train``,
  ``validation``, ``test``; labels: the speaker ids.
- ``librispeech``: ``<spk>/<chapter>/*.flac`` at any depth under ``ROOT`` -> ``train``
  (and ``validation`` from ``dev-*`` subsets); unlabelled.
- ``folder``: audio files at any depth -> ``all``; unlabelled, or labelled by sub-folder;
  with a split (``split="80,10,10"``, :func:`split_entries`) -> ``train``,
  ``validation``, ``test``, stratified by label, groups (``group_by``) kept whole.

Manifests hold absolute paths to the audio where it lies (nothing is copied), except
files written under the output folder (the Speech Commands ``_silence_`` crops), which
are stored relative to it. Missing split files raise ``FileNotFoundError`` naming the
file and the layout; clips listed in a split file whose audio is missing are skipped
with one :class:`MissingAudioWarning` per split file giving the count.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .manifest import ClipEntry, LabelMap, write_label_csv, write_manifest

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")

SPEECHCOMMANDS_V1_WORDS = (
    "bed", "bird", "cat", "dog", "down", "eight", "five", "four", "go", "happy",
    "house", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "wow", "yes", "zero",
)  # fmt: skip
SPEECHCOMMANDS_V2_WORDS = tuple(sorted(SPEECHCOMMANDS_V1_WORDS + ("backward", "follow", "forward", "learn", "visual")))
# SUPERB KS1 classes, in s3prl's order
KS12_COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
KS12_CLASSES = KS12_COMMANDS + ("_unknown_", "_silence_")
BACKGROUND_NOISE = "_background_noise_"
# where in each background-noise recording the silence crops of a split come from
# (fractions of its length), so that train, validation and test crops do not overlap
SILENCE_REGIONS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
SILENCE_SEED = 0

_LIBRISPEECH_SUBSET = re.compile(r"^(train|dev|test)-(clean|other)(-\d+)?$")


class MissingAudioWarning(UserWarning):
    """Clips listed by a dataset's split file were skipped because their audio is missing."""


@dataclass
class DatasetSplits:
    """What a layout reader found: named splits of clips, the label map and skip counts."""

    splits: dict[str, list[ClipEntry]]
    labels: LabelMap | None
    skipped: dict[str, int] = field(default_factory=dict)  # split -> listed clips without audio

    def summary(self) -> dict[str, dict[str, int]]:
        """``{split: {"clips": n, "classes": k, "skipped": m}}``; ``classes`` counts the label ids present."""
        return {
            name: {
                "clips": len(entries),
                "classes": len({mid for entry in entries for mid in entry.labels}),
                "skipped": self.skipped.get(name, 0),
            }
            for name, entries in self.splits.items()
        }


# ----------------------------------------------------------------------------- helpers


def _require_dir(path: Path, layout: str, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{layout} layout: {what} {str(path)!r} does not exist or is not a folder")


def _require_file(path: Path, layout: str, expects: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"{layout} layout: split file {str(path)!r} is missing; the {layout} layout expects {expects}"
        )


def _warn_missing(missing: Sequence[str], source: str) -> None:
    if missing:
        examples = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        warnings.warn(
            f"skipped {len(missing)} clip(s) listed in {source} whose audio file is missing: {examples}",
            MissingAudioWarning,
            stacklevel=3,
        )


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # also macOS "._x.wav" resource forks


def _walk_audio(root: Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``root`` at any depth (following links, skipping hidden names), sorted."""
    extensions = tuple(e.lower() for e in extensions)
    found: list[Path] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link cycle
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        for name in files:
            if not _is_hidden(name) and name.lower().endswith(extensions):
                found.append(Path(folder) / name)
    return sorted(found)


def _read_list(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


# ----------------------------------------------------------------------------- ESC-50


def read_esc50(root: str | Path) -> DatasetSplits:
    """ESC-50: ``ROOT/audio/*.wav`` and ``ROOT/meta/esc50.csv`` (filename, fold, target, category, ...).

    Splits ``fold{k}_train`` (the other folds) and ``fold{k}_test`` (fold ``k``) for every
    fold of the CSV (1..5); labels are the category names ordered by their ``target``.
    """
    root = Path(root).expanduser().resolve()
    _require_dir(root, "esc50", "dataset folder")
    meta = root / "meta" / "esc50.csv"
    _require_file(meta, "esc50", "ROOT/meta/esc50.csv (columns filename,fold,target,category) and ROOT/audio/*.wav")
    audio = root / "audio"
    rows: list[tuple[str, int, int, str]] = []
    with open(meta, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields = [name.strip() for name in (reader.fieldnames or [])]
        missing_cols = [c for c in ("filename", "fold", "target", "category") if c not in fields]
        if missing_cols:
            raise ValueError(f"esc50 layout: {str(meta)!r} lacks column(s) {missing_cols}; got {fields}")
        reader.fieldnames = fields
        for line, row in enumerate(reader, start=2):
            try:
                rows.append((row["filename"].strip(), int(row["fold"]), int(row["target"]), row["category"].strip()))
            except (TypeError, ValueError, AttributeError):
                raise ValueError(f"esc50 layout: {str(meta)!r} line {line}: bad row {row!r}") from None
    if not rows:
        raise ValueError(f"esc50 layout: {str(meta)!r} lists no clips")

    categories: dict[int, str] = {}
    for filename, _, target, category in rows:
        if categories.setdefault(target, category) != category:
            raise ValueError(
                f"esc50 layout: {str(meta)!r}: target {target} is both {categories[target]!r} and {category!r}"
            )
    if sorted(categories) != list(range(len(categories))):
        raise ValueError(
            f"esc50 layout: {str(meta)!r}: targets must be 0..{len(categories) - 1}, got {sorted(categories)}"
        )
    labels = LabelMap.from_names([categories[i] for i in range(len(categories))])

    missing = [filename for filename, *_ in rows if not (audio / filename).is_file()]
    _warn_missing(missing, str(meta))
    missing_set = set(missing)
    folds = sorted({fold for _, fold, _, _ in rows})
    splits: dict[str, list[ClipEntry]] = {}
    skipped: dict[str, int] = {}
    for k in folds:
        for name, keep in ((f"fold{k}_train", lambda fold: fold != k), (f"fold{k}_test", lambda fold: fold == k)):
            listed = [(filename, category) for filename, fold, _, category in rows if keep(fold)]
            splits[name] = [ClipEntry(str(audio / fn), (cat,)) for fn, cat in listed if fn not in missing_set]
            skipped[name] = len(listed) - len(splits[name])
    return DatasetSplits(splits, labels, skipped)


# ----------------------------------------------------------------------------- Speech Commands


def _speechcommands_files(root: Path, layout: str, words: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Relative paths per split (``train``/``validation``/``test``) and per-split counts of missing listed clips."""
    _require_dir(root, layout, "dataset folder")
    expects = "ROOT/<word>/<speaker>_nohash_<n>.wav with ROOT/validation_list.txt and ROOT/testing_list.txt"
    lists = {"validation": root / "validation_list.txt", "test": root / "testing_list.txt"}
    for path in lists.values():
        _require_file(path, layout, expects)

    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    unexpected = [w for w in present if w not in words]
    if unexpected:
        other = "speechcommands" if layout.startswith("speechcommands-v1") else "speechcommands-v1"
        raise ValueError(
            f"{layout} layout: word folder(s) {unexpected} under {str(root)!r} are not among its "
            f"{len(words)} words; is this the other version of the dataset (layout {other!r})?"
        )
    absent = [w for w in words if w not in present]
    if absent:
        log.warning("%s: %d of the %d words have no folder under %s: %s", layout, len(absent), len(words), root,
                    ", ".join(absent))
    if not present:
        raise ValueError(f"{layout} layout: no word folders under {str(root)!r}; it expects {expects}")

    held_out: dict[str, list[str]] = {}
    skipped: dict[str, int] = {}
    claimed: set[str] = set()
    for split, path in lists.items():
        listed = [Path(line).as_posix() for line in _read_list(path)]
        missing = [rel for rel in listed if not (root / rel).is_file()]
        _warn_missing(missing, str(path))
        skipped[split] = len(missing)
        missing_set = set(missing)
        held_out[split] = [rel for rel in listed if rel not in missing_set]
        claimed.update(listed)
    train = []
    for word in present:
        for entry in sorted(os.scandir(root / word), key=lambda e: e.name):
            if entry.name.lower().endswith(".wav") and not _is_hidden(entry.name) and entry.is_file():
                rel = f"{word}/{entry.name}"
                if rel not in claimed:
                    train.append(rel)
    return {"train": train, **held_out}, skipped


def _word_of(rel: str) -> str:
    return rel.split("/", 1)[0]


def _read_speechcommands(root: str | Path, layout: str, words: Sequence[str]) -> DatasetSplits:
    root = Path(root).expanduser().resolve()
    files, skipped = _speechcommands_files(root, layout, words)
    labels = LabelMap.from_names(list(words))
    splits = {}
    for split, rels in files.items():
        for rel in rels:
            labels.index(_word_of(rel), str(root / rel))  # a listed clip of an unknown word: clear error
        splits[split] = [ClipEntry(str(root / rel), (_word_of(rel),)) for rel in rels]
    return DatasetSplits(splits, labels, skipped)


def read_speechcommands(root: str | Path) -> DatasetSplits:
    """Speech Commands V2 (35 words): splits ``train``, ``validation``, ``test``; labels the words.

    ``validation_list.txt`` / ``testing_list.txt`` (paths relative to ``ROOT``) define the
    held-out splits, every other ``<word>/*.wav`` is ``train``; ``_background_noise_`` is
    not used. The label map always holds all 35 words (sorted), so a partial copy gives
    the same class indices; word folders outside the list are an error.
    """
    return _read_speechcommands(root, "speechcommands", SPEECHCOMMANDS_V2_WORDS)


def read_speechcommands_v1(root: str | Path) -> DatasetSplits:
    """Speech Commands V1 (30 words), as :func:`read_speechcommands`."""
    return _read_speechcommands(root, "speechcommands-v1", SPEECHCOMMANDS_V1_WORDS)


def _silence_crops(root: Path, counts: dict[str, int], out_dir: Path, seed: int) -> dict[str, list[ClipEntry]]:
    """Write ``counts[split]`` 1-s crops of the background-noise recordings into ``out_dir/_silence_/<split>/``."""
    import soundfile

    noise_dir = root / BACKGROUND_NOISE
    noise_files = _walk_audio(noise_dir, (".wav",)) if noise_dir.is_dir() else []
    if not noise_files:
        if any(counts.values()):
            raise FileNotFoundError(
                f"speechcommands-v1-12 layout: no background-noise recordings in {str(noise_dir)!r}; "
                "the _silence_ class is cut from them"
            )
        return {split: [] for split in counts}
    recordings = []
    for path in noise_files:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        mono = data.mean(axis=1)
        if mono.size >= rate:  # at least one second
            recordings.append((path, mono, rate))
    if not recordings:
        raise ValueError(f"speechcommands-v1-12 layout: every recording in {str(noise_dir)!r} is shorter than 1 s")

    out: dict[str, list[ClipEntry]] = {}
    for split_index, (split, count) in enumerate(counts.items()):
        folder = out_dir / "_silence_" / split
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, split_index])
        lo_frac, hi_frac = SILENCE_REGIONS.get(split, (0.0, 1.0))
        entries = []
        for i in range(count):
            path, mono, rate = recordings[i % len(recordings)]
            lo, hi = int(lo_frac * mono.size), int(hi_frac * mono.size) - rate
            if hi < lo:  # this split's region is shorter than a second: use the whole recording
                lo, hi = 0, mono.size - rate
            start = int(rng.integers(lo, hi + 1))
            target = folder / f"{path.stem}_{i:05d}.wav"
            soundfile.write(str(target), mono[start : start + rate], rate, subtype="PCM_16")
            entries.append(ClipEntry(str(target), ("_silence_",)))
        out[split] = entries
    return out


def read_speechcommands_v1_12(
    root: str | Path, out_dir: str | Path, test_set: str | Path | None = None, seed: int = SILENCE_SEED
) -> DatasetSplits:
    """Speech Commands V1 as the 12 classes of SUPERB KS1, in s3prl's order.

    Classes: ``yes no up down left right on off stop go``, ``_unknown_`` (every other
    word) and ``_silence_``. The ``_silence_`` clips are 1-s crops of the
    ``_background_noise_`` recordings, written as 16-bit WAV files into
    ``out_dir/_silence_/<split>/``. Rule: each split gets ``round(N / 11)`` crops, where
    ``N`` counts its clips of the other 11 classes (so silence is as frequent as the
    average other class); crops cycle over the recordings in name order, their start
    drawn uniformly (NumPy generator seeded with ``[seed, split number]``) from a
    per-split region of each recording (train: first 80 %, validation: next 10 %, test:
    last 10 %; the whole recording where that region is under 1 s), so the same inputs
    always give the same files and the splits' crops do not overlap.

    ``test_set``: the separate SUPERB test folder (``speech_commands_test_set_v0.01``,
    with ``<class>/*.wav`` including ``_silence_`` and ``_unknown_``) to use as the
    ``test`` split instead of ``testing_list.txt`` plus crops.
    """
    root = Path(root).expanduser().resolve()
    out_dir = Path(out_dir).expanduser().resolve()
    layout = "speechcommands-v1-12"
    files, skipped = _speechcommands_files(root, layout, SPEECHCOMMANDS_V1_WORDS)
    labels = LabelMap.from_names(list(KS12_CLASSES))

    def label(rel: str) -> str:
        word = _word_of(rel)
        return word if word in KS12_COMMANDS else "_unknown_"

    splits = {split: [ClipEntry(str(root / rel), (label(rel),)) for rel in rels] for split, rels in files.items()}
    test_entries = None
    if test_set is not None:
        test_root = Path(test_set).expanduser().resolve()
        _require_dir(test_root, layout, "test set folder")
        test_entries = []
        for path in _walk_audio(test_root, (".wav",)):
            cls = path.relative_to(test_root).parts[0]
            if len(path.relative_to(test_root).parts) < 2 or cls not in labels:
                raise ValueError(
                    f"{layout} layout: test set file {str(path)!r} is not in a folder named after one of "
                    f"the classes {list(KS12_CLASSES)}"
                )
            test_entries.append(ClipEntry(str(path), (cls,)))
        if not test_entries:
            raise ValueError(f"{layout} layout: no .wav files under the test set folder {str(test_root)!r}")
        del splits["test"]
        skipped.pop("test", None)
    counts = {split: round(len(entries) / 11) for split, entries in splits.items()}
    crops = _silence_crops(root, counts, out_dir, seed)
    for split in splits:
        splits[split] = splits[split] + crops[split]
    if test_entries is not None:
        splits["test"] = test_entries
    return DatasetSplits(splits, labels, skipped)


# ----------------------------------------------------------------------------- VoxCeleb1


def read_voxceleb1(root: str | Path) -> DatasetSplits:
    """VoxCeleb1 identification: ``ROOT/iden_split.txt`` lines ``"<1|2|3> id10001/<video>/00001.wav"``.

    1, 2, 3 are ``train``, ``validation``, ``test``; paths are relative to ``ROOT/wav``
    (or a ``ROOT/*/wav`` such as ``vox1_dev_wav/wav`` and ``vox1_test_wav/wav``). Labels are
    the speaker ids of the split file, sorted. ``ROOT/meta/iden_split.txt`` is accepted too.
    """
    layout = "voxceleb1"
    root = Path(root).expanduser().resolve()
    _require_dir(root, layout, "dataset folder")
    split_file = root / "iden_split.txt"
    if not split_file.is_file() and (root / "meta" / "iden_split.txt").is_file():
        split_file = root / "meta" / "iden_split.txt"
    _require_file(split_file, layout, 'ROOT/iden_split.txt with lines "1 id10001/1zcIwhmdeo4/00001.wav" and ROOT/wav/')
    audio_roots = [root / "wav"] + sorted(p for p in root.glob("*/wav") if p.is_dir())
    audio_roots = [p for p in audio_roots if p.is_dir()]
    if not audio_roots:
        raise FileNotFoundError(f"{layout} layout: no audio folder {str(root / 'wav')!r} (wav/<id>/<video>/<n>.wav)")

    names = {"1": "train", "2": "validation", "3": "test"}
    listed: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for number, line in enumerate(_read_list(split_file), start=1):
        parts = line.split()
        if len(parts) != 2 or parts[0] not in names or "/" not in parts[1]:
            raise ValueError(
                f"{layout} layout: {str(split_file)!r} line {number}: expected '<1|2|3> id10001/<video>/<n>.wav', "
                f"got {line!r}"
            )
        listed[names[parts[0]]].append(parts[1])
    speakers = sorted({rel.split("/", 1)[0] for rels in listed.values() for rel in rels})
    if not speakers:
        raise ValueError(f"{layout} layout: {str(split_file)!r} lists no clips")
    labels = LabelMap.from_names(speakers)

    splits, skipped, missing = {}, {}, []
    for split, rels in listed.items():
        entries = []
        for rel in rels:
            path = next((r / rel for r in audio_roots if (r / rel).is_file()), None)
            if path is None:
                missing.append(rel)
            else:
                entries.append(ClipEntry(str(path), (rel.split("/", 1)[0],)))
        splits[split] = entries
        skipped[split] = len(rels) - len(entries)
    _warn_missing(missing, str(split_file))
    return DatasetSplits(splits, labels, skipped)


# ----------------------------------------------------------------------------- LibriSpeech and folders


def read_librispeech(root: str | Path) -> DatasetSplits:
    """LibriSpeech ``<spk>/<chapter>/*.flac`` under ``ROOT`` at any depth, unlabelled.

    ``ROOT`` may be one subset (``train-clean-100``) or the ``LibriSpeech`` folder holding
    several: clips inside ``train-*`` subsets (or outside any named subset) form ``train``,
    those inside ``dev-*`` subsets form ``validation`` (written only when present) and
    ``test-*`` subsets are left out, so evaluation audio never enters pretraining.
    """
    layout = "librispeech"
    root = Path(root).expanduser().resolve()
    _require_dir(root, layout, "dataset folder")
    splits: dict[str, list[ClipEntry]] = {"train": [], "validation": []}
    left_out = 0
    for path in _walk_audio(root, (".flac",)):
        subsets = [p for p in path.relative_to(root).parts[:-1] if _LIBRISPEECH_SUBSET.match(p)]
        kind = subsets[-1].split("-", 1)[0] if subsets else "train"
        if kind == "test":
            left_out += 1
        else:
            splits["train" if kind == "train" else "validation"].append(ClipEntry(str(path)))
    if left_out:
        log.info("librispeech: left out %d clips of test-* subsets", left_out)
    if not splits["validation"]:
        del splits["validation"]
    if not splits["train"] and "validation" not in splits:
        raise FileNotFoundError(f"{layout} layout: no .flac files under {str(root)!r} (<spk>/<chapter>/*.flac)")
    return DatasetSplits(splits, None, {})


def read_folder(root: str | Path, labels_from_subfolder: bool = False) -> DatasetSplits:
    """Every audio file (``.wav .flac .ogg .mp3 .opus``) under ``ROOT`` at any depth, as split ``all``.

    Unlabelled, or with ``labels_from_subfolder`` labelled by the top-level sub-folder of
    ``ROOT`` it lies in (``ROOT/dog/x.wav`` and ``ROOT/dog/a/y.wav`` are ``dog``); files
    directly in ``ROOT`` are then skipped with a warning. Hidden files are ignored.
    """
    layout = "folder"
    root = Path(root).expanduser().resolve()
    _require_dir(root, layout, "folder")
    files = _walk_audio(root)
    if not files:
        raise FileNotFoundError(
            f"{layout} layout: no audio files ({' '.join(AUDIO_EXTENSIONS)}) under {str(root)!r}"
        )
    if not labels_from_subfolder:
        return DatasetSplits({"all": [ClipEntry(str(p)) for p in files]}, None, {})
    entries, loose = [], []
    for path in files:
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            loose.append(path.name)
        else:
            entries.append(ClipEntry(str(path), (parts[0],)))
    if loose:
        warnings.warn(
            f"skipped {len(loose)} file(s) directly in {str(root)!r} (no sub-folder to take a label from): "
            + ", ".join(loose[:3]) + (", ..." if len(loose) > 3 else ""),
            MissingAudioWarning,
            stacklevel=2,
        )
    if not entries:
        raise ValueError(
            f"{layout} layout: --labels-from-subfolder but no audio file is inside a sub-folder of {str(root)!r}"
        )
    names = sorted({e.labels[0] for e in entries})
    try:
        labels = LabelMap.from_names(names)
    except ValueError as err:
        raise ValueError(f"{layout} layout: sub-folder names cannot be labels: {err}") from err
    return DatasetSplits({"all": entries}, labels, {"all": len(loose)})


# ----------------------------------------------------------------------------- splitting


SPLIT_NAMES = ("train", "validation", "test")


def parse_split(text: str) -> tuple[float, ...]:
    """``"80,10,10"`` (or ``"0.8,0.1,0.1"``) -> fractions of train, validation, test that sum to 1."""
    try:
        parts = [float(p) for p in str(text).split(",")]
    except ValueError:
        raise ValueError(f"--split {text!r}: give two or three numbers, e.g. 80,10,10") from None
    if not 2 <= len(parts) <= 3 or any(not np.isfinite(p) or p < 0 for p in parts) or sum(parts) <= 0:
        raise ValueError(f"--split {text!r}: give two or three non-negative numbers with a positive sum, "
                         "e.g. 80,10,10 (train, validation, test)")
    total = sum(parts)
    return tuple(p / total for p in parts)


def split_entries(entries: Sequence[ClipEntry], fractions: Sequence[float], seed: int = 0,
                  group_by: str | None = None, root: str | Path | None = None) -> dict[str, list[ClipEntry]]:
    """Split ``entries`` into ``train``/``validation``(/``test``) in the proportions
    ``fractions``, stratified by label (each clip's first label; unlabelled clips form
    one stratum) and reproducible from ``seed``.

    ``group_by``: a regular expression searched in each file's path (relative to ``root``
    when given); clips with the same match (its first group, if it has one) stay in one
    split, e.g. ``'^(spk\\d+)_'`` keeps a speaker's clips together. A group's stratum is
    its most common label. Within each stratum, groups are dealt in a seeded order,
    largest first, each to the split furthest below its share.
    """
    import random

    pattern = re.compile(group_by) if group_by else None
    groups: dict[str, list[ClipEntry]] = {}
    for entry in entries:
        path = Path(entry.wav)
        text = (path.relative_to(root) if root and path.is_relative_to(root) else path).as_posix()
        if pattern is None:
            key = text
        else:
            match = pattern.search(text)
            if match is None:
                raise ValueError(f"--group-by {group_by!r} does not match {text!r}: every file needs a group")
            key = match.group(1) if pattern.groups else match.group(0)
        groups.setdefault(key, []).append(entry)
    strata: dict[str, list[str]] = {}
    for key, members in groups.items():
        counts: dict[str, int] = {}
        for entry in members:
            label = entry.labels[0] if entry.labels else ""
            counts[label] = counts.get(label, 0) + 1
        strata.setdefault(min(counts, key=lambda label: (-counts[label], label)), []).append(key)
    names = SPLIT_NAMES[:len(fractions)]
    out: dict[str, list[ClipEntry]] = {name: [] for name in names}
    rng = random.Random(seed)
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        rng.shuffle(keys)
        keys.sort(key=lambda k: -len(groups[k]))  # stable: the seeded order among equal sizes
        total = sum(len(groups[k]) for k in keys)
        taken = [0] * len(names)
        for key in keys:
            deficit = [fractions[i] * total - taken[i] for i in range(len(names))]
            best = max(range(len(names)), key=lambda i: (deficit[i], -i))
            taken[best] += len(groups[key])
            out[names[best]] += groups[key]
    return {name: sorted(rows, key=lambda e: e.wav) for name, rows in out.items()}


# ----------------------------------------------------------------------------- registry and prepare


LAYOUTS: dict[str, Callable[..., DatasetSplits]] = {
    "esc50": read_esc50,
    "speechcommands": read_speechcommands,
    "speechcommands-v1": read_speechcommands_v1,
    "speechcommands-v1-12": read_speechcommands_v1_12,
    "voxceleb1": read_voxceleb1,
    "librispeech": read_librispeech,
    "folder": read_folder,
}

# options each reader takes besides ROOT (``out_dir`` is passed by :func:`prepare`)
_OPTIONS: dict[str, tuple[str, ...]] = {
    "speechcommands-v1-12": ("test_set", "seed"),
    "folder": ("labels_from_subfolder",),
}


def read_layout(layout: str, root: str | Path, out_dir: str | Path | None = None, **options: Any) -> DatasetSplits:
    """Read dataset folder ``root`` laid out as ``layout`` (a key of :data:`LAYOUTS`).

    ``out_dir`` is needed only by ``speechcommands-v1-12`` (where it writes the silence
    crops). Options a layout does not take raise ``TypeError``; options left at
    ``None`` / ``False`` are ignored, so a command line can pass all of them.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    allowed = _OPTIONS.get(layout, ())
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        takes = f"; it takes {list(allowed)}" if allowed else ""
        raise TypeError(f"layout {layout!r} takes no option(s) {unknown}{takes}")
    if layout == "speechcommands-v1-12":
        if out_dir is None:
            raise TypeError("layout 'speechcommands-v1-12' needs out_dir, where it writes the _silence_ crops")
        return read_speechcommands_v1_12(root, out_dir, **given)
    return LAYOUTS[layout](root, **given)


def prepare(layout: str, root: str | Path, out_dir: str | Path, **options: Any) -> dict[str, dict[str, int]]:
    """Write ``out_dir/<split>.json`` manifests and ``out_dir/labels.csv`` for a dataset folder.

    ``labels.csv`` is written only for labelled layouts. Returns the summary
    ``{split: {"clips": n, "classes": k, "skipped": m}}`` (``classes``: label ids present
    in the split; ``skipped``: clips its split file lists whose audio is missing).
    Manifest paths under ``out_dir`` are stored relative to it, other paths absolute.
    A layout read as one split ``all`` (``folder``) is split by ``split`` ("80,10,10"),
    ``split_seed`` and ``group_by`` (:func:`split_entries`) when they are given.
    """
    out_dir = Path(out_dir).expanduser()
    split, seed, group_by = (options.pop(k, None) for k in ("split", "split_seed", "group_by"))
    if seed is not None and split is None and group_by is None:
        raise ValueError("a split seed chooses the clips of a split: give the split too (--split 80,10,10)")
    result = read_layout(layout, root, out_dir=out_dir, **options)
    if split is not None or group_by is not None:
        if set(result.splits) != {"all"}:
            raise ValueError(f"layout {layout!r} comes with its own splits ({', '.join(result.splits)}); "
                             "--split and --group-by are for the folder layout")
        fractions = parse_split(split) if split is not None else parse_split("80,10,10")
        splits = split_entries(result.splits["all"], fractions, seed or 0, group_by,
                               Path(root).expanduser().resolve())
        result = DatasetSplits(splits, result.labels, {})
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, entries in result.splits.items():
        write_manifest(entries, out_dir / f"{split}.json", relative=True)
    if result.labels is not None:
        write_label_csv(result.labels, out_dir / "labels.csv")
    return result.summary()
