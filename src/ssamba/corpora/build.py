"""Synthesising the suite to disk (cached by fingerprint) and describing it.

Layout under ``root``::

    suite.json                      fingerprint, seed, scale, paths and statistics
    <task>/train.json               SSAST manifests ({"data": [{"wav", "labels"}]}, relative paths)
    <task>/validation.json
    <task>/test.json
    <task>/labels.csv               index,mid,display_name
    <task>/metadata.jsonl           every clip's generation parameters (voice, text, notes, noise...)
    <task>/<split>/<index>_<label>.flac   16 kHz mono 16-bit FLAC
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from ..fileio import atomic_write_text, file_lock, replace_folder
from . import music as _music
from .postprocess import PEAK_LIMIT, finish_clip, rms, trim_silence
from .plan import SAMPLE_RATE, SPLITS, TASKS, ClipSpec, ScaleSpec, TaskPlan, get_scale, make_plan

#: Bump when the synthesis changes in a way the source hash would not show.
CORPUS_FORMAT = 1
SUITE_FILE = "suite.json"
_MIN_RMS_DBFS = -55.0

# Preloaded in the parent before forking (shared copy-on-write by the job processes).
_RENDERER: "_music.Renderer | None" = None


# --------------------------------------------------------------------------------------
# Description of a built suite
# --------------------------------------------------------------------------------------


@dataclass
class TaskFiles:
    """One task of a built suite: its manifests, label CSV and statistics."""

    name: str
    directory: Path
    manifests: dict[str, Path]
    label_csv: Path
    metadata: Path
    classes: int
    clips: dict[str, int]
    seconds: dict[str, float]

    @property
    def hours(self) -> float:
        return sum(self.seconds.values()) / 3600.0

    @property
    def total_clips(self) -> int:
        return sum(self.clips.values())


@dataclass
class Suite:
    """A built (or reused) suite: ``suite.manifest("kws", "train")``, ``suite.table()``."""

    root: Path
    seed: int
    scale: str
    fingerprint: str
    tasks: dict[str, TaskFiles]
    build_seconds: float
    reused: bool = False
    info: dict = field(default_factory=dict)

    def manifest(self, task: str, split: str) -> Path:
        return self.tasks[task].manifests[split]

    def label_csv(self, task: str) -> Path:
        return self.tasks[task].label_csv

    def stats(self) -> list[dict]:
        """Per task: classes, clips per split, total clips and hours."""
        return suite_stats(self)

    def table(self) -> str:
        return format_stats(self.stats())

    def to_json(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "seed": self.seed,
            "scale": self.scale,
            "build_seconds": round(self.build_seconds, 2),
            "info": self.info,
            "tasks": {
                name: {
                    "manifests": {split: path.name for split, path in t.manifests.items()},
                    "label_csv": t.label_csv.name,
                    "metadata": t.metadata.name,
                    "classes": t.classes,
                    "clips": t.clips,
                    "seconds": {split: round(s, 3) for split, s in t.seconds.items()},
                }
                for name, t in self.tasks.items()
            },
        }

    @classmethod
    def from_json(cls, root: Path, content: dict) -> "Suite":
        tasks = {}
        order = [name for name in TASKS if name in content["tasks"]] + sorted(set(content["tasks"]) - set(TASKS))
        for name in order:
            t = content["tasks"][name]
            directory = root / name
            tasks[name] = TaskFiles(
                name=name,
                directory=directory,
                manifests={split: directory / file for split, file in t["manifests"].items()},
                label_csv=directory / t["label_csv"],
                metadata=directory / t["metadata"],
                classes=int(t["classes"]),
                clips={k: int(v) for k, v in t["clips"].items()},
                seconds={k: float(v) for k, v in t["seconds"].items()},
            )
        return cls(
            root=root, seed=int(content["seed"]), scale=content["scale"], fingerprint=content["fingerprint"],
            tasks=tasks, build_seconds=float(content.get("build_seconds", 0.0)), info=content.get("info", {}),
        )


def suite_stats(suite: Suite) -> list[dict]:
    """Rows ``{task, classes, train, validation, test, clips, hours}`` of ``suite``."""
    rows = []
    for name, task in suite.tasks.items():
        row = {"task": name, "classes": task.classes}
        row.update({split: task.clips.get(split, 0) for split in SPLITS})
        row["clips"] = task.total_clips
        row["hours"] = task.hours
        rows.append(row)
    return rows


def format_stats(rows: list[dict]) -> str:
    """A plain-text table of :func:`suite_stats` rows (with a total line)."""
    header = f"{'task':<10} {'classes':>7} {'train':>7} {'valid':>7} {'test':>7} {'clips':>7} {'hours':>6}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['task']:<10} {r['classes']:>7} {r['train']:>7} {r['validation']:>7} {r['test']:>7} "
            f"{r['clips']:>7} {r['hours']:>6.2f}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'total':<10} {'':>7} {sum(r['train'] for r in rows):>7} {sum(r['validation'] for r in rows):>7} "
        f"{sum(r['test'] for r in rows):>7} {sum(r['clips'] for r in rows):>7} {sum(r['hours'] for r in rows):>6.2f}"
    )
    return "\n".join(lines)


def load_suite(root: str | Path) -> Suite:
    """The suite described by ``root/suite.json`` (``FileNotFoundError`` if none was built there)."""
    root = Path(root)
    path = root / SUITE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no corpus suite at {str(root)!r} (no {SUITE_FILE}); build one with 'ssamba corpus build'")
    with open(path, encoding="utf-8") as f:
        suite = Suite.from_json(root, json.load(f))
    suite.reused = True
    return suite


# --------------------------------------------------------------------------------------
# Fingerprint and cache
# --------------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


#: The modules whose code decides the suite's bytes (not ``__init__`` or ``cli``).
SYNTHESIS_MODULES = ("build.py", "postprocess.py", "music.py", "plan.py", "speech.py", "vocab.py")


def code_hash() -> str:
    """SHA-256 of the synthesis code (:data:`SYNTHESIS_MODULES`)."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in SYNTHESIS_MODULES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint_inputs(seed: int, spec: ScaleSpec, soundfont: Path) -> dict:
    """Everything the suite's bytes depend on."""
    import soundfile

    return {
        "format": CORPUS_FORMAT,
        "code": code_hash(),
        "seed": int(seed),
        "scale": asdict(spec),
        "soundfont": _music.soundfont_identity(soundfont),
        "versions": {
            "espeakng-loader": _version("espeakng-loader"),
            "tinysoundfont": _version("tinysoundfont"),
            "soxr": _version("soxr"),
            "soundfile": _version("soundfile"),
            "libsndfile": getattr(soundfile, "__libsndfile_version__", "?"),
            "numpy": np.__version__,
        },
    }


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def default_root(scale: str = "default", seed: int = 0) -> Path:
    """``$SSAMBA_CORPUS_DIR/<scale>-seed<seed>``, by default under ``~/.cache/ssamba/corpora``."""
    base = os.environ.get("SSAMBA_CORPUS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ssamba", "corpora"
    )
    return Path(base) / f"{scale}-seed{seed}"


