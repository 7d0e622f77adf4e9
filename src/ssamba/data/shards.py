"""WebDataset-style tar shards of a manifest, and a streaming dataset over them.

Large sets on network or object storage read far faster as a few big sequential files
than as a million small ones. :func:`write_shards` packs a manifest's clips into
``shard-000000.tar``, ``shard-000001.tar``, ... in the WebDataset layout (one sample per
key: ``<key>.<ext>`` holding the original audio file's bytes unchanged, and
``<key>.json`` holding ``{"wav": original path, "labels": [ids], "index": manifest
row}``), plus a ``shards.json`` index. The tar members are written and read by the
``webdataset`` package (its ``TarWriter``, and its tar iterator and key grouping); this
module adds the atomic shard files, the index, and a dataset whose items, bad-clip
accounting and per-item randomness are :class:`ssamba.data.ClipDataset`'s.

:class:`ShardDataset` streams the shards and yields the same items as
:class:`ssamba.data.ClipDataset` (same decoding, checks, front end, normalisation and
augmentations, with per-item randomness from ``(seed, epoch, index)``), or ``None`` for
a bad sample, which :func:`ssamba.data.collate_clips` drops and counts.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
import warnings
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..frontend import LogMelFrontend
from ..frontend.logmel import NonFiniteFeaturesError
from ..frontend.audio import decode_audio
from .augment import mixup_waveforms, sample_mixup_lambda
from .dataset import BadClipWarning, ClipDatasetConfig, _source_fields, _warn_bad, clip_features, item_generator
from ..fileio import AtomicFile, atomic_write_text, read_json
from .manifest import ClipEntry, LabelMap, read_manifest, split_labels

log = logging.getLogger(__name__)

SHARD_NAME = "shard-{:06d}.tar"
INDEX_NAME = "shards.json"
_SHARD_RE = re.compile(r"^shard-\d{6}\.tar$")
# member extensions decoded as audio (others, except .json, are ignored)
AUDIO_MEMBER_EXTENSIONS = frozenset({"wav", "flac", "ogg", "mp3", "opus", "aiff", "aif", "au", "w64", "audio"})
_TAR_HEADER = 512


def _member_extension(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if re.fullmatch(r"[a-z0-9]+", suffix) else "audio"


def _tar_size(n: int) -> int:
    """Bytes a member of ``n`` bytes takes in a tar (header + data padded to 512)."""
    return _TAR_HEADER + (n + _TAR_HEADER - 1) // _TAR_HEADER * _TAR_HEADER


class _ShardWriter:
    """One shard written by ``webdataset.TarWriter`` to a temporary file and renamed into
    place on close (:class:`ssamba.fileio.AtomicFile`)."""

    def __init__(self, path: Path):
        from webdataset import TarWriter

        self.path = path
        self.target = AtomicFile(path)
        # raw bytes in, reproducible archives (no time stamps or owner names)
        self.tar = TarWriter(self.target.file, encoder=False, mtime=0, user="", group="")
        self.clips = 0
        self.bytes = 2 * _TAR_HEADER * 10  # end-of-archive blocks and record padding, roughly

    def add(self, key: str, members: dict[str, bytes]) -> None:
        """One sample: ``{extension: bytes}`` stored as ``<key>.<extension>`` members."""
        self.tar.write({"__key__": key, **members})
        self.bytes += sum(_tar_size(len(data)) for data in members.values())
        self.clips += 1

    def close(self) -> int:
        self.tar.close()
        return self.target.commit().stat().st_size

    def abort(self) -> None:
        try:
            self.tar.close()
        except Exception:
            pass
        self.target.abort()


def write_shards(
    manifest: str | Path | Sequence[ClipEntry],
    out_dir: str | Path,
    max_clips_per_shard: int = 1000,
    max_bytes: int = 1 << 30,
    overwrite: bool = False,
) -> list[Path]:
    """Pack the clips of ``manifest`` into tar shards in ``out_dir``; returns the shard paths.

    A shard is closed before it would exceed ``max_clips_per_shard`` clips or
    ``max_bytes`` bytes (a single larger clip gets a shard of its own). Sample keys are the
    zero-padded manifest row numbers, so shards keep the manifest's order. Each shard is
    written to a temporary file and renamed into place, and ``shards.json`` (shard names,
    clip and byte counts, the label ids present, how many clips were skipped) last, so an
    interrupted run leaves no half-written shard. Clips whose file cannot be read are
    skipped with a :class:`BadClipWarning` (and counted in ``shards.json``); their audio
    is not decoded here. ``out_dir`` already holding shards is an error unless
    ``overwrite``, which also removes old shards the new set does not replace.
    """
    if max_clips_per_shard < 1:
        raise ValueError(f"max_clips_per_shard must be >= 1, got {max_clips_per_shard}")
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    entries = read_manifest(manifest) if isinstance(manifest, (str, Path)) else list(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in out_dir.iterdir() if _SHARD_RE.match(p.name) or p.name == INDEX_NAME)
    if old and not overwrite:
        raise FileExistsError(
            f"{str(out_dir)!r} already holds shards ({old[0].name}, ...); choose another folder or overwrite"
        )

    written, index = _pack(entries, out_dir, max_clips_per_shard, max_bytes)
    for path in old:  # stale shards of an earlier, larger set
        if path.name != INDEX_NAME and path not in written:
            path.unlink()
    atomic_write_text(out_dir / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    return written


def _pack(entries: Sequence[ClipEntry], out_dir: Path, max_clips_per_shard: int,
          max_bytes: int) -> tuple[list[Path], dict[str, Any]]:
    """:func:`write_shards`'s packing: ``(shards written, the index to write)``; a shard
    being written when an error strikes is removed."""
    written: list[Path] = []
    index_rows: list[dict[str, Any]] = []
    label_ids: set[str] = set()
    unlabelled = 0
    skipped: list[str] = []
    writer: _ShardWriter | None = None

    def finish() -> None:
        nonlocal writer
        if writer is not None:
            size = writer.close()
            written.append(writer.path)
            index_rows.append({"file": writer.path.name, "clips": writer.clips, "bytes": size})
            writer = None

    try:
        for i, entry in enumerate(entries):
            try:
                with open(entry.wav, "rb") as f:
                    audio = f.read()
            except OSError as err:
                warnings.warn(f"skipping bad clip {entry.wav!r}: {err.strerror or err}", BadClipWarning, stacklevel=3)
                skipped.append(entry.wav)
                continue
            key = f"{i:09d}"
            meta = json.dumps({"wav": entry.wav, "labels": list(entry.labels), "index": i}).encode("utf-8")
            size = _tar_size(len(audio)) + _tar_size(len(meta))
            if writer is not None and (writer.clips >= max_clips_per_shard or writer.bytes + size > max_bytes):
                finish()
            if writer is None:
                writer = _ShardWriter(out_dir / SHARD_NAME.format(len(written)))
            writer.add(key, {_member_extension(entry.wav): audio, "json": meta})
            label_ids.update(entry.labels)
            unlabelled += not entry.labels
        finish()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if skipped:
        log.warning("write_shards: skipped %d unreadable clip(s), e.g. %s", len(skipped), skipped[0])
    index = {"format": "webdataset", "shards": index_rows, "num_clips": sum(row["clips"] for row in index_rows),
             "skipped": len(skipped), "labels": sorted(label_ids), "unlabelled": unlabelled}
    return written, index


def read_shard_index(path: str | Path) -> dict[str, Any] | None:
    """The ``shards.json`` of a shard folder, or ``None`` when there is none. ``ValueError``
    naming the file when it is not an object with a ``"shards"`` list of
    ``{"file": name in the folder, "clips": count}`` rows."""
    path = Path(path)
    index = path / INDEX_NAME if path.is_dir() else path
    if not index.is_file():
        return None
    content = read_json(index, "shard index")
    where = f"shard index {str(index)!r}"
    if not isinstance(content, dict) or not isinstance(content.get("shards"), list):
        raise ValueError(f'{where} must be an object with a "shards" list, got {type(content).__name__}'
                         + (f" with keys {sorted(content)}" if isinstance(content, dict) else ""))
    for i, row in enumerate(content["shards"]):
        file = row.get("file") if isinstance(row, dict) else None
        clips = row.get("clips") if isinstance(row, dict) else None
        if not isinstance(file, str) or not file or Path(file).name != file or file in (".", ".."):
            raise ValueError(f'{where}: shard {i} needs a "file" named inside the folder, got {row!r}')
        if not isinstance(clips, int) or isinstance(clips, bool) or clips < 0:
            raise ValueError(f'{where}: shard {i} ({file}) needs a "clips" count (an integer >= 0), got {row!r}')
    return content


def count_samples(shard: str | Path) -> int:
    """Samples (runs of members sharing a key) in one tar shard, read from its headers
    alone; the samples before a shard turns out unreadable."""
    from webdataset.tariterators import base_plus_ext

    count, last = 0, None
    try:
        with tarfile.open(str(shard), mode="r|*") as tar:
            for member in tar:
                key = base_plus_ext(member.name)[0] if member.isreg() else None
                if key is not None and key != last:
                    count, last = count + 1, key
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        pass
    return count


class _Corrupt:
    """Marks a shard that stopped being readable part way."""

    def __init__(self, shard: str, reason: str):
        self.shard, self.reason = shard, reason


def iter_samples(shard: str | Path) -> Iterator[tuple[str, dict[str, bytes]] | _Corrupt]:
    """``(key, {extension: bytes})`` for each sample of a tar shard, in order (streaming
    read by ``webdataset``'s tar iterator and key grouping: members of one sample are
    consecutive and share the key, the member name up to the first dot of its file name).
    A shard that cannot be read to its end yields a final :class:`_Corrupt` marker instead
    of raising; a member repeated within a sample is reported and the first one kept."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    shard = str(shard)

    def duplicate(err: Exception) -> bool:
        _warn_bad(shard, str(err.args[0]) if err.args else repr(err))
        return True  # keep reading the shard

    try:
        with open(shard, "rb") as stream:
            members = tar_file_expander([{"url": shard, "stream": stream}], eof_value=None)
            for sample in group_by_keys(members, handler=duplicate):
                yield sample["__key__"], {ext: data for ext, data in sample.items() if not ext.startswith("__")}
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        said = str(err.args[0]) if err.args else ""
        yield _Corrupt(shard, f"{type(err).__name__}: {said.split(' @ <')[0]}")  # less webdataset's stream repr


