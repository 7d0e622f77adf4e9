"""Embedding audio files in bulk: what ``ssamba embed`` runs.

Inputs are files, folders (searched recursively) or manifests. Files are read one batch
at a time, batched by length (durations come from the file headers), so memory is
bounded by a batch of similar clips, whatever the collection holds; a long file is cut
into windows by the :class:`~ssamba.interfaces.embedder.Embedder`, whose filterbank is
computed window by window: a file costs its 16 kHz samples (230 MB per hour) and a few
windows. An embedding does not depend on the batch it was computed in.

Output names mirror the inputs' paths relative to the folder they have in common
(``x/a.wav`` and ``y/a.wav`` give ``x/a.npz`` and ``y/a.npz``); they never collide and
never leave the output folder. Unreadable files and files with NaN or infinite samples
are skipped, named with their reason in ``index.json`` (and by the command on stderr).
Each output file is written atomically, so a killed run leaves only complete files; run
again into the same folder to resume (files already embedded are skipped and listed), or
pass ``overwrite=True`` to recompute them. ``index.json`` records what made the folder
(the model's content hash, layer, hop, mode, window, front end, format) before the first
file is written; a run with other settings refuses to resume into it, naming the
differences, and a damaged or foreign output file is recomputed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..fileio import atomic_write, is_leftover, strict_json
from ..frontend import load_audio
from .embedder import Embedder

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff")
FORMATS = ("npz", "npy", "set")
_NPY_KEYS = ("scene", "timestamps", "times_ms")


def collect_inputs(inputs: list[str | Path]) -> list[tuple[Path, str]]:
    """``(audio path, output name)`` pairs for files, folders and manifest JSONs.

    A name is the file's path relative to the folder all inputs share (a folder input
    counts as its own root, a file as its parent), without the extension; where two
    files would share a name (``a.wav``, ``a.flac``) or the stem is not a usable name
    (``..wav``), the full file name is kept. The same file given twice is embedded once.
    """
    from ..data import read_manifest

    found: list[tuple[Path, Path]] = []  # (audio file, the folder its name is relative to)
    for item in map(Path, inputs):
        if item.is_dir():
            found += [(path, item) for path in sorted(item.rglob("*"))
                      if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file()]
        elif item.suffix.lower() == ".json":
            found += [(Path(entry.wav), Path(entry.wav).parent) for entry in read_manifest(item)]
        elif item.exists():
            found.append((item, item.parent))
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    if not found:
        return []
    common = Path(os.path.commonpath([os.path.abspath(root) for _, root in found]))
    seen: set[str] = set()
    taken: set[str] = set()
    out = []
    for path, _ in found:
        absolute = os.path.abspath(path)
        if absolute in seen:
            continue
        seen.add(absolute)
        rel = Path(absolute).relative_to(common)
        out.append((path, _unique_name(rel, taken)))
    return out


#: Names the output folder keeps for itself at its top level.
RESERVED_NAMES = ("index.json", "embeddings.npz")


def _unique_name(rel: Path, taken: set[str]) -> str:
    if rel.parts and rel.parts[0] in RESERVED_NAMES:  # an input folder called index.json: not over ours
        rel = Path("_" + rel.parts[0], *rel.parts[1:])
    folder, filename = rel.parent, rel.name
    stem = Path(filename).stem
    candidates = [filename] if stem in ("", ".", "..") else [stem, filename]
    for candidate in candidates:
        name = (folder / candidate).as_posix()
        if name not in taken:
            break
    else:
        count = 1
        while f"{name}__{count}" in taken:
            count += 1
        name = f"{name}__{count}"
    taken.add(name)
    return name


def _outputs(out_dir: Path, name: str, output_format: str) -> list[Path]:
    """The files one input's embeddings go to (checked to lie inside ``out_dir``)."""
    if output_format == "npz":
        paths = [out_dir / f"{name}.npz"]
    else:
        paths = [out_dir / f"{name}.{key}.npy" for key in _NPY_KEYS]
    root = out_dir.resolve()
    for path in paths:
        if not path.resolve().is_relative_to(root):  # pragma: no cover - names are built not to
            raise ValueError(f"output {path} would leave {out_dir}")
    return paths


