"""The offline audio suite: determinism, split disjointness, audio sanity, manifests, cache, CLI.

Builds the "mini" suite (a few voices, words and notes) twice; needs espeakng-loader,
tinysoundfont and the SoundFont from scripts/setup.sh (apt package fluidr3mono-gm-soundfont).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ssamba.corpora import (
    KWS_WORDS,
    SPLITS,
    TASKS,
    Espeak,
    SoundFontNotFound,
    build_suite,
    find_soundfont,
    format_stats,
    get_scale,
    load_suite,
    make_plan,
)
from ssamba.corpora import music
from ssamba.corpora.cli import add_corpus_parser
from ssamba.corpora.plan import ScaleSpec, check_plan
from ssamba.corpora.speech import EspeakError, check_voice
from ssamba.data import read_label_csv, read_manifest

pytestmark = pytest.mark.slow  # synthesises a suite


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file of a suite except suite.json (which records the build time)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("suite.json", ".lock")
    }


def _metadata(suite, task: str) -> list[dict]:
    with open(suite.tasks[task].metadata, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """The mini suite built twice, with one and with two worker processes."""
    try:
        find_soundfont()
    except SoundFontNotFound as err:
        pytest.fail(f"the corpus tests need the General MIDI SoundFont: {err}")
    base = tmp_path_factory.mktemp("corpora")
    one = build_suite(base / "one", seed=0, scale="mini", progress=False, workers=1)
    two = build_suite(base / "two", seed=0, scale="mini", progress=False, workers=2)
    return one, two


def test_same_seed_same_bytes(suites):
    one, two = suites
    assert one.fingerprint == two.fingerprint
    first, second = _digest(one.root), _digest(two.root)
    assert len([k for k in first if k.endswith(".flac")]) == sum(t.total_clips for t in one.tasks.values())
    assert first == second, [k for k in first if first[k] != second.get(k)][:5]


def test_cache_is_reused_and_untouched(suites):
    one, _ = suites
    before = {p: p.stat().st_mtime_ns for p in one.root.rglob("*.flac")}
    again = build_suite(one.root, seed=0, scale="mini", progress=False)
    assert again.reused and again.fingerprint == one.fingerprint
    assert {p: p.stat().st_mtime_ns for p in one.root.rglob("*.flac")} == before
    assert load_suite(one.root).tasks.keys() == one.tasks.keys()


def test_cache_rejects_other_seed_and_incomplete_builds(suites, tmp_path):
    one, _ = suites
    spec = ScaleSpec("tiny", kws_words=2, kws_voices=(1, 1, 1), kws_takes=(1, 1, 1), speaker_variants=1,
                     speaker_bands=2, speaker_clips=(1, 1, 1), sound_families=2, sound_programs=(1, 1, 1),
                     sound_clips=(1, 1, 1), unlabeled_speech=(1, 1, 1), unlabeled_music=(1, 1, 1), job_size=8)
    first = build_suite(tmp_path, seed=3, scale=spec, progress=False, workers=1)
    assert not first.reused
    victim = next((tmp_path / "kws" / "train").glob("*.flac"))
    victim.unlink()  # a damaged cache is rebuilt, not trusted
    second = build_suite(tmp_path, seed=3, scale=spec, progress=False, workers=1)
    assert not second.reused and victim.is_file()
    third = build_suite(tmp_path, seed=4, scale=spec, progress=False, workers=1)
    assert not third.reused and third.fingerprint != first.fingerprint


def test_other_seed_other_plan():
    a, b = make_plan(0, "mini"), make_plan(1, "mini")
    assert [c.record() for c in a["kws"].clips] != [c.record() for c in b["kws"].clips]


def test_kws_voices_disjoint(suites):
    rows = _metadata(suites[0], "kws")
    voices = {split: {r["meta"]["voice"] for r in rows if r["split"] == split} for split in SPLITS}
    variants = {split: {v.split("+")[1] for v in voices[split]} for split in SPLITS}
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        assert not voices[a] & voices[b] and not variants[a] & variants[b]
    assert all(voices.values())
    assert {r["label"] for r in rows} <= set(KWS_WORDS)
    assert all(r["source"]["text"] == r["label"] for r in rows)


def test_speaker_test_words_unseen_for_that_speaker(suites):
    rows = _metadata(suites[0], "speaker")
    words = defaultdict(set)
    for r in rows:
        words[r["label"], r["split"]].update(r["meta"]["words"])
        assert r["source"]["text"].split() == r["meta"]["words"]
    speakers = {r["label"] for r in rows}
    for speaker in speakers:
        assert words[speaker, "train"] and words[speaker, "test"]
        assert not words[speaker, "test"] & words[speaker, "train"]
        assert not words[speaker, "validation"] & words[speaker, "train"]
    # every speaker is in every split (closed-set identification)
    assert all({r["label"] for r in rows if r["split"] == split} == speakers for split in SPLITS)
    # two pitch bands per voice variant: distinct speakers
    assert len(speakers) == 2 * len({r["meta"]["voice"] for r in rows})


def test_sounds_programs_disjoint(suites):
    rows = _metadata(suites[0], "sounds")
    programs = {split: {r["source"]["program"] for r in rows if r["split"] == split} for split in SPLITS}
    for a, b in (("train", "test"), ("train", "validation"), ("validation", "test")):
        assert not programs[a] & programs[b]
    for r in rows:  # the label is the program's GM family
        assert r["label"] == r["meta"]["family"]
        assert r["source"]["program"] in music_family_programs(r["label"])


def music_family_programs(family: str) -> tuple[int, ...]:
    from ssamba.corpora.vocab import GM_FAMILIES

    return GM_FAMILIES[family][0]


def test_unlabeled_pool_is_free_of_held_out_items(suites):
    suite = suites[0]
    held_voices = {r["meta"]["voice"] for r in _metadata(suite, "kws") if r["split"] != "train"}
    held_voices |= {r["meta"]["voice"] for r in _metadata(suite, "speaker")}
    held_programs = {r["source"]["program"] for r in _metadata(suite, "sounds") if r["split"] != "train"}
    rows = _metadata(suite, "unlabeled")
    assert {r["kind"] for r in rows} == {"speech", "music"}
    assert not {r["meta"]["voice"] for r in rows if r["kind"] == "speech"} & held_voices
    assert not {r["source"]["program"] for r in rows if r["kind"] == "music"} & held_programs


def test_audio_sanity(suites):
    suite = suites[0]
    spec = get_scale("mini")
    for task in TASKS:
        expected = int(16000 * (spec.kws_seconds if task == "kws" else spec.clip_seconds))
        for split in SPLITS:
            for entry in read_manifest(suite.manifest(task, split)):
                audio, rate = soundfile.read(entry.wav, dtype="float32", always_2d=True)
                assert rate == 16000 and audio.shape == (expected, 1), (entry.wav, rate, audio.shape)
                audio = audio[:, 0]
                peak = float(np.abs(audio).max())
                level = 20 * np.log10(float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))
                assert 0.01 < peak <= 0.99, (entry.wav, peak)
                assert level > -50.0, (entry.wav, level)


def test_manifests_and_labels_consistent(suites):
    suite = suites[0]
    for task in TASKS:
        labels = read_label_csv(suite.label_csv(task))
        assert labels.num_classes == suite.tasks[task].classes
        rows = {r["wav"]: r for r in _metadata(suite, task)}
        seen = set()
        for split in SPLITS:
            entries = read_manifest(suite.manifest(task, split))
            assert len(entries) == suite.tasks[task].clips[split] > 0
            for entry in entries:
                assert Path(entry.wav).is_file()
                assert len(entry.labels) == 1 and entry.labels[0] in labels
                rel = Path(entry.wav).relative_to(suite.tasks[task].directory).as_posix()
                assert rows[rel]["label"] == entry.labels[0] and rows[rel]["split"] == split
                labels.encode(entry)  # no unknown label
                seen.add(entry.labels[0])
        assert seen == set(labels.ids), f"{task}: classes without clips"
    # manifests use relative paths (the cache folder can move)
    with open(suite.manifest("kws", "train"), encoding="utf-8") as f:
        assert not Path(json.load(f)["data"][0]["wav"]).is_absolute()


def test_stats_table(suites):
    suite = suites[0]
    rows = suite.stats()
    assert [r["task"] for r in rows] == list(TASKS)
    kws = rows[0]
    assert kws["classes"] == 4 and kws["clips"] == kws["train"] + kws["validation"] + kws["test"]
    assert kws["hours"] == pytest.approx(kws["clips"] * 1.0 / 3600)
    table = format_stats(rows)
    assert "kws" in table and "unlabeled" in table and "hours" in table


def test_default_and_quick_plans():
    for name, kws_voices in (("default", (40, 8, 12)), ("quick", (10, 3, 4))):
        plan = make_plan(0, name)
        check_plan(plan)
        assert len(plan["kws"].label_ids) == 35
        assert len({c.meta["voice"] for c in plan["kws"].clips if c.split == "test"}) == kws_voices[2]
        assert len(plan["sounds"].label_ids) == 8
    default = make_plan(0, "default")
    assert len(default["speaker"].label_ids) == 36
    assert 3000 <= sum(c.split == "train" for c in default["kws"].clips) <= 6000
    assert 3000 <= len(default["unlabeled"].clips) <= 6000


def test_soundfont_errors(monkeypatch, tmp_path):
    monkeypatch.delenv(music.SOUNDFONT_ENV, raising=False)
    monkeypatch.setattr(music, "SOUNDFONT_PATHS", (str(tmp_path / "none.sf3"),))
    with pytest.raises(SoundFontNotFound, match="apt-get install fluidr3mono-gm-soundfont"):
        music.find_soundfont()
    monkeypatch.setenv(music.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
    with pytest.raises(SoundFontNotFound, match="SSAMBA_SOUNDFONT"):
        music.find_soundfont()


def test_espeak_in_process():
    with Espeak() as tts:
        a = tts.synthesize("seven", "en-us", "m3", rate=175, pitch=50)
        assert tts.sample_rate == 22050 and a.dtype == np.float32
        assert 0.2 < a.shape[0] / tts.sample_rate < 1.5 and 0.05 < np.abs(a).max() <= 1.0
    with Espeak() as again:  # a fresh instance starts from the same state
        assert np.array_equal(again.synthesize("seven", "en-us", "m3", rate=175, pitch=50), a)
    with pytest.raises(EspeakError, match="variant"):
        check_voice("en", "no-such-variant")
    with pytest.raises(EspeakError, match="accent"):
        check_voice("xx", "m3")


def test_cli_build_reuses(suites, capsys):
    parser = argparse.ArgumentParser(prog="ssamba")
    add_corpus_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["corpus", "build", "--root", str(suites[0].root), "--scale", "mini", "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "reused" in out and "kws" in out and "speaker" in out


def test_plans_have_rooms_and_overlapping_events():
    plan = make_plan(0, "default")
    spec = get_scale("default")
    for name, task in plan.items():
        clips = task.clips
        reverb = np.mean([c.reverb is not None for c in clips])
        overlay = np.mean([c.overlay is not None for c in clips])
        assert abs(reverb - spec.reverb_prob) < 0.05 and abs(overlay - spec.overlap_prob) < 0.05, (name, reverb, overlay)
        for clip in clips:  # the overlapping event is of the other kind: the label is not mixed up
            assert clip.overlay is None or clip.overlay["kind"] != clip.kind
    dry = make_plan(0, ScaleSpec("dry", reverb_prob=0.0, overlap_prob=0.0))
    assert all(c.reverb is None and c.overlay is None for task in dry.values() for c in task.clips)
    with pytest.raises(ValueError, match="overlap_prob"):
        ScaleSpec("bad", overlap_prob=1.5)


def test_check_plan_catches_a_leaking_overlay():
    plan = make_plan(0, "mini")
    test_voice = next(c for c in plan["kws"].clips if c.split == "test")
    victim = next(c for c in plan["sounds"].clips)
    victim.overlay = {"kind": "speech", "voice": test_voice.meta["voice"], "source": {}, "db": -10.0, "position": 0.0, "seed": 0}
    with pytest.raises(AssertionError, match="overlapping event"):
        check_plan(plan)


def test_mini_suite_has_reverberant_and_overlapped_clips(suites):
    rows = [r for task in TASKS for r in _metadata(suites[0], task)]
    assert any(r["reverb"] for r in rows) and any(r["overlay"] for r in rows)
