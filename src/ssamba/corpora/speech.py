"""In-process espeak-ng speech synthesis through ctypes.

The library and its voice data come from the ``espeakng-loader`` wheel (PyPI), so no
system package is needed. espeak-ng is driven in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode: each
:meth:`Espeak.synthesize` call blocks while the library hands 16-bit samples at 22050 Hz to
a Python callback.

Determinism: espeak-ng keeps state in static variables between utterances (e.g. the index
into its pitch "flutter" table) that neither ``espeak_Terminate`` nor a new
``espeak_Initialize`` resets, so an utterance's samples depend on the utterances spoken
before it by the same loaded library. Each :class:`Espeak` therefore loads its *own copy*
of the shared library (a private file, so the dynamic loader maps fresh static data): a
given sequence of utterances from a new :class:`Espeak` always gives the same samples,
whatever else the process has spoken. :mod:`ssamba.corpora.build` uses one per job of
clips, spoken in a fixed order.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .vocab import ACCENTS, VARIANTS

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / espeak_POSITION_TYPE / flags (speak_lib.h)
AUDIO_OUTPUT_SYNCHRONOUS = 2
espeakINITIALIZE_DONT_EXIT = 0x8000
espeakRATE, espeakVOLUME, espeakPITCH, espeakRANGE, espeakWORDGAP = 1, 2, 3, 4, 7
POS_CHARACTER = 1
espeakCHARS_UTF8 = 1
EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a request."""


def _loader():
    from ..errors import require

    return require("espeakng_loader", "the speech corpora (espeak-ng library and voice data)")


def espeak_paths() -> tuple[Path, Path]:
    """``(library, data folder)`` of the espeak-ng bundled by ``espeakng-loader``."""
    loader = _loader()
    return Path(loader.get_library_path()), Path(loader.get_data_path())


def check_voice(accent: str, variant: str, data_path: Path | None = None) -> None:
    """Raise ``EspeakError`` unless ``accent`` and ``variant`` exist in the voice data.

    (espeak-ng silently falls back to its default voice for an unknown variant name.)
    """
    data_path = data_path or espeak_paths()[1]
    if accent not in ACCENTS:
        raise EspeakError(f"unknown accent {accent!r}; known: {', '.join(ACCENTS)}")
    if variant not in VARIANTS or not (data_path / "voices" / "!v" / variant).is_file():
        raise EspeakError(f"espeak-ng voice variant {variant!r} not found in {data_path / 'voices' / '!v'}")


class Espeak:
    """A freshly loaded espeak-ng (its own copy of the library, so its own state).

    >>> tts = Espeak()                                                    # doctest: +SKIP
    >>> audio = tts.synthesize("yes", "en-us", "f3", rate=175, pitch=60)  # doctest: +SKIP
    >>> tts.sample_rate                                                   # doctest: +SKIP
    22050
    """

    def __init__(self):
        lib_path, data_path = espeak_paths()
        if not lib_path.is_file():
            raise EspeakError(f"espeakng-loader's library {lib_path} is missing; reinstall espeakng-loader")
        folder = tempfile.mkdtemp(prefix="ssamba-espeak-")
        private = Path(folder) / lib_path.name
        try:
            shutil.copyfile(lib_path, private)
            lib = ctypes.CDLL(str(private))
        except OSError as err:
            raise EspeakError(f"cannot load espeak-ng from {lib_path}: {err}") from err
        finally:  # the mapping stays valid once loaded (POSIX); elsewhere the copy may linger
            shutil.rmtree(folder, ignore_errors=True)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Terminate.restype = ctypes.c_int
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), espeakINITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data {data_path}")
        self._chunks: list[np.ndarray] = []

        def callback(wav, num_samples, events):  # called from inside espeak_Synth
            if num_samples > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
            return 0  # 0: continue synthesis

        self._callback = _CALLBACK(callback)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        # espeak-ng also draws from its own generator and from libc rand(); seed both per utterance.
        self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is not None:
            self._set_seed.argtypes = [ctypes.c_long]
        self._libc_srand = getattr(ctypes.CDLL(None), "srand", None)
        self.lib = lib
        self.data_path = data_path
        self.sample_rate = int(rate)
        self.version = lib.espeak_Info(None).decode()
        self.utterances = 0

    def close(self) -> None:
        """Free espeak-ng's data and unload this copy of the library."""
        lib, self.lib = getattr(self, "lib", None), None
        if lib is None:
            return
        lib.espeak_Terminate()
        try:
            import _ctypes

            _ctypes.dlclose(lib._handle)
        except (ImportError, AttributeError, OSError):  # pragma: no cover - not POSIX
            pass

    def __enter__(self) -> "Espeak":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _param(self, parameter: int, value: int) -> None:
        err = self.lib.espeak_SetParameter(parameter, int(value), 0)
        if err != EE_OK:
            raise EspeakError(f"espeak_SetParameter({parameter}, {value}) failed ({err})")

    def synthesize(
        self,
        text: str,
        accent: str,
        variant: str,
        rate: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        volume: int = 60,
        word_gap: int = 0,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak ``text`` as ``accent+variant``; float32 samples in [-1, 1] at :attr:`sample_rate`.

        ``rate`` is in words per minute (80-450), ``pitch`` and ``pitch_range`` are espeak's
        0-100 settings (relative to the voice's own pitch), ``volume`` 0-200 (60 keeps loud
        variants from clipping), ``word_gap`` adds pauses of 10 ms units between words.
        """
        if self.lib is None:
            raise EspeakError("this Espeak was closed")
        check_voice(accent, variant, self.data_path)
        err = self.lib.espeak_SetVoiceByName(f"{accent}+{variant}".encode())
        if err != EE_OK:
            raise EspeakError(f"espeak_SetVoiceByName({accent}+{variant}) failed ({err})")
        self._param(espeakRATE, rate)
        self._param(espeakPITCH, pitch)
        self._param(espeakRANGE, pitch_range)
        self._param(espeakVOLUME, volume)
        self._param(espeakWORDGAP, word_gap)
        if self._set_seed is not None:
            self._set_seed(int(seed) & 0x7FFFFFFF)
        if self._libc_srand is not None:
            self._libc_srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, espeakCHARS_UTF8, None, None)
        if err != EE_OK:
            raise EspeakError(f"espeak_Synth failed ({err}) for {text!r} with voice {accent}+{variant}")
        self.utterances += 1
        if not self._chunks:
            raise EspeakError(f"espeak-ng produced no audio for {text!r} with voice {accent}+{variant}")
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        self._chunks = []
        return audio
