"""The suite's plan: every clip of every task, with all its random choices, drawn from the seed.

The plan is pure Python + numpy (no audio): voices are split between tasks, speakers and
programs between splits, and each clip gets its text or notes, voice, pitch, rate, speed,
level, background noise, room reverberation, an overlapping event of the other kind (music
behind speech, speech behind music) and its own noise seed. Synthesis (:mod:`ssamba.corpora.build`)
only executes it, so the audio is a function of (seed, scale, code).

Disjointness (checked by :func:`check_plan`):

- ``kws``: voices (espeak-ng variants) of train, validation and test are disjoint;
- ``speaker``: every speaker is in every split; a speaker's test (and validation) words never
  occur in its training clips;
- ``sounds``: GM programs of train, validation and test are disjoint;
- ``unlabeled``: no kws validation/test voice, no speaker-task voice, no sounds
  validation/test program, in its clips or in their overlapping events;
- overlapping events in labeled clips use only voices of no task (``unlabeled_only``)
  and programs outside the sounds validation/test sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from .vocab import ACCENTS, GM_FAMILIES, KWS_WORDS, SCALES, SOUND_FAMILIES, SPEAKER_WORDS, VARIANTS, make_sentence

SAMPLE_RATE = 16000
SPLITS = ("train", "validation", "test")
TASKS = ("kws", "speaker", "sounds", "unlabeled")


@dataclass(frozen=True)
class ScaleSpec:
    """Sizes of a suite. Triples are (train, validation, test)."""

    name: str
    # kws: words x voices x takes per (voice, word)
    kws_words: int = 35
    kws_voices: tuple[int, int, int] = (40, 8, 12)
    kws_takes: tuple[int, int, int] = (3, 1, 2)
    # speaker: (variants x pitch bands) speakers, clips per speaker
    speaker_variants: int = 18
    speaker_bands: int = 2
    speaker_clips: tuple[int, int, int] = (60, 10, 20)
    # sounds: families, programs per family, clips per program
    sound_families: int = 8
    sound_programs: tuple[int, int, int] = (5, 1, 2)
    sound_clips: tuple[int, int, int] = (60, 40, 40)
    # unlabeled: speech (sentences) and music (phrases) clips
    unlabeled_speech: tuple[int, int, int] = (2800, 150, 50)
    unlabeled_music: tuple[int, int, int] = (1200, 50, 50)
    # every clip: chance of room reverberation, and of an overlapping event of the other kind
    reverb_prob: float = 0.5
    overlap_prob: float = 0.4
    # clip lengths in seconds
    kws_seconds: float = 1.0
    clip_seconds: float = 1.5
    # clips per synthesis job (each job runs in a fresh process; part of the output's identity)
    job_size: int = 96

    def __post_init__(self):
        used = sum(self.kws_voices) + self.speaker_variants
        if used > len(VARIANTS):
            raise ValueError(f"scale {self.name!r} needs {used} espeak variants, {len(VARIANTS)} exist")
        if not 1 <= self.kws_words <= len(KWS_WORDS):
            raise ValueError(f"kws_words must be in 1..{len(KWS_WORDS)}")
        if not 1 <= self.sound_families <= len(SOUND_FAMILIES):
            raise ValueError(f"sound_families must be in 1..{len(SOUND_FAMILIES)}")
        if sum(self.sound_programs) > 8:
            raise ValueError("a GM family has 8 programs; sound_programs must sum to at most 8")
        if min(self.kws_voices) < 1 or min(self.sound_programs) < 1 or self.speaker_variants < 1:
            raise ValueError("every split needs at least one kws voice and one sounds program")
        if used == len(VARIANTS):
            raise ValueError(f"scale {self.name!r} leaves no espeak variant for the unlabeled pool's own voices")
        for name in ("reverb_prob", "overlap_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


SCALES_BY_NAME: dict[str, ScaleSpec] = {
    "default": ScaleSpec("default"),
    "quick": ScaleSpec(
        "quick",
        kws_voices=(10, 3, 4), kws_takes=(1, 1, 1),
        speaker_variants=6, speaker_clips=(20, 5, 8),
        sound_programs=(5, 1, 2), sound_clips=(6, 6, 6),
        unlabeled_speech=(350, 30, 10), unlabeled_music=(150, 20, 10), job_size=64,
    ),
    "mini": ScaleSpec(
        "mini",
        kws_words=4, kws_voices=(2, 1, 1), kws_takes=(2, 1, 1),
        speaker_variants=2, speaker_clips=(4, 2, 2),
        sound_families=3, sound_programs=(2, 1, 1), sound_clips=(3, 2, 2),
        unlabeled_speech=(8, 2, 2), unlabeled_music=(4, 2, 2),
        job_size=16,
    ),
}


def get_scale(scale: str | ScaleSpec) -> ScaleSpec:
    if isinstance(scale, ScaleSpec):
        return scale
    try:
        return SCALES_BY_NAME[scale]
    except KeyError:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES_BY_NAME)}") from None


@dataclass
class ClipSpec:
    """One clip to synthesise: where it goes, what it is, and every random choice made for it."""

    task: str
    split: str
    index: int  # position in its split's manifest (set by make_plan)
    label: str
    path: str  # relative to the task folder ("<split>/<index>_<label>.flac", set by make_plan)
    kind: str  # "speech" or "music"
    length: int  # samples at 16 kHz
    source: dict  # speech: text, accent, variant, rate, pitch, pitch_range; music: program, notes
    speed: float  # resampling factor (tempo and pitch)
    level_dbfs: float  # RMS of the active signal
    noise: str | None  # background noise kind, or None
    snr_db: float
    position: float  # placement of short audio / crop of long audio (0..1)
    seed: int  # noise (and espeak) seed
    meta: dict = field(default_factory=dict)  # voice / speaker / family / program / words
    reverb: dict | None = None  # rt60 (s), drr_db, lowpass_hz of the synthetic room, or None (dry)
    overlay: dict | None = None  # a second event: kind, source, db (re the clip), position, seed; or None

    def record(self) -> dict:
        """A JSON-able row for the task's ``metadata.jsonl``."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["wav"] = row.pop("path")
        return row


