"""General MIDI notes and phrases rendered from a SoundFont with ``tinysoundfont``.

The SoundFont is never shipped with ssamba: it is installed from Debian/Ubuntu
(``apt-get install fluidr3mono-gm-soundfont``: FluidR3Mono_GM.sf3, MIT licence, ~19 MB) by
``scripts/setup.sh``, or named with ``SSAMBA_SOUNDFONT=/path/to/font.sf2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOUNDFONT_ENV = "SSAMBA_SOUNDFONT"
SOUNDFONT_APT_PACKAGE = "fluidr3mono-gm-soundfont"
#: Where Debian/Ubuntu put the SoundFont of :data:`SOUNDFONT_APT_PACKAGE`.
SOUNDFONT_PATHS: tuple[str, ...] = (
    "/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
    "/usr/share/fluidr3mono-gm-soundfont/FluidR3Mono_GM.sf3",
)
#: Rendering rate; the clips are resampled from it to 16 kHz (anti-aliased by soxr).
RENDER_RATE = 48000


class SoundFontNotFound(FileNotFoundError):
    """No General MIDI SoundFont was found."""


def find_soundfont() -> Path:
    """Path of the SoundFont: ``$SSAMBA_SOUNDFONT`` if set, else the Debian package's file.

    Raises :class:`SoundFontNotFound` saying how to install one.
    """
    override = os.environ.get(SOUNDFONT_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise SoundFontNotFound(f"${SOUNDFONT_ENV}={override!r} is not a file")
        return path
    for candidate in SOUNDFONT_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise SoundFontNotFound(
        "no General MIDI SoundFont found for the 'sounds' corpora (looked at "
        f"{', '.join(SOUNDFONT_PATHS)}). Install it with "
        f"'sudo apt-get install {SOUNDFONT_APT_PACKAGE}' (FluidR3Mono GM, MIT licence; "
        f"scripts/setup.sh does this), or point ${SOUNDFONT_ENV} at a GM .sf2/.sf3 file."
    )


def soundfont_identity(path: Path) -> dict:
    """What identifies the SoundFont's content in the suite fingerprint (name and size)."""
    resolved = Path(path).resolve()
    return {"name": resolved.name, "bytes": resolved.stat().st_size}


@dataclass(frozen=True)
class Note:
    """One note: onset and duration in seconds, MIDI key 0-127, velocity 1-127."""

    onset: float
    key: int
    velocity: int
    duration: float


class Renderer:
    """A ``tinysoundfont`` synthesiser with the SoundFont loaded (a few seconds for an sf3).

    Renders are deterministic: every :meth:`render` starts from all sounds off.
    """

    def __init__(self, path: Path | None = None, sample_rate: int = RENDER_RATE):
        from ..errors import require

        tinysoundfont = require("tinysoundfont", "the 'sounds' corpora (SoundFont notes)")
        self.path = Path(path) if path is not None else find_soundfont()
        self.sample_rate = sample_rate
        self.synth = tinysoundfont.Synth(gain=0.0, samplerate=sample_rate)
        try:
            self.sfid = self.synth.sfload(str(self.path))
        except Exception as err:
            raise ValueError(f"tinysoundfont cannot read the SoundFont {str(self.path)!r}: {err}") from err

    def preset_name(self, program: int) -> str | None:
        return self.synth.sfpreset_name(self.sfid, 0, program)

    def render(self, program: int, notes: list[Note], num_samples: int) -> np.ndarray:
        """Mono float32 ``(num_samples,)`` at :attr:`sample_rate` of ``notes`` on GM ``program``."""
        synth = self.synth
        synth.sounds_off()
        synth.generate(self.sample_rate // 10)  # let the quick release of stopped voices finish
        synth.program_select(0, self.sfid, 0, int(program))
        events = []
        for note in notes:
            on = int(round(note.onset * self.sample_rate))
            off = int(round((note.onset + note.duration) * self.sample_rate))
            events.append((on, 1, note.key, note.velocity))
            events.append((off, 0, note.key, 0))
        events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same sample
        out = np.zeros(num_samples, dtype=np.float32)
        pos = 0
        for when, is_on, key, velocity in events + [(num_samples, -1, 0, 0)]:
            when = min(when, num_samples)
            if when > pos:
                block = np.frombuffer(synth.generate(when - pos), dtype=np.float32)
                out[pos:when] = (block[0::2] + block[1::2]) * np.float32(0.5)
                pos = when
            if is_on == 1:
                synth.noteon(0, int(key), int(velocity))
            elif is_on == 0:
                synth.noteoff(0, int(key))
        synth.sounds_off()
        return out
