"""Dataset layouts -> manifests: tiny fake copies of each layout in its real folder structure."""

import csv
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ssamba.cli import _LAYOUTS, main
from ssamba.data import (
    LAYOUTS,
    ClipDataset,
    ClipDatasetConfig,
    LabelMap,
    MissingAudioWarning,
    prepare,
    read_label_csv,
    read_layout,
    read_manifest,
)
from ssamba.data.layouts import KS12_CLASSES, SPEECHCOMMANDS_V1_WORDS, SPEECHCOMMANDS_V2_WORDS
from ssamba.frontend import FrontendConfig

RATE = 16000


def write_clip(path: Path, seconds: float = 0.1, rate: int = RATE, channels: int = 1, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * rate)
    rng = np.random.default_rng(seed)
    data = 0.1 * rng.standard_normal((n, channels)) if channels > 1 else 0.1 * rng.standard_normal(n)
    soundfile.write(path, data, rate)
    return path


def manifest_paths(path: Path) -> list[str]:
    return [e.wav for e in read_manifest(path)]


# ----------------------------------------------------------------------------- ESC-50


@pytest.fixture
def esc50(tmp_path):
    """5 folds x 3 categories, one clip each; fold 2's dog clip is 44.1 kHz stereo."""
    root = tmp_path / "ESC-50-master"
    rows = []
    categories = ["dog", "rooster", "rain"]
    for fold in range(1, 6):
        for target, category in enumerate(categories):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            stereo = fold == 2 and category == "dog"
            write_clip(root / "audio" / name, rate=44100 if stereo else RATE, channels=2 if stereo else 1)
            rows.append([name, fold, target, category, "False", 100 + target, "A"])
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def test_esc50_gives_five_cross_validation_folds(esc50, tmp_path):
    out = tmp_path / "out"
    summary = prepare("esc50", esc50, out)
    assert set(summary) == {f"fold{k}_{s}" for k in range(1, 6) for s in ("train", "test")}
    for k in range(1, 6):
        assert summary[f"fold{k}_train"] == {"clips": 12, "classes": 3, "skipped": 0}
        assert summary[f"fold{k}_test"] == {"clips": 3, "classes": 3, "skipped": 0}
        test = manifest_paths(out / f"fold{k}_test.json")
        train = manifest_paths(out / f"fold{k}_train.json")
        assert all(Path(p).name.startswith(f"{k}-") for p in test)
        assert not any(Path(p).name.startswith(f"{k}-") for p in train)
        assert not set(test) & set(train)
    labels = read_label_csv(out / "labels.csv")
    assert labels.ids == ("dog", "rooster", "rain")  # ordered by target index
    entries = read_manifest(out / "fold1_test.json")
    assert [e.labels for e in entries] == [("dog",), ("rooster",), ("rain",)]
    # the manifest is usable as is, 44.1 kHz stereo file included
    stereo = [e for e in read_manifest(out / "fold1_train.json") if Path(e.wav).name.startswith("2-100")]
    item = ClipDataset(stereo, ClipDatasetConfig(frontend=FrontendConfig(target_length=16)), labels)[0]
    assert item is not None and item["target"].tolist() == [1.0, 0.0, 0.0]


