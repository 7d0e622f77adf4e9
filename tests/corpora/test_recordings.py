"""The pool's real recordings: finding a package's files, cutting them into clips, the
splits by file, the caps, the cache, and the catalogue's own promises."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ssamba.corpora import recordings
from ssamba.corpora.recordings import CATALOGUE, Source, audible_windows, build_recordings, read_recording, spread
from ssamba.data import read_manifest

RATE = 16000
CLIP = int(recordings.CLIP_SECONDS * RATE)



def _tone(seconds: float, rate: int = RATE, level: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _package(tmp_path: Path, name: str, files: dict[str, np.ndarray], rate: int = 22050) -> Path:
    root = tmp_path / "pkgs" / name
    for rel, audio in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, audio, rate, format="OGG", subtype="VORBIS")
    return root


@pytest.fixture()
def speech_source(tmp_path):
    files = {f"usr/share/voice/{i:02d}.ogg": _tone(1.0 + i * 0.7, 22050, seed=i) for i in range(10)}
    silent = np.zeros(int(3 * 22050), np.float32)
    files["usr/share/voice/zz-silent.ogg"] = silent
    root = _package(tmp_path, "voice-pkg", files)
    source = Source("voice", "voice-pkg", "speech", ("usr/share/voice/*.ogg",), "GPL-2", "test voices", 1.0)
    return source, root


def test_catalogue_is_well_formed_and_the_only_list_of_packages():
    assert len({s.name for s in CATALOGUE}) == len(CATALOGUE)
    assert {s.kind for s in CATALOGUE} == set(recordings.KINDS)  # speech, music and effects all present
    for source in CATALOGUE:
        assert source.licence and source.description and source.max_hours > 0
        assert all(not pattern.startswith("/") for pattern in source.patterns)
    # setup.sh fetches exactly the catalogue's packages, named in one place
    assert "from ssamba.corpora.recordings import PACKAGES" in Path("scripts/setup.sh").read_text()


def test_windows_skip_silence_and_short_files_make_one_clip():
    audio = np.concatenate([_tone(1.5), np.zeros(CLIP, np.float32), _tone(1.6)])
    assert audible_windows(audio, CLIP) == [0, 2 * CLIP]
    assert audible_windows(_tone(0.4), CLIP) == [0]
    assert audible_windows(np.zeros(RATE, np.float32), CLIP) == []
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1, 2], 5) == [1, 2]


def test_headerless_source_is_read_at_its_rate(tmp_path):
    raw = (128 + 100 * np.sin(np.arange(11025) / 5)).astype(np.uint8)
    path = tmp_path / "A1.ALS"
    path.write_bytes(b"h" * 32 + raw.tobytes() + b"t" * 64)
    source = Source("raw", "raw-pkg", "speech", ("*.ALS",), "x", "x", 1.0, raw_rate=11025, raw_trim=(32, 64))
    audio = read_recording(path, source)
    assert audio.dtype == np.float32 and abs(audio.shape[0] - RATE) <= 2  # one second at 16 kHz
    assert np.abs(audio).max() < 1.0 and np.abs(audio).max() > 0.5
    middle = read_recording(path, source, max_seconds=0.25)
    assert abs(middle.shape[0] - RATE // 4) <= 2


def test_pool_is_cut_split_by_file_capped_and_cached(tmp_path, speech_source):
    source, root = speech_source
    absent = Source("gone", "gone-pkg", "music", ("*.ogg",), "x", "x", 1.0)
    catalogue = (source, absent)
    roots = {"voice-pkg": [root], "gone-pkg": [tmp_path / "nowhere"]}
    out = tmp_path / "pool"
    pool = build_recordings(out, seed=3, progress=False, catalogue=catalogue, roots=roots)
    assert pool is not None and not pool.reused
    (row,) = pool.sources
    assert row["source"] == "voice" and row["files"] == 11 and row["licence"] == "GPL-2"
    train, valid = (read_manifest(pool.manifests[s]) for s in ("train", "validation"))
    assert (len(train), len(valid)) == (row["train"], row["validation"])
    # every audible 1.5 s window of the ten tones (1.0 s to 7.3 s: 1+1+1+2+2+3+3+3+4+4),
    # none of the silent file; one whole file (at most 4 windows) held out for validation
    assert row["train"] + row["validation"] == 24 and row["validation"] <= 4
    assert {Path(e.wav).parent.name for e in train} == {"train"}
    assert {Path(e.wav).parent.name for e in valid} <= {"validation"}
    for entry in train + valid:
        audio, rate = soundfile.read(entry.wav)
        assert rate == RATE and audio.shape[0] <= CLIP and np.sqrt(np.mean(audio ** 2)) > 0.01
        assert entry.labels == ("speech",)
    assert abs(pool.hours - sum(soundfile.info(e.wav).duration for e in train + valid) / 3600) < 1e-6
    assert pool.missing == ["gone-pkg"]
    again = build_recordings(out, seed=3, progress=False, catalogue=catalogue, roots=roots)
    assert again.reused and again.sources == pool.sources and again.fingerprint == pool.fingerprint
    other_seed = build_recordings(tmp_path / "pool2", seed=4, progress=False, catalogue=catalogue, roots=roots)
    assert other_seed.fingerprint != pool.fingerprint
    four_clips = replace(source, max_hours=4 * recordings.CLIP_SECONDS / 3600)
    capped = build_recordings(tmp_path / "capped", seed=3, progress=False, roots=roots, catalogue=(four_clips,))
    assert capped.sources[0]["train"] == 4
    table = pool.table()
    assert "voice" in table and "GPL-2" in table and "total" in table
    assert json.loads((out / recordings.RECORDED_FILE).read_text())["sources"] == pool.sources


def test_nothing_found_gives_none(tmp_path):
    absent = Source("gone", "gone-pkg", "music", ("*.ogg",), "x", "x", 1.0)
    assert build_recordings(tmp_path / "p", catalogue=(absent,), roots={}, progress=False) is None


def test_unknown_scale_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown scale"):
        build_recordings(tmp_path, scale="huge")


def test_demo_pool_joins_the_recordings_or_says_it_has_none(tmp_path, monkeypatch, capsys, speech_source):
    from types import SimpleNamespace

    from ssamba import demo
    from ssamba.data import ClipEntry, write_manifest

    synthetic = {}
    for split in ("train", "validation"):
        synthetic[split] = tmp_path / "suite" / f"{split}.json"
        synthetic[split].parent.mkdir(exist_ok=True)
        write_manifest([ClipEntry(wav=f"/synthetic/{split}/{i}.flac", labels=("speech",)) for i in range(3)],
                       synthetic[split])
    suite = SimpleNamespace(seed=0, manifest=lambda task, split: synthetic[split])
    settings = demo.MODES["quick"]
    monkeypatch.setattr(recordings, "build_recordings", lambda *a, **k: None)
    pool = demo.pretraining_pool(suite, settings, tmp_path / "out")
    assert (pool.name, pool.train, pool.valid) == ("synthetic", synthetic["train"], synthetic["validation"])
    assert capsys.readouterr().out.count("no real recordings found") == 1

    source, root = speech_source
    real = build_recordings(tmp_path / "rec", catalogue=(source,), roots={"voice-pkg": [root]}, progress=False)
    monkeypatch.setattr(recordings, "build_recordings", lambda *a, **k: real)
    pool = demo.pretraining_pool(suite, settings, tmp_path / "out")
    assert pool.name == "synthetic+recorded" and pool.recorded is real
    for split, path in (("train", pool.train), ("validation", pool.valid)):
        wavs = [e.wav for e in read_manifest(path)]
        assert wavs[:3] == [f"/synthetic/{split}/{i}.flac" for i in range(3)]
        assert wavs[3:] == [e.wav for e in read_manifest(real.manifests[split])]


def test_files_shorter_than_a_quarter_second_give_no_clip():
    assert audible_windows(_tone(0.2), CLIP) == [] and audible_windows(_tone(0.3), CLIP) == [0]