def _cached(root: Path, expected: str) -> Suite | None:
    try:
        suite = load_suite(root)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError):
        return None
    if suite.fingerprint != expected or set(suite.tasks) != set(TASKS):
        return None
    for task in suite.tasks.values():
        files = [*task.manifests.values(), task.label_csv, task.metadata]
        if not all(p.is_file() for p in files):
            return None
        for split in SPLITS:  # each split folder holds exactly its clips
            folder = task.directory / split
            count = sum(1 for _ in folder.glob("*.flac")) if folder.is_dir() else 0
            if count != task.clips.get(split, 0):
                return None
    return suite


# --------------------------------------------------------------------------------------
# Synthesis (runs in job processes)
# --------------------------------------------------------------------------------------


def _resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    from ssamba.frontend import resample

    return np.asarray(resample(np.ascontiguousarray(audio, dtype=np.float32), orig_rate, target_rate), dtype=np.float32)


def synthesize_clip(clip: ClipSpec, tts=None, renderer: "_music.Renderer | None" = None) -> np.ndarray:
    """The 16 kHz float32 samples of ``clip``.

    ``tts`` (an :class:`~ssamba.corpora.speech.Espeak`) speaks speech clips and speech
    overlays: its samples depend on what it said before (see :mod:`ssamba.corpora.speech`),
    so pass the same fresh instance through a fixed sequence of clips; by default a new one
    is made for this clip. ``renderer`` renders music (default: the one preloaded by the
    build, or a new one).
    """
    kinds = {clip.kind} | ({clip.overlay["kind"]} if clip.overlay else set())
    if "speech" in kinds and tts is None:
        from .speech import Espeak

        with Espeak() as fresh:
            return synthesize_clip(clip, fresh, renderer)
    if "music" in kinds and renderer is None:
        renderer = _RENDERER or _music.Renderer()
    audio = _source_audio(clip.kind, clip.source, clip.speed, clip.length, clip.seed, tts, renderer)
    overlay = {}
    if clip.overlay:
        event = clip.overlay
        overlay = {
            "overlay": _source_audio(event["kind"], event["source"], 1.0, clip.length, event["seed"], tts, renderer),
            "overlay_db": event["db"],
            "overlay_position": event["position"],
        }
    position = clip.position if clip.kind == "speech" else 0.0
    return finish_clip(
        audio, clip.length, position, clip.level_dbfs, clip.noise, clip.snr_db, SAMPLE_RATE, clip.seed,
        reverb=clip.reverb, **overlay,
    )