@dataclass
class TaskPlan:
    name: str
    label_ids: list[str]
    label_names: list[str]
    clips: list[ClipSpec]


@dataclass(frozen=True)
class Voice:
    variant: str
    accent: str

    @property
    def name(self) -> str:
        return f"{self.accent}+{self.variant}"


def _rng(seed: int, *salt: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *salt])


def _augment(rng: np.random.Generator, spec: ScaleSpec, speed: float, noise_prob: float = 0.8, snr=(5.0, 30.0)) -> dict:
    """The augmentation draws shared by all tasks: speed jitter, level, background noise, reverberation."""
    noisy = rng.random() < noise_prob
    out = {
        "speed": float(rng.uniform(1.0 - speed, 1.0 + speed)) if speed else 1.0,
        "level_dbfs": float(rng.uniform(-30.0, -16.0)),
        "noise": str(rng.choice(["white", "pink", "brown", "hum"])) if noisy else None,
        "snr_db": float(rng.uniform(*snr)),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }
    if rng.random() < spec.reverb_prob:
        out["reverb"] = {
            "rt60": float(rng.uniform(0.2, 0.9)),
            "drr_db": float(rng.uniform(-3.0, 12.0)),
            "lowpass_hz": float(rng.uniform(2000.0, 7000.0)),
        }
    return out


@dataclass(frozen=True)
class OverlayPool:
    """Where overlapping events come from: voices for speech behind music, programs for music behind speech."""

    voices: list[Voice]
    programs: list[tuple[str, int]]  # (GM family, program)


def _overlay(rng: np.random.Generator, spec: ScaleSpec, kind: str, pool: OverlayPool) -> dict:
    """``{"overlay": ...}`` with probability ``spec.overlap_prob`` (else ``{}``): an event of
    ``kind`` ("speech": a sentence; "music": notes), ``db`` 6-18 dB below the clip's source."""
    if rng.random() >= spec.overlap_prob:
        return {}
    event = {"kind": kind, "db": float(rng.uniform(-18.0, -6.0)), "position": float(rng.uniform(0.0, 1.0))}
    if kind == "speech":
        voice = pool.voices[int(rng.integers(len(pool.voices)))]
        event["source"] = {
            "text": make_sentence(rng), "accent": voice.accent, "variant": voice.variant,
            "rate": int(rng.integers(140, 221)), "pitch": int(rng.integers(10, 91)),
            "pitch_range": int(rng.integers(25, 81)),
        }
        event["voice"] = voice.name
    else:
        family, program = pool.programs[int(rng.integers(len(pool.programs)))]
        event["source"] = {"program": int(program), "notes": make_notes(rng, GM_FAMILIES[family][1], 0.8)}
        event["family"] = family
    event["seed"] = int(rng.integers(0, 2**31 - 1))
    return {"overlay": event}