class ShardDataset(torch.utils.data.IterableDataset):
    """Streams tar shards (from :func:`write_shards`, or any WebDataset audio shards).

    ``shards``: a shard folder (its ``shards.json`` order, else its ``*.tar`` sorted), a
    ``.tar`` file, or a list of them. Items are those of :class:`ClipDataset` with the
    same ``config`` and ``label_map``: ``{"spec": (T, F), "target": (C,), "index": i}``
    with ``i`` the clip's manifest row (from its JSON; a hash of the key for foreign
    shards without one), or ``None`` for a bad sample (undecodable or unusable audio, a
    missing ``.json`` or audio member, a shard unreadable part way) with a
    :class:`BadClipWarning`, so the training loop's bad-clip accounting works unchanged.

    Splitting: shards are dealt to distributed ranks (``rank::world_size``; taken from
    ``torch.distributed`` when left ``None``), then to DataLoader workers; each shard is
    read by exactly one worker of one rank. Use at least ``world_size * num_workers``
    shards of similar size, or some workers idle (and ranks see unequal counts).

    Order: with ``shuffle`` the shard order is permuted each epoch (the same permutation
    on every rank, from ``(seed, epoch)``; call :meth:`set_epoch`) and samples pass a
    shuffle buffer of ``shuffle_buffer`` samples per worker (held as encoded bytes: 200 clips
    of 10 s 16-bit audio take about 64 MB). Without, shards and samples
    are read in order, and un-augmented items equal ``ClipDataset``'s for the same clips.

    Augmentation matches :class:`ClipDataset` (same draws for the same index and epoch)
    except mixup, which cannot reach an arbitrary clip of a stream: the partner is drawn
    uniformly from the last ``mixup_buffer`` good waveforms of the worker's stream (the
    clip stays unmixed while that buffer is empty).
    """

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        config: ClipDatasetConfig | None = None,
        label_map: LabelMap | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 200,
        mixup_buffer: int = 16,
    ):
        self.shards, self.index = self._find_shards(shards)
        self.config = config or ClipDatasetConfig()
        self.label_map = label_map
        self.frontend = LogMelFrontend(self.config.frontend)
        self.shuffle = bool(shuffle)
        self.shuffle_buffer = int(shuffle_buffer)
        self.mixup_buffer = int(mixup_buffer)
        if self.mixup_buffer < 1:
            raise ValueError(f"mixup_buffer must be >= 1, got {mixup_buffer}")
        if rank is None or world_size is None:
            dist = torch.distributed
            initialised = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if initialised else 0) if rank is None else rank
            world_size = (dist.get_world_size() if initialised else 1) if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        if len(self.shards) < self.world_size:
            log.warning("ShardDataset: %d shard(s) for %d ranks: some ranks get no data", len(self.shards), world_size)
        if label_map is not None and self.index is not None:  # check labels up front when the index lists them
            if self.index.get("unlabelled"):
                raise ValueError(
                    f"{self.index['unlabelled']} clips of the shards have no labels but a label map was given"
                )
            for mid in self.index.get("labels", []):
                label_map.index(mid, "shards.json")

    @staticmethod
    def _find_shards(shards) -> tuple[list[str], dict[str, Any] | None]:
        if isinstance(shards, (str, Path)):
            path = Path(shards)
            if path.is_dir():
                index = read_shard_index(path)
                if index is not None:
                    files = [str(path / row["file"]) for row in index["shards"]]
                    counts = [int(row["clips"]) for row in index["shards"]]
                    return files, {**index, "counts": dict(zip(files, counts))}
                files = sorted(str(p) for p in path.glob("*.tar"))
                if not files:
                    raise FileNotFoundError(f"no shards (*.tar or {INDEX_NAME}) in {str(path)!r}")
                # no index: count each shard's samples from its tar headers (what the
                # training loop needs to know how many batches a pass holds)
                return files, {"counts": {f: count_samples(f) for f in files}, "counted": True}
            if not path.is_file():
                raise FileNotFoundError(f"shard {str(path)!r} does not exist")
            return [str(path)], None
        files = [str(p) for p in shards]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"shard(s) {missing[:3]} do not exist")
        if not files:
            raise ValueError("no shards given")
        return files, None

    def set_epoch(self, epoch: int) -> None:
        """Select the shard permutation and augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    @property
    def num_classes(self) -> int:
        return self.label_map.num_classes if self.label_map is not None else 0

    def rank_shards(self) -> list[str]:
        """The shards this rank reads in the current epoch, in reading order."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(order)).tolist()
        return [self.shards[i] for i in order[self.rank :: self.world_size]]

    def __len__(self) -> int:
        """Clips this rank streams per epoch (bad ones included): from ``shards.json``, or
        counted from the tar headers of a folder without one, or of given tar files."""
        if self.index is None:
            self.index = {"counts": {f: count_samples(f) for f in self.shards}, "counted": True}
        counts = self.index["counts"]
        return sum(counts[s] for s in self.rank_shards())

    def _samples(self, shard: str):
        """The shard's samples, then, where ``shards.json`` promised more than could be
        read (a missing, truncated or miscounted shard), one bad item for each clip short,
        so that the stream is as long as promised and the shortfall counts as bad data."""
        promised = self.index["counts"].get(shard) if self.index is not None else None
        read = 0
        for sample in iter_samples(shard):
            read += 1
            yield sample
        if promised is not None and read < promised:
            reason = f"{INDEX_NAME} promises {promised} clips, {read} could be read"
            for _ in range(promised - read):
                yield _Corrupt(shard, reason)

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        mine = self.rank_shards()[worker_id::num_workers]
        samples = (s for shard in mine for s in self._samples(shard))
        if self.shuffle and self.shuffle_buffer > 1:
            rng = np.random.default_rng([self.config.seed, self.epoch, self.rank, worker_id, 1])
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        recent: deque[tuple[Tensor, Tensor]] = deque(maxlen=self.mixup_buffer)
        for sample in samples:
            yield self._item(sample, recent)

    def _item(self, sample, recent: deque) -> dict[str, Any] | None:
        if isinstance(sample, _Corrupt):
            _warn_bad(sample.shard, f"shard unreadable from here on ({sample.reason})")
            return None
        key, members = sample
        name = key
        if "json" not in members:
            _warn_bad(name, "sample has no .json member")
            return None
        try:
            meta = json.loads(members["json"])
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
            labels = split_labels(meta.get("labels"))
        except ValueError as err:
            _warn_bad(name, f"bad .json member: {err}")
            return None
        name = str(meta.get("wav") or key)
        audio_ext = next((ext for ext in members if ext in AUDIO_MEMBER_EXTENSIONS), None)
        if audio_ext is None:
            _warn_bad(name, f"sample {key!r} has no audio member (extensions {sorted(members)})")
            return None
        index = meta.get("index")
        index = int(index) if isinstance(index, int) else zlib.crc32(key.encode("utf-8"))
        source: dict = {}
        wave, problem = self._decode(members[audio_ext], f"{name} ({key}.{audio_ext})", source)
        if wave is None:
            _warn_bad(name, problem)
            return None

        c = self.config
        if self.label_map is None:
            target = torch.zeros(0)
        else:
            if not labels:
                raise ValueError(f"clip {name!r} has no labels but a label map was given")
            target = self.label_map.encode(labels, name)
        gen = item_generator(c.seed, self.epoch, index)
        mixed = wave
        if c.augment and c.mixup > 0 and torch.rand((), generator=gen).item() < c.mixup and recent:
            partner = int(torch.randint(len(recent), (1,), generator=gen).item())
            lam = sample_mixup_lambda(gen, c.mixup_alpha)
            other_wave, other_target = recent[partner]
            mixed = mixup_waveforms(wave, other_wave, lam)
            target_mixed = lam * target + (1.0 - lam) * other_target
        else:
            target_mixed = target
        if c.augment and c.mixup > 0:
            recent.append((wave, target))

        try:
            spec = clip_features(mixed, self.frontend, c, gen)
        except NonFiniteFeaturesError as err:
            _warn_bad(name, str(err))
            return None
        return {"spec": spec, "target": target_mixed.float(), "index": index,
                **_source_fields(source, self.config.frontend)}

    def _decode(self, data: bytes, name: str, info: dict | None = None) -> tuple[Tensor | None, str]:
        """The checks of :func:`ssamba.data.load_clip`, on encoded bytes."""
        frontend = self.config.frontend
        try:
            wave = decode_audio(data, frontend.sample_rate, name=name, info=info)
        except ValueError as err:
            return None, str(err)
        except Exception as err:  # resampling or decoding failures of any kind
            return None, f"{type(err).__name__}: {err}"
        problem = self.frontend.problem(wave)
        return (None, problem) if problem else (wave, "")


def _buffer_shuffle(items, size: int, rng: np.random.Generator):
    """WebDataset-style shuffle: keep ``size`` items, emit a random one as each new one arrives."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(len(buffer)))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer
