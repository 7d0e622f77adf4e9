import json

import pytest
import torch

from ssamba.data import (
    ClipEntry,
    LabelMap,
    read_label_csv,
    read_manifest,
    write_label_csv,
    write_manifest,
)


def test_manifest_round_trip_and_label_parsing(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"wav": "/abs/a.flac", "labels": "/m/07rwj01,/m/07rwj02"},
                    {"wav": "/abs/b.wav", "labels": " /m/x , "},  # stray spaces and commas
                    {"wav": "/abs/c.wav"},  # pretraining lists may carry no labels
                ]
            }
        )
    )
    entries = read_manifest(path)
    assert entries == [
        ClipEntry("/abs/a.flac", ("/m/07rwj01", "/m/07rwj02")),
        ClipEntry("/abs/b.wav", ("/m/x",)),
        ClipEntry("/abs/c.wav", ()),
    ]
    out = tmp_path / "sub" / "copy.json"
    write_manifest(entries, out)
    assert read_manifest(out) == entries
    assert json.loads(out.read_text())["data"][0] == {"wav": "/abs/a.flac", "labels": "/m/07rwj01,/m/07rwj02"}
    assert [p.name for p in out.parent.iterdir()] == ["copy.json"]  # no temporary file left


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "m.json").write_text(json.dumps({"data": [{"wav": "audio/x.wav", "labels": "a"}]}))
    [entry] = read_manifest(folder / "m.json")
    assert entry.wav == str((folder / "audio" / "x.wav").resolve())

    # relative=True writes portable paths; moving the folder keeps them valid
    write_manifest([entry], folder / "portable.json", relative=True)
    assert json.loads((folder / "portable.json").read_text())["data"][0]["wav"] == "audio/x.wav"
    moved = tmp_path / "moved"
    folder.rename(moved)
    [entry] = read_manifest(moved / "portable.json")
    assert entry.wav == str((moved / "audio" / "x.wav").resolve())


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"items": []}', '"data"'),
        ('{"data": {"wav": "a"}}', "must be a list"),
        ('{"data": [{"wav": "a.wav"}, {"labels": "x"}]}', 'entry 1 has no "wav"'),
    ],
)
def test_bad_manifests_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_manifest(path)
    assert "bad.json" in str(info.value)


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        read_manifest(tmp_path / "nowhere.json")


def test_label_csv_round_trip_and_encoding(tmp_path):
    path = tmp_path / "labels.csv"
    # AudioSet's CSV quotes display names that contain commas; rows may come in any order
    path.write_text(
        'index,mid,display_name\n1,/m/b,"Speech, child"\n0,/m/a,Music\n2,/m/c,Dog\n'
    )
    labels = read_label_csv(path)
    assert labels.num_classes == 3
    assert labels.ids == ("/m/a", "/m/b", "/m/c")
    assert labels.names == ("Music", "Speech, child", "Dog")

    target = labels.encode("/m/c,/m/a")
    assert target.dtype == torch.float32 and target.shape == (3,)
    assert target.tolist() == [1.0, 0.0, 1.0]
    assert labels.encode(["/m/b"]).tolist() == [0.0, 1.0, 0.0]
    assert labels.encode(ClipEntry("x.wav", ("/m/b", "/m/b"))).tolist() == [0.0, 1.0, 0.0]
    assert labels.decode(target) == ("/m/a", "/m/c")

    write_label_csv(labels, tmp_path / "again.csv")
    assert read_label_csv(tmp_path / "again.csv") == labels


def test_unknown_label_names_the_label_and_the_entry():
    labels = LabelMap.from_names(["dog", "rain"])
    with pytest.raises(ValueError, match=r"unknown label 'cat'.*clips/7\.wav"):
        labels.encode(ClipEntry("clips/7.wav", ("dog", "cat")))
    with pytest.raises(ValueError, match="unknown label 'Dog'"):  # ids are case-sensitive
        labels.encode("Dog")


@pytest.mark.parametrize(
    "content, message",
    [
        ("idx,mid,display_name\n0,a,A\n", "lacks column"),
        ("index,mid,display_name\n0,a,A\n2,b,B\n", "indices must be 0..1"),
        ("index,mid,display_name\n0,a,A\n1,a,B\n", "appears twice"),
        ("index,mid,display_name\nzero,a,A\n", "bad index"),
    ],
)
def test_bad_label_csvs(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_label_csv(path)