def _split_voices(seed: int, spec: ScaleSpec) -> dict[str, list[Voice]]:
    rng = _rng(seed, 1)
    order = [VARIANTS[i] for i in rng.permutation(len(VARIANTS))]
    accents = [ACCENTS[int(i)] for i in rng.integers(0, len(ACCENTS), len(order))]
    voices = [Voice(v, a) for v, a in zip(order, accents)]
    groups, start = {}, 0
    for name, count in (
        ("kws_train", spec.kws_voices[0]), ("kws_validation", spec.kws_voices[1]),
        ("kws_test", spec.kws_voices[2]), ("speaker", spec.speaker_variants),
    ):
        groups[name] = voices[start : start + count]
        start += count
    groups["unlabeled_only"] = voices[start:]
    return groups


def _plan_kws(seed: int, spec: ScaleSpec, groups, pool: OverlayPool) -> TaskPlan:
    rng = _rng(seed, 2)
    if spec.kws_words == len(KWS_WORDS):
        words = list(KWS_WORDS)
    else:
        words = sorted(KWS_WORDS[i] for i in rng.choice(len(KWS_WORDS), spec.kws_words, replace=False))
    length = int(round(spec.kws_seconds * SAMPLE_RATE))
    clips = []
    for s, split in enumerate(SPLITS):
        for voice in groups[f"kws_{split}"]:
            for word in words:
                for take in range(spec.kws_takes[s]):
                    source = {
                        "text": word, "accent": voice.accent, "variant": voice.variant,
                        "rate": int(rng.integers(130, 221)), "pitch": int(rng.integers(15, 86)),
                        "pitch_range": int(rng.integers(25, 76)),
                    }
                    clips.append(ClipSpec(
                        task="kws", split=split, index=-1, label=word, path="", kind="speech",
                        length=length, source=source, position=float(rng.uniform(0.0, 1.0)),
                        meta={"voice": voice.name, "take": take}, **_augment(rng, spec, speed=0.08),
                        **_overlay(rng, spec, "music", pool),
                    ))
    return TaskPlan("kws", words, words, clips)


def _band_pitch(band: int, bands: int) -> tuple[float, float]:
    width = 100.0 / bands
    center = (band + 0.5) * width
    return center - 0.25 * width, center + 0.25 * width


def _plan_speaker(seed: int, spec: ScaleSpec, groups, pool: OverlayPool) -> TaskPlan:
    rng = _rng(seed, 3)
    length = int(round(spec.clip_seconds * SAMPLE_RATE))
    band_names = ("low", "high") if spec.speaker_bands == 2 else tuple(f"band{b}" for b in range(spec.speaker_bands))
    speakers = [(voice, b) for voice in groups["speaker"] for b in range(spec.speaker_bands)]
    ids = [f"spk{i:02d}" for i in range(len(speakers))]
    names = [f"{voice.name} {band_names[b]}" for voice, b in speakers]
    fractions = np.cumsum([0.6, 0.15, 0.25])
    clips = []
    for sid, (voice, band) in zip(ids, speakers):
        order = [SPEAKER_WORDS[i] for i in rng.permutation(len(SPEAKER_WORDS))]
        cuts = [0, *(int(round(f * len(order))) for f in fractions)]
        word_sets = {split: order[cuts[s] : cuts[s + 1]] for s, split in enumerate(SPLITS)}
        lo, hi = _band_pitch(band, spec.speaker_bands)
        for s, split in enumerate(SPLITS):
            vocabulary = word_sets[split]
            for _ in range(spec.speaker_clips[s]):
                count = 2 if rng.random() < 0.6 else 3
                words = [vocabulary[int(i)] for i in rng.choice(len(vocabulary), count, replace=False)]
                source = {
                    "text": " ".join(words), "accent": voice.accent, "variant": voice.variant,
                    "rate": int(rng.integers(140, 211)), "pitch": int(round(rng.uniform(lo, hi))),
                    "pitch_range": int(rng.integers(30, 71)),
                }
                clips.append(ClipSpec(
                    task="speaker", split=split, index=-1, label=sid, path="", kind="speech",
                    length=length, source=source, position=float(rng.uniform(0.0, 1.0)),
                    meta={"voice": voice.name, "band": band_names[band], "words": words},
                    **_augment(rng, spec, speed=0.02), **_overlay(rng, spec, "music", pool),
                ))
    return TaskPlan("speaker", ids, names, clips)


