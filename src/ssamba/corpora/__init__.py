"""The offline audio suite: synthetic speech, instrument notes and noise as SSAST manifests.

``build_suite(root, seed=0, scale="default")`` synthesises four tasks, deterministically
from the seed, into ``root/<task>/{train,validation,test}.json`` + ``labels.csv``:

- ``kws``: the 35 Speech Commands words, 1 s clips, test voices never heard in training;
- ``speaker``: speaker identification (speaker = espeak-ng voice variant x pitch band),
  test words never said by that speaker in training;
- ``sounds``: General MIDI instrument family of notes and phrases, test programs never
  heard in training;
- ``unlabeled``: the pretraining pool (sentences and phrases), free of the held-out voices
  and programs.

Speech comes from espeak-ng in-process (``espeakng-loader``), instruments from a General
MIDI SoundFont rendered with ``tinysoundfont`` (Debian package ``fluidr3mono-gm-soundfont``
or ``$SSAMBA_SOUNDFONT``); background noise, level and speed jitter are drawn per clip.

Names are imported on first use, so ``ssamba corpus --help`` (via :mod:`ssamba.corpora.cli`)
imports no numpy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Suite": "build",
    "TaskFiles": "build",
    "build_suite": "build",
    "code_hash": "build",
    "default_root": "build",
    "format_stats": "build",
    "load_suite": "build",
    "suite_stats": "build",
    "synthesize_clip": "build",
    "SOUNDFONT_APT_PACKAGE": "music",
    "SOUNDFONT_ENV": "music",
    "Renderer": "music",
    "SoundFontNotFound": "music",
    "find_soundfont": "music",
    "SAMPLE_RATE": "plan",
    "SCALES_BY_NAME": "plan",
    "SPLITS": "plan",
    "TASKS": "plan",
    "ClipSpec": "plan",
    "ScaleSpec": "plan",
    "get_scale": "plan",
    "make_plan": "plan",
    "Espeak": "speech",
    "EspeakError": "speech",
    "KWS_WORDS": "vocab",
    "SOUND_FAMILIES": "vocab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


