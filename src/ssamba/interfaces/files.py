"""Embedding audio files in bulk: what ``ssamba embed`` runs.

Inputs are files, folders (searched recursively) or manifests. Files are read one batch
at a time, batched by length (durations come from the file headers), so memory is
bounded by a batch of similar clips, whatever the collection holds; a long file is cut
into windows by the :class:`~ssamba.interfaces.embedder.Embedder`. Unreadable files are
skipped and listed in ``index.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..frontend import load_audio
from .embedder import Embedder

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff")
FORMATS = ("npz", "npy", "set")


def collect_inputs(inputs: list[str | Path]) -> list[tuple[Path, str]]:
    """``(audio path, output name)`` pairs for files, folders and manifest JSONs."""
    from ..data import read_manifest

    found: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
                found.append((path, str(path.relative_to(item).with_suffix(""))))
        elif item.suffix.lower() == ".json":
            for entry in read_manifest(item):
                found.append((Path(entry.wav), Path(entry.wav).stem))
        elif item.exists():
            found.append((item, item.stem))
        else:
            raise FileNotFoundError(f"input {item} does not exist")
    names: dict[str, int] = {}
    unique = []
    for path, name in found:  # the same stem twice gets a suffix, never overwrites
        count = names.get(name, 0)
        names[name] = count + 1
        unique.append((path, name if count == 0 else f"{name}__{count}"))
    return unique


def _frames(path: Path) -> int:
    import soundfile

    try:
        return soundfile.info(str(path)).frames
    except Exception:  # unreadable: sorted first, fails on load with its reason
        return 0


def _groups(items: list[tuple[Path, str]], batch_size: int):
    """Consecutive runs of files (sorted by length) of similar length: a batch never pads
    a clip to more than 1.5 times its length (plus one second)."""
    group: list[tuple[Path, str]] = []
    first = 0
    for item in items:
        frames = _frames(item[0])
        if group and (len(group) == batch_size or frames > 1.5 * first + 16000):
            yield group
            group = []
        if not group:
            first = frames
        group.append(item)
    if group:
        yield group


def embed_files(inputs: list[str | Path], embedder: Embedder, out_dir: str | Path, output_format: str = "npz",
                batch_size: int = 8, progress: bool = True) -> dict:
    """Write embeddings of every input under ``out_dir``; returns the index (also saved)."""
    from ..progress import progress as progress_bar

    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}; choose one of {FORMATS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = sorted(collect_inputs(inputs), key=lambda item: _frames(item[0]))
    index: dict = {"model_hop_ms": embedder.hop_ms, "embedding_size": embedder.embedding_size,
                   "files": [], "failed": []}
    collected: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    bar = progress_bar(len(items), "embedding", unit="file", enabled=progress, every=max(1, len(items) // 20))
    for group in _groups(items, batch_size):
        batch, waves = [], []
        for path, name in group:
            try:
                waves.append(load_audio(path, embedder.sample_rate))
                batch.append((path, name))
            except ValueError as err:
                index["failed"].append({"audio": str(path), "error": str(err)})
        if batch:
            lengths = [w.numel() for w in waves]
            padded = torch.zeros(len(waves), max(lengths))
            for row, wave in enumerate(waves):
                padded[row, :wave.numel()] = wave
            for (path, name), n, (emb, times) in zip(batch, lengths, embedder.timestamp_embeddings(padded, lengths)):
                scene, emb, times = emb.mean(0).numpy(), emb.numpy(), times.numpy()
                record = {"audio": str(path), "duration_s": n / embedder.sample_rate, "timestamps": len(times)}
                if output_format == "set":
                    record["row"] = len(collected)
                    collected.append((scene, emb, times))
                else:
                    target = out_dir / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if output_format == "npz":
                        np.savez(target.with_suffix(".npz"), scene=scene, timestamp_embeddings=emb,
                                 timestamps_ms=times)
                        record["embeddings"] = str(target.with_suffix(".npz").relative_to(out_dir))
                    else:
                        for key, value in (("scene", scene), ("timestamps", emb), ("times_ms", times)):
                            np.save(target.parent / f"{target.name}.{key}.npy", value)
                        record["embeddings"] = f"{Path(name)}.{{scene,timestamps,times_ms}}.npy"
                index["files"].append(record)
        bar.update(len(group))
    bar.close()
    if output_format == "set" and collected:
        offsets = np.cumsum([0] + [len(t) for _, _, t in collected])
        np.savez(out_dir / "embeddings.npz", scene=np.stack([s for s, _, _ in collected]),
                 timestamp_embeddings=np.concatenate([e for _, e, _ in collected]),
                 timestamps_ms=np.concatenate([t for _, _, t in collected]), offsets=offsets)
    (out_dir / "index.json").write_text(json.dumps(index, indent=2))
    return index