def make_notes(rng: np.random.Generator, key_range: tuple[int, int], phrase_prob: float = 0.6) -> list[list]:
    """A single note (sometimes), a chord, or a short phrase on a scale: ``[[onset, key, velocity, duration], ...]``."""
    lo, hi = key_range
    onset = float(rng.uniform(0.0, 0.15))
    velocity = int(rng.integers(60, 128))
    r = rng.random()
    if r >= phrase_prob:  # single note
        return [[onset, int(rng.integers(lo, hi + 1)), velocity, float(rng.uniform(0.25, 1.0))]]
    if r < 0.25 * phrase_prob:  # chord, slightly strummed
        shape = ((0, 4, 7), (0, 3, 7), (0, 5, 7), (0, 4, 7, 12), (0, 7, 12))[int(rng.integers(5))]
        root = int(rng.integers(lo, max(lo, hi - shape[-1]) + 1))
        duration = float(rng.uniform(0.4, 1.1))
        return [
            [onset + 0.012 * i * float(rng.random() < 0.5), root + step, int(np.clip(velocity + rng.integers(-10, 11), 30, 127)), duration]
            for i, step in enumerate(shape)
        ]
    scale = SCALES[int(rng.integers(len(SCALES)))]
    root = int(rng.integers(lo, max(lo, hi - 12) + 1))
    count = int(rng.integers(2, 7))
    ioi = float(rng.uniform(0.12, 0.3))
    degree = int(rng.integers(len(scale)))
    notes = []
    for i in range(count):
        degree = int(np.clip(degree + rng.choice([-2, -1, 1, 1, 2]), 0, len(scale) - 1))
        key = int(np.clip(root + scale[degree], lo, hi))
        notes.append([onset + i * ioi, key, int(np.clip(velocity + rng.integers(-15, 16), 30, 127)), float(ioi * rng.uniform(0.8, 1.6))])
    return notes


def _music_clip(rng, spec, pool, task, split, label, program, family, length, phrase_prob, speed) -> ClipSpec:
    return ClipSpec(
        task=task, split=split, index=-1, label=label, path="", kind="music", length=length,
        source={"program": int(program), "notes": make_notes(rng, GM_FAMILIES[family][1], phrase_prob)},
        position=0.0, meta={"family": family, "program": int(program)},
        **_augment(rng, spec, speed=speed), **_overlay(rng, spec, "speech", pool),
    )


def _program_splits(seed: int, spec: ScaleSpec) -> dict[str, dict[str, list[int]]]:
    """``family -> split -> programs`` for the sounds task's families."""
    rng = _rng(seed, 4)
    out = {}
    for family in SOUND_FAMILIES[: spec.sound_families]:
        programs = list(GM_FAMILIES[family][0])
        order = [programs[i] for i in rng.permutation(len(programs))]
        a, b, c = spec.sound_programs
        out[family] = {"train": sorted(order[:a]), "validation": sorted(order[a : a + b]), "test": sorted(order[a + b : a + b + c])}
    return out


def _pool_programs(program_splits) -> list[tuple[str, int]]:
    """Every GM (family, program) outside the sounds task's validation and test programs."""
    held_out = {p for fam in program_splits.values() for split in ("validation", "test") for p in fam[split]}
    return [(family, p) for family, (progs, _) in GM_FAMILIES.items() for p in progs if p not in held_out]


def _plan_sounds(seed: int, spec: ScaleSpec, program_splits, pool: OverlayPool) -> TaskPlan:
    rng = _rng(seed, 5)
    length = int(round(spec.clip_seconds * SAMPLE_RATE))
    families = list(program_splits)
    clips = []
    for s, split in enumerate(SPLITS):
        for family in families:
            for program in program_splits[family][split]:
                for _ in range(spec.sound_clips[s]):
                    clips.append(_music_clip(rng, spec, pool, "sounds", split, family, program, family, length, 0.5, 0.03))
    names = [f.replace("_", " ") for f in families]
    return TaskPlan("sounds", families, names, clips)


def _plan_unlabeled(seed: int, spec: ScaleSpec, groups, program_splits) -> TaskPlan:
    rng = _rng(seed, 6)
    length = int(round(spec.clip_seconds * SAMPLE_RATE))
    voices = groups["kws_train"] + groups["unlabeled_only"]
    programs = _pool_programs(program_splits)
    pool = OverlayPool(voices, programs)
    clips = []
    for s, split in enumerate(SPLITS):
        for _ in range(spec.unlabeled_speech[s]):
            voice = voices[int(rng.integers(len(voices)))]
            source = {
                "text": make_sentence(rng), "accent": voice.accent, "variant": voice.variant,
                "rate": int(rng.integers(140, 221)), "pitch": int(rng.integers(10, 91)),
                "pitch_range": int(rng.integers(25, 81)),
            }
            clips.append(ClipSpec(
                task="unlabeled", split=split, index=-1, label="speech", path="", kind="speech",
                length=length, source=source, position=float(rng.uniform(0.0, 1.0)),
                meta={"voice": voice.name}, **_augment(rng, spec, speed=0.08), **_overlay(rng, spec, "music", pool),
            ))
        for _ in range(spec.unlabeled_music[s]):
            family, program = programs[int(rng.integers(len(programs)))]
            clips.append(_music_clip(rng, spec, pool, "unlabeled", split, "music", program, family, length, 0.8, 0.05))
    return TaskPlan("unlabeled", ["speech", "music"], ["speech", "music"], clips)


