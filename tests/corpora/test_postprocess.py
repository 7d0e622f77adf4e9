"""Clip post-processing of the suite: synthetic rooms, overlapping events, noise, level."""

from __future__ import annotations

import numpy as np
import pytest

from ssamba.corpora.postprocess import PEAK_LIMIT, active_gain, convolve, finish_clip, room_impulse, rms

RATE = 16000


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("rt60,drr_db", [(0.3, 0.0), (0.8, 9.0)])
def test_room_impulse_decay_and_direct_to_reverberant_ratio(rt60, drr_db):
    ir = room_impulse(rt60, drr_db, 4000.0, RATE, np.random.default_rng(0)).astype(np.float64)
    assert ir[0] == 1.0 and ir.shape[0] == int(0.0025 * RATE) + int(rt60 * RATE)
    tail = ir[1:]
    assert 10 * np.log10(1.0 / np.sum(tail**2)) == pytest.approx(drr_db, abs=1e-6)
    # energy in the last tenth of the tail is about 60 dB * 0.1 below the first tenth's
    tenth = tail.shape[0] // 10
    drop = 10 * np.log10(np.sum(tail[:tenth] ** 2) / np.sum(tail[-tenth:] ** 2))
    assert 40 < drop < 65, drop
    with pytest.raises(ValueError, match="rt60"):
        room_impulse(0.0, 0.0, 4000.0, RATE, np.random.default_rng(0))


def test_room_impulse_is_low_passed():
    ir = room_impulse(0.5, 0.0, 1000.0, RATE, np.random.default_rng(1))[int(0.0025 * RATE):].astype(np.float64)
    power = np.abs(np.fft.rfft(ir)) ** 2
    freqs = np.fft.rfftfreq(ir.shape[0], 1 / RATE)
    assert power[freqs < 1000].mean() > 10 * power[freqs > 5000].mean()


def test_convolve_matches_numpy():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(77).astype(np.float32)
    np.testing.assert_allclose(convolve(a, b), np.convolve(a, b), atol=1e-4)


def test_finish_clip_level_overlay_and_reverb():
    length = RATE
    source, other = _tone(0.4), _tone(1.2, 1500.0)
    dry = finish_clip(source, length, 0.5, -20.0, None, 0.0, RATE, 0)
    active = dry[np.abs(dry) > 1e-6]
    assert 20 * np.log10(rms(active)) == pytest.approx(-20.0, abs=0.1)
    assert np.all(dry[: int(0.2 * RATE)] == 0)  # placed in the middle of the free room
    mixed = finish_clip(source, length, 0.5, -20.0, None, 0.0, RATE, 0, overlay=other, overlay_db=-12.0, overlay_position=0.0)
    residual = mixed - dry  # the overlay alone, 12 dB under the source
    assert 20 * np.log10(rms(residual)) == pytest.approx(-32.0, abs=0.05)  # it fills the whole clip
    wet = finish_clip(source, length, 0.0, -20.0, None, 0.0, RATE, 0, reverb={"rt60": 0.6, "drr_db": 0.0, "lowpass_hz": 4000.0})
    end = int(0.4 * RATE)
    assert np.all(finish_clip(source, length, 0.0, -20.0, None, 0.0, RATE, 0)[end + 10 :] == 0)  # dry: silence after
    assert rms(wet[end + 10 : end + 2000]) > 1e-3  # the tail rings on after the source stopped
    assert wet.shape == (length,) and np.abs(wet).max() <= PEAK_LIMIT + 1e-6


def test_finish_clip_is_a_function_of_its_seed():
    source = _tone(0.5)
    kwargs = dict(reverb={"rt60": 0.4, "drr_db": 3.0, "lowpass_hz": 3000.0})
    a = finish_clip(source, RATE, 0.2, -25.0, "pink", 10.0, RATE, 7, **kwargs)
    b = finish_clip(source, RATE, 0.2, -25.0, "pink", 10.0, RATE, 7, **kwargs)
    c = finish_clip(source, RATE, 0.2, -25.0, "pink", 10.0, RATE, 8, **kwargs)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_silent_sources_are_errors():
    with pytest.raises(ValueError, match="silent"):
        active_gain(np.zeros(100, np.float32), -20.0)
    with pytest.raises(ValueError, match="silent"):
        finish_clip(_tone(0.3), RATE, 0.0, -20.0, None, 0.0, RATE, 0, overlay=np.zeros(10, np.float32))