def test_esc50_missing_meta_names_the_file_and_the_layout(esc50, tmp_path):
    (esc50 / "meta" / "esc50.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"esc50\.csv.*esc50 layout expects"):
        prepare("esc50", esc50, tmp_path / "out")


def test_esc50_missing_audio_is_skipped_with_a_count(esc50, tmp_path):
    (esc50 / "audio" / "3-101-A-1.wav").unlink()
    with pytest.warns(MissingAudioWarning, match="skipped 1 clip"):
        summary = prepare("esc50", esc50, tmp_path / "out")
    assert summary["fold3_test"] == {"clips": 2, "classes": 2, "skipped": 1}
    assert summary["fold1_train"]["clips"] == 11 and summary["fold1_train"]["skipped"] == 1
    assert summary["fold1_test"]["skipped"] == 0


# ----------------------------------------------------------------------------- Speech Commands


def make_speechcommands(root: Path, words, per_word: int = 3) -> Path:
    """``per_word`` clips per word (speaker s0..); clip 0 of each word in validation, clip 1 in test."""
    valid, test = [], []
    for w, word in enumerate(words):
        for n in range(per_word):
            rel = f"{word}/s{n}ab{w:02d}_nohash_0.wav"
            write_clip(root / rel, seed=w * 10 + n)
            (valid if n == 0 else test if n == 1 else []).append(rel)
    for name in ("white_noise.wav", "running_tap.wav"):
        write_clip(root / "_background_noise_" / name, seconds=3.0, seed=99)
    (root / "_background_noise_" / "README.md").write_text("noise")
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


def test_speechcommands_v2_splits_by_the_lists(tmp_path):
    root = make_speechcommands(tmp_path / "sc2", ["yes", "backward", "zero"])
    out = tmp_path / "out"
    summary = prepare("speechcommands", root, out)
    assert summary == {
        "train": {"clips": 3, "classes": 3, "skipped": 0},
        "validation": {"clips": 3, "classes": 3, "skipped": 0},
        "test": {"clips": 3, "classes": 3, "skipped": 0},
    }
    labels = read_label_csv(out / "labels.csv")
    assert labels.ids == SPEECHCOMMANDS_V2_WORDS and len(labels) == 35  # all words, even absent ones
    valid = read_manifest(out / "validation.json")
    assert {Path(e.wav).name.split("_")[0] for e in valid} == {"s0ab00", "s0ab01", "s0ab02"}
    assert {e.labels for e in valid} == {("yes",), ("backward",), ("zero",)}
    every = [p for s in summary for p in manifest_paths(out / f"{s}.json")]
    assert len(every) == len(set(every)) == 9
    assert not any("_background_noise_" in p for p in every)


def test_speechcommands_v1_refuses_v2_words_and_needs_both_lists(tmp_path):
    root = make_speechcommands(tmp_path / "sc", ["yes", "backward"])
    with pytest.raises(ValueError, match="backward.*'speechcommands'"):
        prepare("speechcommands-v1", root, tmp_path / "out")
    v1 = make_speechcommands(tmp_path / "sc1", ["yes", "no"])
    assert read_layout("speechcommands-v1", v1).labels.ids == SPEECHCOMMANDS_V1_WORDS
    (v1 / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"validation_list\.txt.*expects"):
        prepare("speechcommands-v1", v1, tmp_path / "out")


def test_speechcommands_listed_clip_without_audio_is_skipped(tmp_path):
    root = make_speechcommands(tmp_path / "sc", ["yes", "no"])
    with open(root / "testing_list.txt", "a") as f:
        f.write("yes/gone_nohash_0.wav\n")
    with pytest.warns(MissingAudioWarning, match="skipped 1 clip.*gone_nohash"):
        summary = prepare("speechcommands", root, tmp_path / "out")
    assert summary["test"] == {"clips": 2, "classes": 2, "skipped": 1}


def test_speechcommands_v1_12_has_unknown_and_deterministic_silence(tmp_path):
    # 10 commands + 2 other words, 3 clips each: per split 10 commands + 2 unknown = 12 clips
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat"]
    root = make_speechcommands(tmp_path / "sc1", words)
    out = tmp_path / "out"
    summary = prepare("speechcommands-v1-12", root, out)
    # round(12 / 11) = 1 silence crop per split
    for split in ("train", "validation", "test"):
        assert summary[split] == {"clips": 13, "classes": 12, "skipped": 0}
    labels = read_label_csv(out / "labels.csv")
    assert labels.ids == KS12_CLASSES
    train = read_manifest(out / "train.json")
    assert sum(e.labels == ("_unknown_",) for e in train) == 2
    silence = [e for e in train if e.labels == ("_silence_",)]
    assert len(silence) == 1 and Path(silence[0].wav).is_relative_to(out.resolve())
    data, rate = soundfile.read(silence[0].wav)
    assert rate == RATE and data.shape == (RATE,)
    # relative inside the output folder, so it can be moved
    rows = json.loads((out / "train.json").read_text())["data"]
    assert [r["wav"] for r in rows if r["labels"] == "_silence_"][0].startswith("_silence_/train/")
    # the same inputs give the same crops
    first = {s: [soundfile.read(e.wav)[0] for e in read_manifest(out / f"{s}.json") if e.labels == ("_silence_",)]
             for s in summary}
    prepare("speechcommands-v1-12", root, tmp_path / "again")
    for split, crops in first.items():
        again = [soundfile.read(e.wav)[0] for e in read_manifest(tmp_path / "again" / f"{split}.json")
                 if e.labels == ("_silence_",)]
        assert len(again) == len(crops) and all(np.array_equal(a, b) for a, b in zip(again, crops))


def test_speechcommands_v1_12_with_the_superb_test_folder(tmp_path):
    root = make_speechcommands(tmp_path / "sc1", ["yes", "no", "bed"])
    test_set = tmp_path / "speech_commands_test_set_v0.01"
    for cls in ("yes", "_silence_", "_unknown_"):
        write_clip(test_set / cls / "a.wav")
    summary = prepare("speechcommands-v1-12", root, tmp_path / "out", test_set=test_set)
    assert summary["test"] == {"clips": 3, "classes": 3, "skipped": 0}
    assert summary["train"]["clips"] == 3  # round(3 / 11) = 0 silence crops


# ----------------------------------------------------------------------------- VoxCeleb1


@pytest.fixture
def voxceleb1(tmp_path):
    root = tmp_path / "VoxCeleb1"
    lines = []
    for s, speaker in enumerate(["id10001", "id10002", "id10003"]):
        for n, split in enumerate([1, 1, 2, 3]):
            rel = f"{speaker}/vid{n % 2}/{n:05d}.wav"
            write_clip(root / "wav" / rel, seed=s * 10 + n)
            lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def test_voxceleb1_identification_splits(voxceleb1, tmp_path):
    out = tmp_path / "out"
    summary = prepare("voxceleb1", voxceleb1, out)
    assert summary == {
        "train": {"clips": 6, "classes": 3, "skipped": 0},
        "validation": {"clips": 3, "classes": 3, "skipped": 0},
        "test": {"clips": 3, "classes": 3, "skipped": 0},
    }
    assert read_label_csv(out / "labels.csv").ids == ("id10001", "id10002", "id10003")
    test = read_manifest(out / "test.json")
    assert [Path(e.wav).relative_to(voxceleb1 / "wav").as_posix() for e in test] == [
        "id10001/vid1/00003.wav", "id10002/vid1/00003.wav", "id10003/vid1/00003.wav"]
    assert [e.labels for e in test] == [("id10001",), ("id10002",), ("id10003",)]


def test_voxceleb1_errors_and_missing_audio(voxceleb1, tmp_path):
    (voxceleb1 / "wav" / "id10002" / "vid0" / "00002.wav").unlink()
    with pytest.warns(MissingAudioWarning, match="skipped 1 clip"):
        summary = prepare("voxceleb1", voxceleb1, tmp_path / "out")
    assert summary["validation"] == {"clips": 2, "classes": 2, "skipped": 1}
    (voxceleb1 / "iden_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"iden_split\.txt.*voxceleb1 layout expects"):
        prepare("voxceleb1", voxceleb1, tmp_path / "out")


def test_voxceleb1_bad_split_line_names_the_line(voxceleb1, tmp_path):
    with open(voxceleb1 / "iden_split.txt", "a") as f:
        f.write("4 id10001/x/00001.wav\n")
    with pytest.raises(ValueError, match="line 13"):
        prepare("voxceleb1", voxceleb1, tmp_path / "out")


# ----------------------------------------------------------------------------- LibriSpeech and folders


def test_librispeech_reads_one_subset_or_the_whole_folder(tmp_path):
    libri = tmp_path / "LibriSpeech"
    for subset, speakers in (("train-clean-100", 2), ("train-other-500", 1), ("dev-clean", 1), ("test-clean", 1)):
        for spk in range(speakers):
            for utt in range(2):
                write_clip(libri / subset / f"{spk + 10}" / "200" / f"{spk + 10}-200-{utt:04d}.flac")
            (libri / subset / f"{spk + 10}" / "200" / f"{spk + 10}-200.trans.txt").write_text("HELLO\n")
    summary = prepare("librispeech", libri / "train-clean-100", tmp_path / "one")
    assert summary == {"train": {"clips": 4, "classes": 0, "skipped": 0}}
    assert not (tmp_path / "one" / "labels.csv").exists()
    assert read_manifest(tmp_path / "one" / "train.json")[0].labels == ()

    summary = prepare("librispeech", tmp_path, tmp_path / "all")  # the folder holding LibriSpeech/
    assert summary["train"]["clips"] == 6 and summary["validation"]["clips"] == 2
    train = manifest_paths(tmp_path / "all" / "train.json")
    assert not any("test-clean" in p or "dev-clean" in p for p in train)
    with pytest.raises(FileNotFoundError, match="no .flac files"):
        prepare("librispeech", tmp_path / "all", tmp_path / "x")


def test_folder_layout_unlabelled_and_labelled_by_subfolder(tmp_path):
    root = tmp_path / "clips"
    write_clip(root / "dog" / "a.wav")
    write_clip(root / "dog" / "deeper" / "b.flac")
    write_clip(root / "cat" / "c.ogg")
    write_clip(root / "cat" / "d.WAV")
    write_clip(root / "loose.wav", rate=44100, channels=2)
    write_clip(root / "dog" / "._a.wav")  # macOS resource fork: ignored
    (root / "cat" / "notes.txt").write_text("not audio")

    summary = prepare("folder", root, tmp_path / "plain")
    assert summary == {"all": {"clips": 5, "classes": 0, "skipped": 0}}
    with pytest.warns(MissingAudioWarning, match="loose.wav"):
        summary = prepare("folder", root, tmp_path / "labelled", labels_from_subfolder=True)
    assert summary == {"all": {"clips": 4, "classes": 2, "skipped": 1}}
    assert read_label_csv(tmp_path / "labelled" / "labels.csv").ids == ("cat", "dog")
    labelled = {Path(e.wav).name: e.labels for e in read_manifest(tmp_path / "labelled" / "all.json")}
    assert labelled == {"a.wav": ("dog",), "b.flac": ("dog",), "c.ogg": ("cat",), "d.WAV": ("cat",)}
    with pytest.raises(FileNotFoundError, match="no audio files"):
        prepare("folder", tmp_path / "plain", tmp_path / "x")


def test_unknown_layout_or_option(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        prepare("audioset", tmp_path, tmp_path / "out")
    with pytest.raises(TypeError, match="labels_from_subfolder"):
        prepare("esc50", tmp_path, tmp_path / "out", labels_from_subfolder=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare("voxceleb1", tmp_path / "nowhere", tmp_path / "out")


# ----------------------------------------------------------------------------- command line


def test_cli_layout_choices_match_the_library():
    assert tuple(_LAYOUTS) == tuple(LAYOUTS)


def test_cli_prepare_end_to_end(esc50, tmp_path, capsys):
    out = tmp_path / "data" / "esc50"
    assert main(["prepare", "esc50", str(esc50), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fold1_train" in printed and "labels.csv" in printed
    row = next(line.split() for line in printed.splitlines() if line.startswith("fold3_test"))
    assert row == ["fold3_test", "3", "3", "0"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"fold{k}_{s}.json" for k in range(1, 6) for s in ("train", "test")] + ["labels.csv"])
    assert isinstance(read_label_csv(out / "labels.csv"), LabelMap)

    assert main(["prepare", "voxceleb1", str(esc50), str(tmp_path / "v")]) == 2
    assert "iden_split.txt" in capsys.readouterr().err
    clips = tmp_path / "clips"
    write_clip(clips / "a" / "x.wav")
    assert main(["prepare", "folder", str(clips), str(tmp_path / "f"), "--labels-from-subfolder"]) == 0
    assert read_manifest(tmp_path / "f" / "all.json")[0].labels == ("a",)
    with pytest.raises(SystemExit):
        main(["prepare", "nolayout", str(clips), str(tmp_path / "f")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "--help"])
    assert exit_info.value.code == 0


def test_help_of_the_new_commands_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom ssamba.cli import main\n"
        "for command in ('prepare', 'shard'):\n"
        "    try:\n        main([command, '--help'])\n    except SystemExit as e:\n        assert e.code == 0\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: ssamba prepare" in out.stdout and "usage: ssamba shard" in out.stdout
    assert out.stdout.strip().endswith("False")


def _class_folder(root, classes=4, per_class=30, speakers=5):
    import soundfile as sf

    tone = (0.1 * np.sin(np.arange(1600) / 3)).astype("float32")
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            sf.write(root / f"class{c}" / f"spk{i % speakers}_{i:03d}.wav", tone, 16000)


def test_a_folder_is_split_stratified_reproducibly_and_groups_stay_whole(tmp_path):
    from ssamba.data.layouts import split_entries

    _class_folder(tmp_path / "data")
    summary = prepare("folder", tmp_path / "data", tmp_path / "a", labels_from_subfolder=True, split="80,10,10")
    assert {k: v["clips"] for k, v in summary.items()} == {"train": 96, "validation": 12, "test": 12}
    assert all(v["classes"] == 4 for v in summary.values())  # every class in every split
    again = prepare("folder", tmp_path / "data", tmp_path / "b", labels_from_subfolder=True, split="80,10,10")
    assert again == summary and (tmp_path / "a" / "test.json").read_text() != "" and \
        [e.wav for e in read_manifest(tmp_path / "a" / "test.json")] == \
        [e.wav for e in read_manifest(tmp_path / "b" / "test.json")]  # the same seed, the same split
    other = prepare("folder", tmp_path / "data", tmp_path / "c", labels_from_subfolder=True, split="80,10,10",
                    split_seed=1)
    assert [e.wav for e in read_manifest(tmp_path / "c" / "test.json")] != \
        [e.wav for e in read_manifest(tmp_path / "a" / "test.json")]
    assert other["test"]["clips"] == 12

    prepare("folder", tmp_path / "data", tmp_path / "g", labels_from_subfolder=True, split="60,20,20",
            group_by=r"^(class\d/spk\d)_")
    where = {}
    for split in ("train", "validation", "test"):
        for entry in read_manifest(tmp_path / "g" / f"{split}.json"):
            group = re.search(r"(class\d/spk\d)_", entry.wav).group(1)
            assert where.setdefault(group, split) == split  # a speaker of a class never straddles splits
    all_entries = [e for s in ("train", "validation", "test") for e in read_manifest(tmp_path / "g" / f"{s}.json")]
    assert len(all_entries) == 120 and len({e.wav for e in all_entries}) == 120
    with pytest.raises(ValueError, match="does not match"):
        split_entries(all_entries, (0.8, 0.2), group_by=r"nomatch(\d)")


@pytest.mark.parametrize("argv,expected", [
    (["--split", "80,x"], "give two or three numbers"),
    (["--split", "80,10,10,5"], "give two or three non-negative numbers"),
    (["--seed", "3"], "give the split too"),
])
def test_bad_splits_are_one_line(tmp_path, capsys, argv, expected):
    _class_folder(tmp_path / "data", classes=2, per_class=4)
    assert main(["prepare", "folder", str(tmp_path / "data"), str(tmp_path / "out"), "--labels-from-subfolder",
                 *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_layouts_with_their_own_splits_refuse_a_split(esc50, tmp_path):
    with pytest.raises(ValueError, match="comes with its own splits"):
        prepare("esc50", esc50, tmp_path / "out", split="80,20")
