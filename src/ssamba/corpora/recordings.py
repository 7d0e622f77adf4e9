"""Real recordings for the pretraining pool: speech, music and sound effects that Debian packages ship.

The synthetic suite (:mod:`ssamba.corpora.build`) holds the labelled tasks and a few hours
of synthetic audio; pretraining also wants real, varied audio. :data:`CATALOGUE` names
Debian packages (all in Debian's ``main``, each with its licence) whose audio files are
recordings of real people, instruments and places. ``scripts/setup.sh`` fetches them with
``apt-get download`` and unpacks them, without installing them, into
:func:`recordings_dir` (``$SSAMBA_RECORDINGS_DIR``, default ``~/.cache/ssamba/recordings``);
packages installed system-wide are found under ``/`` too.

:func:`build_recordings` cuts the files into clips of the pool's length (1.5 s, 16 kHz
mono FLAC), drops silent windows, takes at most ``max_hours`` per source (evenly spread
over its files, so that no source dominates the pool), and holds out whole files of each
source for validation. Which files, windows and splits are chosen is a function of the
seed and the files alone; the result is cached by that fingerprint. None of these
packages' audio comes near the labelled tasks: those are synthesised from espeak-ng
voices and SoundFont programs.

Layout under ``root``::

    recorded.json               fingerprint, sources (package, licence, files, clips, hours)
    train.json, validation.json SSAST manifests (relative paths)
    <source>/<split>/<file>_<window>.flac
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .plan import SAMPLE_RATE

#: Part of the cache's fingerprint, with the seed, the scale and the sources' files: bump it
#: whenever a change of this module changes which clips are cut or their samples.
RECORDINGS_FORMAT = 2
RECORDED_FILE = "recorded.json"
CLIP_SECONDS = 1.5  # the synthetic pool's clip length (plan.ScaleSpec.clip_seconds)
SILENCE_DBFS = -50.0  # windows quieter than this (RMS) are not clips
MIN_SECONDS = 0.25  # shorter files are not clips (clicks; some are shorter than one 25 ms frame)
KINDS = ("speech", "music", "effects")


@dataclass(frozen=True)
class Source:
    """One package's recordings: where they lie inside the package and what they are."""

    name: str  # short id, also the folder of its clips
    package: str  # Debian package (main)
    kind: str  # "speech", "music" or "effects"
    patterns: tuple[str, ...]  # globs relative to the package root (the filesystem root when installed)
    licence: str  # of the audio, from the package's debian/copyright
    description: str
    max_hours: float  # at most this much audio enters the default pool
    exclude: str = ""  # a regular expression on file names to leave out
    raw_rate: int = 0  # headerless unsigned 8-bit mono at this rate (0: a file libsndfile reads)
    raw_trim: tuple[int, int] = (0, 0)  # bytes dropped at the start and the end of a headerless file