def _shuffled(task: TaskPlan, rng: np.random.Generator) -> TaskPlan:
    """``task`` with each split in random order (so any prefix of a manifest is a random subset)."""
    clips = []
    for split in SPLITS:
        members = [c for c in task.clips if c.split == split]
        for index, i in enumerate(rng.permutation(len(members))):
            clip = members[int(i)]
            clips.append(replace(clip, index=index, path=f"{split}/{index:05d}_{clip.label}.flac"))
    return TaskPlan(task.name, task.label_ids, task.label_names, clips)


def make_plan(seed: int, scale: str | ScaleSpec) -> dict[str, TaskPlan]:
    """Every clip of the suite for ``seed`` and ``scale`` (no audio is made here).

    Within a split, clips are in random order: a prefix of a manifest is a random subset.
    """
    spec = get_scale(scale)
    groups = _split_voices(seed, spec)
    program_splits = _program_splits(seed, spec)
    pool = OverlayPool(groups["unlabeled_only"], _pool_programs(program_splits))
    plan = {
        "kws": _plan_kws(seed, spec, groups, pool),
        "speaker": _plan_speaker(seed, spec, groups, pool),
        "sounds": _plan_sounds(seed, spec, program_splits, pool),
        "unlabeled": _plan_unlabeled(seed, spec, groups, program_splits),
    }
    rng = _rng(seed, 7)
    plan = {name: _shuffled(task, rng) for name, task in plan.items()}
    check_plan(plan)
    return plan


def check_plan(plan: dict[str, TaskPlan]) -> None:
    """Raise ``AssertionError`` if a split leaks what it must not (see the module docstring)."""

    def values(task, split, key):
        return {c.meta[key] for c in plan[task].clips if c.split == split}

    kws = {split: values("kws", split, "voice") for split in SPLITS}
    assert not (kws["train"] & kws["test"]) and not (kws["train"] & kws["validation"]) and not (kws["validation"] & kws["test"]), "kws voices leak across splits"
    words: dict[tuple[str, str], set[str]] = {}
    for clip in plan["speaker"].clips:
        words.setdefault((clip.label, clip.split), set()).update(clip.meta["words"])
    for (speaker, split), used in words.items():
        if split != "train":
            assert not used & words.get((speaker, "train"), set()), f"speaker {speaker}: {split} words seen in training"
    sounds = {split: values("sounds", split, "program") for split in SPLITS}
    assert not (sounds["train"] & sounds["test"]) and not (sounds["train"] & sounds["validation"]) and not (sounds["validation"] & sounds["test"]), "sounds programs leak across splits"
    unl = plan["unlabeled"].clips
    unl_voices = {c.meta["voice"] for c in unl if c.kind == "speech"} | overlay_voices(unl)
    unl_programs = {c.meta["program"] for c in unl if c.kind == "music"} | overlay_programs(unl)
    speaker_voices = {c.meta["voice"] for c in plan["speaker"].clips}
    held_voices = kws["validation"] | kws["test"] | speaker_voices
    held_programs = sounds["validation"] | sounds["test"]
    assert not unl_voices & held_voices, "unlabeled pool uses held-out voices"
    assert not unl_programs & held_programs, "unlabeled pool uses held-out programs"
    labeled = [c for name in ("kws", "speaker", "sounds") for c in plan[name].clips]
    assert not overlay_voices(labeled) & (held_voices | kws["train"]), "an overlapping event speaks with a task's voice"
    assert not overlay_programs(labeled) & held_programs, "an overlapping event plays a held-out program"


def overlay_voices(clips: list[ClipSpec]) -> set[str]:
    return {c.overlay["voice"] for c in clips if c.overlay and c.overlay["kind"] == "speech"}


def overlay_programs(clips: list[ClipSpec]) -> set[int]:
    return {c.overlay["source"]["program"] for c in clips if c.overlay and c.overlay["kind"] == "music"}