def _source_audio(kind: str, source: dict, speed: float, length: int, seed: int, tts, renderer) -> np.ndarray:
    """One dry event at 16 kHz: espeak-ng speech (trimmed of silence) or rendered notes (``length`` samples)."""
    if kind == "speech":
        audio = tts.synthesize(
            source["text"], source["accent"], source["variant"], rate=source["rate"], pitch=source["pitch"],
            pitch_range=source["pitch_range"], seed=seed,
        )
        audio = trim_silence(audio, threshold=1e-3, margin=int(0.01 * tts.sample_rate))
        if audio.size == 0:
            raise ValueError(f"espeak-ng produced silence for {source}")
        return _resample(audio, int(round(tts.sample_rate * speed)), SAMPLE_RATE)
    if kind == "music":
        rate = renderer.sample_rate
        num = int(np.ceil(length / SAMPLE_RATE * rate * speed)) + 64
        notes = [_music.Note(*n) for n in source["notes"]]
        raw = renderer.render(source["program"], notes, num)
        shift = 0
        while float(np.abs(raw).max()) < 1e-4 and abs(shift) < 24:  # outside the instrument's samples
            mean_key = np.mean([n.key for n in notes])
            shift += 12 if mean_key + shift < 60 else -12
            raw = renderer.render(source["program"], [_music.Note(n.onset, n.key + shift, n.velocity, n.duration) for n in notes], num)
        return _resample(raw, int(round(rate * speed)), SAMPLE_RATE)[:length]
    raise ValueError(f"unknown clip kind {kind!r}")


def _run_job(job: tuple[str, list[ClipSpec]]) -> tuple[str, list[tuple[str, int, float, float]]]:
    """Synthesise one job's clips, in order, with a fresh espeak-ng; write them as FLAC.

    Returns ``(task folder, [(clip path, samples, peak, rms dBFS), ...])``.
    """
    global _RENDERER
    import soundfile

    from .speech import Espeak

    task_dir, clips = job
    results = []
    kinds = {clip.kind for clip in clips} | {clip.overlay["kind"] for clip in clips if clip.overlay}
    tts = Espeak() if "speech" in kinds else None  # fresh state per job
    if _RENDERER is None and "music" in kinds:  # not forked: load once per worker
        _RENDERER = _music.Renderer()
    for clip in clips:
        try:
            audio = synthesize_clip(clip, tts, _RENDERER)
        except Exception as err:
            raise RuntimeError(f"synthesising {clip.task}/{clip.path} failed: {err}") from err
        encoded = io.BytesIO()  # (libsndfile opening a path costs more than encoding the clip)
        soundfile.write(encoded, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        with open(Path(task_dir) / clip.path, "wb") as f:
            f.write(encoded.getbuffer())
        level = rms(audio)
        results.append((clip.path, int(audio.shape[0]), float(np.abs(audio).max()), 20 * np.log10(max(level, 1e-12))))
    if tts is not None:
        tts.close()
    return task_dir, results


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _write_task(task: TaskPlan, directory: Path, durations: dict[str, int]) -> TaskFiles:
    from ssamba.data.manifest import ClipEntry, LabelMap, write_label_csv, write_manifest

    labels = LabelMap(task.label_ids, task.label_names)
    manifests = {}
    clips, seconds = {}, {}
    for split in SPLITS:
        entries = [ClipEntry(wav=str(directory / c.path), labels=(c.label,)) for c in task.clips if c.split == split]
        manifests[split] = directory / f"{split}.json"
        write_manifest(entries, manifests[split], relative=True)
        clips[split] = len(entries)
        seconds[split] = sum(durations[c.path] for c in task.clips if c.split == split) / SAMPLE_RATE
    write_label_csv(labels, directory / "labels.csv")
    with open(directory / "metadata.jsonl", "w", encoding="utf-8") as f:
        for clip in task.clips:
            f.write(json.dumps(clip.record(), sort_keys=True) + "\n")
    return TaskFiles(
        name=task.name, directory=directory, manifests=manifests, label_csv=directory / "labels.csv",
        metadata=directory / "metadata.jsonl", classes=len(labels), clips=clips, seconds=seconds,
    )


def build_suite(
    root: str | Path | None = None,
    seed: int = 0,
    scale: str | ScaleSpec = "default",
    progress: bool = True,
    workers: int | None = None,
    force: bool = False,
) -> Suite:
    """Synthesise the offline audio suite into ``root`` (or reuse it if already built there).

    ``scale`` is ``"default"`` (~15k clips, ~6 h of audio), ``"quick"`` (~2k clips) or
    ``"mini"`` (~100 clips, for tests), or a :class:`ScaleSpec`. The result depends only on
    (seed, scale, synthesis code, library versions, SoundFont): that is the fingerprint
    stored in ``root/suite.json``; a second call with the same fingerprint reuses the files
    (``suite.reused``) unless ``force``. The output does not depend on ``workers``.
    ``root`` defaults to :func:`default_root`.
    """
    spec = get_scale(scale)
    root = Path(root) if root is not None else default_root(spec.name, seed)
    soundfont = _music.find_soundfont()
    inputs = fingerprint_inputs(seed, spec, soundfont)
    expected = fingerprint(inputs)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".lock"):  # two builds of one cache do not interleave
        if not force:
            suite = _cached(root, expected)
            if suite is not None:
                log(f"[corpus] reusing the {spec.name} suite (seed {seed}) at {root}")
                return suite
        return _build(root, seed, spec, soundfont, inputs, expected, progress, workers or _default_workers(), log)