CATALOGUE: tuple[Source, ...] = (
    # speech: voice actors and a read-speech corpus, five languages
    Source("fillets-cs", "fillets-ng-data-cs", "speech", ("usr/share/games/fillets-ng/sound/*/cs/*.ogg",),
           "GPL-2", "Czech voice acting (Fish Fillets NG dialogue)", 1.5),
    Source("fillets-nl", "fillets-ng-data-nl", "speech", ("usr/share/games/fillets-ng/sound/*/nl/*.ogg",),
           "GPL-2", "Dutch voice acting (Fish Fillets NG dialogue)", 1.5),
    Source("festvox-ru", "festvox-ru", "speech",
           ("usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav/*.wav",),
           "BSD-style", "Russian read sentences, one male speaker, studio recordings", 1.5),
    Source("drascula-en", "drascula", "speech", ("usr/share/scummvm/drascula/en/*.ALS",),
           "Drascula licence", "English voice acting (Drascula), 11 kHz", 1.0,
           exclude=r"^[Ss]", raw_rate=11025, raw_trim=(32, 64)),
    Source("drascula-es", "drascula-spanish", "speech", ("usr/share/scummvm/drascula/es/*.ALS",),
           "Drascula licence", "Spanish voice acting (Drascula), 11 kHz", 1.0,
           exclude=r"^[Ss]", raw_rate=11025, raw_trim=(32, 64)),
    # music: game soundtracks, orchestral to electronic
    Source("warzone2100", "warzone2100-music", "music", ("usr/share/games/warzone2100/music/**/*.opus",),
           "GPL-2+", "electronic and ambient soundtrack (Warzone 2100)", 1.0),
    Source("wesnoth", "wesnoth-1.16-music", "music", ("usr/share/games/wesnoth/1.16/data/core/music/*.ogg",),
           "GPL-2+", "orchestral soundtrack (Battle for Wesnoth)", 1.0),
    Source("planetblupi", "planetblupi-music-ogg", "music", ("usr/share/planetblupi/music/*.ogg",),
           "GPL-3+", "game soundtrack (Planet Blupi)", 1.0),
    Source("singularity", "singularity-music", "music", ("usr/share/games/singularity/music/**/*.ogg",),
           "CC-BY-SA-3.0", "ambient and electronic soundtrack (Endgame: Singularity)", 1.0),
    Source("drascula-music", "drascula-music", "music", ("usr/share/scummvm/drascula/audio/*.ogg",),
           "Drascula licence", "adventure-game soundtrack (Drascula)", 1.0),
    # sound effects: weapons, creatures, crowds, weather, animals, instruments
    Source("megaglest", "megaglest-data", "effects",
           ("usr/share/games/megaglest/**/*.ogg", "usr/share/games/megaglest/**/*.wav"),
           "CC-BY-SA-3.0", "strategy-game sound effects, unit voices and ambience (MegaGlest)", 1.2),
    Source("qabcs-noises", "qabcs-data", "effects", ("usr/share/qabcs/abcs/all/noises/*.ogg",),
           "GPL-3+", "animal and instrument sounds (qABCs)", 0.3),
)

PACKAGES: tuple[str, ...] = tuple(dict.fromkeys(s.package for s in CATALOGUE))

#: Per-source hour caps by scale: the default uses each source's ``max_hours``.
SCALE_HOURS = {"default": None, "quick": 0.03, "mini": 0.004}


def recordings_dir() -> Path:
    """Where ``scripts/setup.sh`` unpacks the packages: ``$SSAMBA_RECORDINGS_DIR``, else
    ``~/.cache/ssamba/recordings`` (each package in a folder of its name)."""
    base = os.environ.get("SSAMBA_RECORDINGS_DIR")
    if base:
        return Path(base)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "ssamba" / "recordings"


def source_files(source: Source, roots: list[Path] | None = None) -> list[Path]:
    """The audio files of ``source``, sorted, from the first root that has any: the
    package's folder in :func:`recordings_dir`, then the system (``/``)."""
    roots = roots if roots is not None else [recordings_dir() / source.package, Path("/")]
    skip = re.compile(source.exclude) if source.exclude else None
    for root in roots:
        found = {p for pattern in source.patterns for p in root.glob(pattern)
                 if p.is_file() and not p.is_symlink() and not (skip and skip.search(p.name))}
        if found:
            return sorted(found)
    return []