def _atomic_save(path: Path, write) -> None:
    """``write(binary file object)`` through :func:`ssamba.fileio.atomic_write`."""
    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_write(path, fill)


def _frames(path: Path) -> int:
    import soundfile

    if not path.is_file():  # a FIFO or device: reading its header would block; fails on load
        return 0
    try:
        return soundfile.info(str(path)).frames
    except Exception:  # unreadable: sorted first, fails on load with its reason
        return 0


#: A batch holds at most this many samples of audio (about 5 minutes at 16 kHz), unless one
#: file alone is longer: long files are embedded one at a time.
MAX_BATCH_SAMPLES = 16000 * 300


def _groups(items: list[tuple[Path, str]], frames_of: dict[Path, int], batch_size: int):
    """Consecutive runs of at most ``batch_size`` files (sorted by length) holding at most
    :data:`MAX_BATCH_SAMPLES` samples together (or one file); ``frames_of`` gives each
    file's length from its header."""
    group: list[tuple[Path, str]] = []
    total = 0
    for item in items:
        frames = frames_of[item[0]]
        if group and (len(group) == batch_size or total + frames > MAX_BATCH_SAMPLES):
            yield group
            group, total = [], 0
        group.append(item)
        total += frames
    if group:
        yield group


def embed_files(inputs: list[str | Path], embedder: Embedder, out_dir: str | Path, output_format: str = "npz",
                batch_size: int = 8, progress: bool = True, overwrite: bool = False) -> dict:
    """Write embeddings of every input under ``out_dir``; returns the index (also saved).

    If ``out_dir`` already holds files, files whose outputs are there are skipped (listed
    under ``"resumed"``), unless ``overwrite``; the ``set`` format (one file for all)
    cannot resume and needs ``overwrite`` for a non-empty folder.
    """
    from ..progress import progress as progress_bar

    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}; choose one of {FORMATS}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    mode = "whole" if embedder.whole else "windows"
    made_by = _made_by(embedder, mode, output_format)
    occupied = _claim_out_dir(out_dir, made_by, output_format, overwrite)
    items = collect_inputs(inputs)
    index: dict = {"model_hop_ms": embedder.hop_ms, "embedding_size": embedder.embedding_size, "mode": mode,
                   "made_by": made_by, "complete": True, "files": [], "failed": [], "resumed": []}
    if occupied and not overwrite:
        items = _not_yet_embedded(items, out_dir, output_format, index)
    frames_of = {path: _frames(path) for path, _ in items}  # one header read per file
    items = sorted(items, key=lambda item: frames_of[item[0]])
    collected: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    rates: dict[int, int] = {}  # source rate -> files resampled from it
    downmixed = 0
    bar = progress_bar(len(items), "embedding", unit="file", enabled=progress, every=max(1, len(items) // 20))
    for group in _groups(items, frames_of, batch_size):
        batch, waves, conversions = _load_group(group, embedder.sample_rate, index["failed"])
        for rate, count in conversions["rates"].items():
            rates[rate] = rates.get(rate, 0) + count
        downmixed += conversions["downmixed"]
        if batch:
            lengths = [w.numel() for w in waves]
            embedded = _embed_batch(embedder, batch, waves, index["failed"])
            for (path, name), n, (emb, times) in zip(batch, lengths, embedded):
                if emb is None:
                    continue
                scene, emb, times = emb.mean(0).numpy(), emb.numpy(), times.numpy()
                record = {"audio": str(path), "duration_s": n / embedder.sample_rate, "timestamps": len(times)}
                if output_format == "set":
                    record["row"] = len(collected)
                    collected.append((scene, emb, times))
                else:
                    outputs = _outputs(out_dir, name, output_format)
                    if output_format == "npz":
                        _atomic_save(outputs[0], lambda f: np.savez(f, scene=scene, timestamp_embeddings=emb,
                                                                    timestamps_ms=times))
                    else:
                        for target, value in zip(outputs, (scene, emb, times)):
                            _atomic_save(target, lambda f, value=value: np.save(f, value))
                    record["embeddings"] = _record_path(outputs, out_dir, output_format)
                index["files"].append(record)
        bar.update(len(group))
    bar.close()
    if output_format == "set" and collected:
        offsets = np.cumsum([0] + [len(t) for _, _, t in collected])
        _atomic_save(out_dir / "embeddings.npz", lambda f: np.savez(
            f, scene=np.stack([s for s, _, _ in collected]),
            timestamp_embeddings=np.concatenate([e for _, e, _ in collected]),
            timestamps_ms=np.concatenate([t for _, _, t in collected]), offsets=offsets))
    from ..frontend.audio import conversion_summary

    index["conversions"] = conversion_summary(rates, downmixed, len(index["files"]) - len(index["resumed"]),
                                              embedder.sample_rate)
    _atomic_save(out_dir / "index.json", lambda f: f.write(strict_json(index, indent=2).encode()))
    return index


def _claim_out_dir(out_dir: Path, made_by: dict, output_format: str, overwrite: bool) -> bool:
    """Make ``out_dir`` this run's, or refuse: whether it already held embeddings that a
    resume may keep. Its ``index.json`` says what makes it before the first embedding
    lands, so that a killed run's files are never resumed by other settings."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir():  # a killed run's half-written temporaries are not embeddings
        for leftover in filter(is_leftover, out_dir.rglob(".*.tmp*")):
            leftover.unlink(missing_ok=True)
    occupied = out_dir.is_dir() and any(out_dir.iterdir())
    if occupied and output_format == "set" and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass --overwrite to replace its embeddings.npz")
    if occupied and not overwrite:
        _check_made_by(out_dir, made_by)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save(out_dir / "index.json", lambda f: f.write(json.dumps(
        {"made_by": made_by, "complete": False}, indent=2).encode()))
    return occupied


def _not_yet_embedded(items: list, out_dir: Path, output_format: str, index: dict) -> list:
    """The inputs whose outputs are not complete in ``out_dir``; those that are go into
    ``index`` as resumed."""
    todo = []
    for path, name in items:
        outputs = _outputs(out_dir, name, output_format)
        record = _resumed_record(path, name, outputs, out_dir, output_format) \
            if all(p.is_file() for p in outputs) else None
        if record is not None:
            index["files"].append(record)
            index["resumed"].append(str(path))
        else:  # not embedded yet, or its file is damaged or foreign: (re)compute it
            todo.append((path, name))
    return todo


def _load_group(group: list, sample_rate: int, failed: list) -> tuple[list, list, dict]:
    """The readable, finite waveforms of ``group`` at ``sample_rate``: ``(items, waves,
    {"rates": source rate -> files resampled, "downmixed": files})``; the others go into
    ``failed`` with the reason."""
    batch, waves, rates, downmixed = [], [], {}, 0
    for path, name in group:
        source: dict = {}
        try:
            wave = load_audio(path, sample_rate, info=source)
        except (ValueError, OSError) as err:
            failed.append({"audio": str(path), "error": str(err)})
            continue
        if not bool(torch.isfinite(wave).all()):
            bad = int((~torch.isfinite(wave)).sum())
            failed.append({"audio": str(path), "error": f"{bad} NaN or infinite sample(s)"})
            continue
        waves.append(wave)
        batch.append((path, name))
        if source.get("rate", sample_rate) != sample_rate:
            rates[source["rate"]] = rates.get(source["rate"], 0) + 1
        downmixed += source.get("channels", 1) > 1
    return batch, waves, {"rates": rates, "downmixed": downmixed}


def _embed_batch(embedder: Embedder, batch: list, waves: list, failed: list) -> list:
    """``embedder.timestamp_embeddings(waves)``; where the front end refuses the batch
    (features that are not finite), each file alone, those it refuses recorded in
    ``failed`` and given ``(None, None)``."""
    from ..frontend.logmel import NonFiniteFeaturesError

    try:
        return embedder.timestamp_embeddings(waves)
    except NonFiniteFeaturesError:
        out = []
        for (path, _), wave in zip(batch, waves):
            try:
                out += embedder.timestamp_embeddings([wave])
            except NonFiniteFeaturesError as err:
                failed.append({"audio": str(path), "error": str(err)})
                out.append((None, None))
        return out


def _record_path(outputs: list[Path], out_dir: Path, output_format: str) -> str:
    rel = outputs[0].relative_to(out_dir).as_posix()
    return rel if output_format == "npz" else rel.removesuffix(".scene.npy") + ".{scene,timestamps,times_ms}.npy"


def _made_by(embedder: Embedder, mode: str, output_format: str) -> dict:
    """What decides a folder's embeddings: the model's weights and config (a content
    hash), the layer, the hop, the mode, the window, the front end and the format."""
    import dataclasses

    from ..models.serialization import model_fingerprint

    return {"model": model_fingerprint(embedder.encoder), "layer": embedder.layer if isinstance(embedder.layer, (int, str))
            else list(embedder.layer), "hop_ms": embedder.hop_ms, "mode": mode,
            "window_frames": embedder.window_frames, "frontend": dataclasses.asdict(embedder.frontend.config),
            "format": output_format}


def _check_made_by(out_dir: Path, made_by: dict) -> None:
    """Refuse to resume into ``out_dir`` unless its ``index.json`` says the same settings
    made it (``FileExistsError`` naming the differences)."""
    previous = out_dir / "index.json"
    try:
        before = json.loads(previous.read_text(encoding="utf-8")).get("made_by") if previous.is_file() else None
    except (OSError, ValueError, AttributeError, RecursionError):
        before = None
    if not isinstance(before, dict):
        raise FileExistsError(f"{out_dir} is not empty and its index.json does not say what made it; resuming "
                              "could mix embeddings of different settings (pass --overwrite, or another --out)")
    differs = [key for key in made_by if before.get(key) != made_by[key]]
    if differs:
        shown = ", ".join(f"{key} {before.get(key)!r} -> {made_by[key]!r}" for key in differs
                          if key != "frontend") + (", the front end" if "frontend" in differs else "")
        raise FileExistsError(f"{out_dir} holds embeddings made with other settings ({shown}); resuming would "
                              "mix them (pass --overwrite to recompute, or another --out)")


def _resumed_record(path: Path, name: str, outputs: list[Path], out_dir: Path, output_format: str) -> dict | None:
    """The index row of a file embedded by an earlier run (read back from its outputs),
    or None when they cannot be read as this format's embeddings (damaged, foreign)."""
    import zipfile

    import soundfile

    try:
        if output_format == "npz":
            with np.load(outputs[0], allow_pickle=False) as data:
                count = len(data["timestamps_ms"])
                if len(data["timestamp_embeddings"]) != count or data["scene"].ndim != 1:
                    return None
        else:
            count = len(np.load(outputs[2], mmap_mode="r", allow_pickle=False))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, TypeError):
        return None
    try:
        info = soundfile.info(str(path))
        duration = info.frames / info.samplerate
    except Exception:  # noqa: BLE001 - the embeddings are there; the duration is informative only
        duration = None
    return {"audio": str(path), "duration_s": duration, "timestamps": count,
            "embeddings": _record_path(outputs, out_dir, output_format), "resumed": True}