def _build(root, seed, spec, soundfont, inputs, expected, progress, workers, log) -> Suite:
    global _RENDERER
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    log(f"[corpus] building the {spec.name} suite (seed {seed}) in {root} with {workers} worker(s)")
    plan = make_plan(seed, spec)
    staging = root / f".building-{expected[:12]}"
    for old in root.glob(".building-*"):
        shutil.rmtree(old, ignore_errors=True)
    jobs = []
    for name, task in plan.items():
        task_dir = staging / name
        for split in SPLITS:
            (task_dir / split).mkdir(parents=True, exist_ok=True)
        for i in range(0, len(task.clips), spec.job_size):
            jobs.append((str(task_dir), task.clips[i : i + spec.job_size]))
    total = sum(len(t.clips) for t in plan.values())

    # Heavy state is loaded once here and shared with the forked job processes.
    import ssamba.frontend  # noqa: F401  (torch, for ssamba.frontend.resample)

    needs_music = any(c.kind == "music" for t in plan.values() for c in t.clips)
    if needs_music and (_RENDERER is None or _RENDERER.path != soundfont):
        log(f"[corpus] loading the SoundFont {soundfont}")
        _RENDERER = _music.Renderer(soundfont)

    from ..progress import progress as progress_bar

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    durations: dict[tuple[str, str], int] = {}
    problems = []
    bar = progress_bar(total, f"corpus {spec.name}", unit="clip", enabled=progress, every=max(1, total // 10))
    try:
        # Jobs are independent of which worker runs them and of what it ran before: each loads
        # its own espeak-ng (speech.py), each render starts from silence, each clip seeds its noise.
        with context.Pool(processes=workers) as pool:
            for task_dir, results in pool.imap_unordered(_run_job, jobs, chunksize=1):
                task = Path(task_dir).name
                for path, samples, peak, level in results:
                    durations[(task, path)] = samples
                    if not (peak <= PEAK_LIMIT + 1e-3 and level > _MIN_RMS_DBFS):
                        problems.append(f"{task}/{path}: peak {peak:.3f}, rms {level:.1f} dBFS")
                bar.update(len(results))
            pool.close()
            pool.join()
    finally:
        bar.close()
        _RENDERER = None  # the decoded SoundFont holds ~300 MB
    if problems:
        raise RuntimeError(f"{len(problems)} synthesised clips failed the audio checks: {problems[:5]}")

    tasks = {}
    for name, task in plan.items():
        tasks[name] = _write_task(task, staging / name, {p: n for (t, p), n in durations.items() if t == name})
    for name in plan:  # swap the finished tasks in
        tasks[name] = _relocate(tasks[name], replace_folder(staging / name, root / name))
    shutil.rmtree(staging, ignore_errors=True)
    suite = Suite(
        root=root, seed=seed, scale=spec.name, fingerprint=expected, tasks=tasks,
        build_seconds=time.perf_counter() - start,
        info={
            "inputs": inputs, "workers": workers, "soundfont": str(soundfont),
            "cpu_seconds": round(_cpu_seconds() - cpu_start, 2),
        },
    )
    atomic_write_text(root / SUITE_FILE, json.dumps(suite.to_json(), indent=1, sort_keys=True) + "\n")
    log(f"[corpus] built {total} clips in {suite.build_seconds:.1f} s ({suite.info['cpu_seconds']:.0f} CPU-seconds)")
    return suite


def _relocate(task: TaskFiles, directory: Path) -> TaskFiles:
    return TaskFiles(
        name=task.name, directory=directory,
        manifests={split: directory / p.name for split, p in task.manifests.items()},
        label_csv=directory / task.label_csv.name, metadata=directory / task.metadata.name,
        classes=task.classes, clips=task.clips, seconds=task.seconds,
    )