def read_recording(path: Path, source: Source, max_seconds: float | None = None) -> np.ndarray:
    """The file as float32 mono at 16 kHz (``ValueError`` if it cannot be read); with
    ``max_seconds``, only that much from the middle of a longer file is decoded."""
    from ..frontend import resample

    if source.raw_rate:
        data = path.read_bytes()
        start, end = source.raw_trim
        samples = np.frombuffer(data[start:len(data) - end if end else None], dtype=np.uint8)
        rate = source.raw_rate
        if max_seconds is not None and samples.size > max_seconds * rate:
            keep = int(max_seconds * rate)
            samples = samples[(samples.size - keep) // 2:][:keep]
        audio = (samples.astype(np.float32) - 128.0) / 128.0
    elif max_seconds is None:
        from ..frontend.audio import load_audio

        return load_audio(path).numpy()  # block by block: an hour of 44.1 kHz stereo never sits in memory
    else:
        import soundfile

        try:
            with soundfile.SoundFile(str(path)) as f:
                rate, frames = f.samplerate, f.frames
                keep = min(frames, int(max_seconds * rate))
                if keep < frames:
                    f.seek((frames - keep) // 2)
                audio = f.read(keep, dtype="float32", always_2d=True).mean(axis=1)
        except Exception as err:  # soundfile raises several types
            raise ValueError(f"cannot read audio file {str(path)!r}: {err}") from err
    if audio.size == 0:
        raise ValueError(f"{path} holds no samples")
    return np.asarray(resample(np.ascontiguousarray(audio), rate, SAMPLE_RATE), dtype=np.float32)


def audible_windows(audio: np.ndarray, length: int) -> list[int]:
    """Start samples of the non-overlapping ``length``-sample windows of ``audio`` louder than
    :data:`SILENCE_DBFS`; a file shorter than one window is one window (zero-padded), and
    none when shorter than :data:`MIN_SECONDS`."""
    if audio.shape[0] < MIN_SECONDS * SAMPLE_RATE:
        return []
    starts = list(range(0, max(audio.shape[0] - length, 0) + 1, length))
    threshold = 10 ** (SILENCE_DBFS / 20)
    return [s for s in starts if np.sqrt(np.mean(audio[s:s + length] ** 2)) > threshold]


def spread(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spaced (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[int(i * len(items) / count)] for i in range(count)]


# --------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------


@dataclass
class RecordedPool:
    """Built (or reused) recorded clips: manifests and one row per source."""

    root: Path
    fingerprint: str
    manifests: dict[str, Path]
    sources: list[dict]
    missing: list[str] = field(default_factory=list)  # catalogue packages not found
    build_seconds: float = 0.0
    reused: bool = False

    @property
    def hours(self) -> float:
        return sum(row["hours"] for row in self.sources)

    def table(self) -> str:
        return format_sources(self.sources)


def format_sources(rows: list[dict]) -> str:
    """A plain-text table of the pool's sources: kind, package, licence, files, clips, hours."""
    head = (f"{'source':<15} {'kind':<8} {'package':<22} {'licence':<22} {'files':>6} {'train':>6} "
            f"{'valid':>6} {'hours':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        licence = r["licence"] if len(r["licence"]) <= 22 else r["licence"][:21] + "~"
        lines.append(f"{r['source']:<15} {r['kind']:<8} {r['package']:<22} {licence:<22} {r['files']:>6} "
                     f"{r['train']:>6} {r['validation']:>6} {r['hours']:>6.2f}")
    lines.append("-" * len(head))
    for kind in KINDS:
        hours = sum(r["hours"] for r in rows if r["kind"] == kind)
        if hours:
            lines.append(f"{kind:<15} {'':<8} {'':<22} {'':<22} {'':>6} "
                         f"{sum(r['train'] for r in rows if r['kind'] == kind):>6} "
                         f"{sum(r['validation'] for r in rows if r['kind'] == kind):>6} {hours:>6.2f}")
    lines.append(f"{'total':<15} {'':<8} {'':<22} {'':<22} {sum(r['files'] for r in rows):>6} "
                 f"{sum(r['train'] for r in rows):>6} {sum(r['validation'] for r in rows):>6} "
                 f"{sum(r['hours'] for r in rows):>6.2f}")
    return "\n".join(lines)


def default_root(scale: str = "default", seed: int = 0) -> Path:
    """Beside the synthetic suites: ``<corpora cache>/recorded-<scale>-seed<seed>``."""
    from .build import default_root as suite_root

    return suite_root(scale, seed).parent / f"recorded-{scale}-seed{seed}"


def _plan(sources: list[tuple[Source, list[Path]]], seed: int, scale: str) -> list[dict]:
    """Per source: which files are train and which validation, and each file's window budget."""
    cap = SCALE_HOURS[scale]
    plans = []
    for index, (source, files) in enumerate(sources):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 11, index])
        order = [files[i] for i in rng.permutation(len(files))]
        held = max(1, len(order) // 20) if len(order) >= 4 else 0  # whole files for validation
        hours = source.max_hours if cap is None else min(cap, source.max_hours)
        clips = max(1, int(hours * 3600 / CLIP_SECONDS))
        budgets = {"validation": max(1, clips // 40) if held else 0, "train": clips}
        split_files = {"validation": sorted(order[:held]), "train": sorted(order[held:])}
        jobs = []
        for split, chosen in split_files.items():
            if cap is not None:  # a smoke-run pool: a few windows from each of a few files
                chosen = spread(chosen, max(1, -(-budgets[split] // 4)))
            per_file = -(-budgets[split] // max(1, len(chosen)))  # ceil
            jobs += [(split, i, path, per_file) for i, path in enumerate(chosen)]
        plans.append({"source": source, "files": len(files), "jobs": jobs, "budgets": budgets})
    return plans


def _cut(job: tuple) -> list[tuple[str, str, int]]:
    """Decode one file and write its chosen windows; returns ``[(split, relative path, samples)]``."""
    import soundfile

    out_dir, source, split, file_index, path, per_file, max_seconds = job
    length = int(round(CLIP_SECONDS * SAMPLE_RATE))
    try:
        audio = read_recording(Path(path), source, max_seconds)
    except ValueError as err:
        print(f"[recordings] skipped {path}: {err}", file=sys.stderr)
        return []
    written = []
    for w, start in enumerate(spread(audible_windows(audio, length), per_file)):
        clip = np.clip(audio[start:start + length], -1.0, 1.0)
        rel = f"{source.name}/{split}/{file_index:05d}_{w:03d}.flac"
        soundfile.write(Path(out_dir) / rel, clip, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        written.append((split, rel, int(clip.shape[0])))
    return written


def build_recordings(root: str | Path | None = None, seed: int = 0, scale: str = "default", progress: bool = True,
                     workers: int | None = None, force: bool = False,
                     catalogue: tuple[Source, ...] = CATALOGUE,
                     roots: dict[str, list[Path]] | None = None) -> RecordedPool | None:
    """Cut the recordings of the catalogue's packages found here into pool clips (or reuse
    them); None when none of the packages is found.

    ``scale`` caps the hours per source (``"default"``: each source's ``max_hours``;
    ``"quick"``, ``"mini"``: a few clips each, for smoke runs and tests). ``roots``
    (package -> folders to look in) replaces the default places, for tests.
    """
    from ..fileio import file_lock

    if scale not in SCALE_HOURS:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALE_HOURS)}")
    root = Path(root) if root is not None else default_root(scale, seed)
    found, missing = [], []
    for source in catalogue:
        files = source_files(source, None if roots is None else roots.get(source.package, []))
        (found.append((source, files)) if files else missing.append(source.package))
    if not found:
        return None
    identity = {  # what decides the clips (not the licence or description texts)
        "format": RECORDINGS_FORMAT, "seed": int(seed), "scale": scale, "clip_seconds": CLIP_SECONDS,
        "silence_dbfs": SILENCE_DBFS, "min_seconds": MIN_SECONDS,
        "sources": [{**{k: v for k, v in asdict(s).items() if k not in ("licence", "description")},
                     "files": [[str(p.name), p.stat().st_size] for p in files]} for s, files in found],
    }
    expected = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):  # two builds of one cache do not interleave
        cached = _cached(root, expected)
        if cached is not None and not force:
            cached.missing = sorted(set(missing))
            return cached
        return _cut_sources(root, expected, found, sorted(set(missing)), seed, scale, workers, progress, log)


def _cut_sources(root: Path, expected: str, found: list, missing: list[str], seed: int, scale: str,
         workers: int | None, progress: bool, log) -> RecordedPool:
    """:func:`build_recordings`'s work, under its lock: cut the ``found`` sources into a
    staging folder, swap it in (a run reading the old clips loses none) and write the
    manifests and the pool's record."""
    from ..data.manifest import write_manifest
    from ..fileio import atomic_write_text, replace_folder

    started = time.perf_counter()
    log(f"[recordings] cutting {len(found)} sources into {CLIP_SECONDS} s clips in {root}")
    staging = root / f".building-{expected[:12]}"
    for old in root.glob(".building-*"):
        shutil.rmtree(old, ignore_errors=True)
    plans = _plan(found, seed, scale)
    jobs = []
    for plan in plans:
        for split in ("train", "validation"):
            (staging / plan["source"].name / split).mkdir(parents=True, exist_ok=True)
        # whole files for the default pool; for capped (smoke-run) scales, the middle
        # of each file, a few times the windows it gives
        jobs += [(str(staging), plan["source"], split, i, str(path), per_file,
                  None if SCALE_HOURS[scale] is None else 4 * per_file * CLIP_SECONDS)
                 for split, i, path, per_file in plan["jobs"]]
    results = _run_jobs(jobs, workers, progress)
    rows, entries = _keep(root, staging, plans, jobs, results)
    (root / RECORDED_FILE).unlink(missing_ok=True)  # the cache is invalid until the swap is done
    for name in {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} | \
            {plan["source"].name for plan in plans}:
        if (staging / name).exists():
            replace_folder(staging / name, root / name)
        elif (root / name).exists():
            shutil.rmtree(root / name)
    shutil.rmtree(staging, ignore_errors=True)
    manifests = {split: root / f"{split}.json" for split in entries}
    for split, path in manifests.items():
        write_manifest(entries[split], path, relative=True)
    pool = RecordedPool(root, expected, manifests, rows, missing, time.perf_counter() - started)
    atomic_write_text(root / RECORDED_FILE, json.dumps(
        {"fingerprint": expected, "sources": rows, "build_seconds": round(pool.build_seconds, 2)}, indent=1))
    log(f"[recordings] {pool.hours:.2f} h in {sum(r['train'] + r['validation'] for r in rows)} clips, "
        f"cut in {pool.build_seconds:.0f} s")
    return pool


def _keep(root: Path, staging: Path, plans: list[dict], jobs: list[tuple], results: list[list]):
    """Each source's clips within its budgets (the rest deleted from ``staging``):
    ``(rows of the pool's record, manifest entries per split)``."""
    from ..data.manifest import ClipEntry

    rows, entries = [], {"train": [], "validation": []}
    for plan in plans:
        source = plan["source"]
        mine = sorted((r for job, result in zip(jobs, results) if job[1] is source for r in result),
                      key=lambda r: r[1])
        kept = {split: [r for r in mine if r[0] == split][:plan["budgets"][split]] for split in entries}
        for split, clips in kept.items():
            entries[split] += [ClipEntry(wav=str(root / rel), labels=(source.kind,)) for _, rel, _ in clips]
        for extra in set(r[1] for r in mine) - {r[1] for clips in kept.values() for r in clips}:
            (staging / extra).unlink()
        rows.append({"source": source.name, "package": source.package, "kind": source.kind,
                     "licence": source.licence, "description": source.description, "files": plan["files"],
                     "train": len(kept["train"]), "validation": len(kept["validation"]),
                     "hours": sum(n for clips in kept.values() for _, _, n in clips) / SAMPLE_RATE / 3600})
    return rows, entries


def _run_jobs(jobs: list[tuple], workers: int | None, progress: bool) -> list[list]:
    from ..progress import progress as progress_bar
    from .build import _default_workers

    bar = progress_bar(len(jobs), "recordings", unit="file", enabled=progress, every=max(1, len(jobs) // 10))
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    results = []
    try:
        with context.Pool(processes=workers or _default_workers()) as pool:
            for result in pool.imap(_cut, jobs, chunksize=4):
                results.append(result)
                bar.update(1)
    finally:
        bar.close()
    return results


def _cached(root: Path, expected: str) -> RecordedPool | None:
    try:
        content = json.loads((root / RECORDED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    manifests = {split: root / f"{split}.json" for split in ("train", "validation")}
    if content.get("fingerprint") != expected or not all(p.is_file() for p in manifests.values()):
        return None
    clips = sum(1 for _ in root.glob("*/*/*.flac"))
    if clips != sum(r["train"] + r["validation"] for r in content["sources"]):
        return None
    return RecordedPool(root, expected, manifests, content["sources"], [], content.get("build_seconds", 0.0),
                        reused=True)
