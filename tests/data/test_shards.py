"""Tar shards: lossless round trip, bad members skipped and counted, same items as ClipDataset."""

import io
import json
import tarfile
import warnings

import numpy as np
import pytest
import soundfile
import torch

from ssamba.cli import main
from ssamba.data import (
    BadClipWarning,
    ClipDataset,
    ClipDatasetConfig,
    ClipEntry,
    LabelMap,
    ShardDataset,
    collate_clips,
    read_shard_index,
    write_manifest,
    write_shards,
)
from ssamba.frontend import FrontendConfig, load_audio
from ssamba.frontend.audio import decode_audio

RATE = 16000
FRONTEND = FrontendConfig(target_length=32, num_mel_bins=32)


@pytest.fixture
def clips(tmp_path):
    """Seven labelled clips: 16-bit WAV, FLAC, one 44.1 kHz stereo WAV; their samples as written."""
    rng = np.random.default_rng(0)
    entries, samples = [], []
    for i in range(7):
        seconds = 0.1 + 0.03 * i
        if i == 3:
            data = 0.2 * rng.standard_normal((int(seconds * 44100), 2))
            path, rate = tmp_path / "stereo44k.wav", 44100
        else:
            data = 0.2 * rng.standard_normal(int(seconds * RATE))
            path, rate = tmp_path / f"clip{i}.{'flac' if i % 2 else 'wav'}", RATE
        soundfile.write(path, data, rate, subtype="PCM_16")
        entries.append(ClipEntry(str(path), (f"c{i % 3}",) if i != 5 else ("c0", "c2")))
        samples.append(data)
    return entries, samples, LabelMap.from_names(["c0", "c1", "c2"])


def items_of(dataset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadClipWarning)
        return list(dataset)


def test_round_trip_preserves_every_clip(clips, tmp_path):
    entries, samples, labels = clips
    out = tmp_path / "shards"
    paths = write_shards(entries, out, max_clips_per_shard=3)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    index = read_shard_index(out)
    assert [row["clips"] for row in index["shards"]] == [3, 3, 1]
    assert index["num_clips"] == 7 and index["labels"] == ["c0", "c1", "c2"] and index["unlabelled"] == 0

    seen = {}
    for path in paths:
        with tarfile.open(path) as tar:
            names = tar.getnames()
            for name in names:
                if name.endswith(".json"):
                    meta = json.loads(tar.extractfile(name).read())
                    key = name[: -len(".json")]
                    audio_name = next(n for n in names if n.startswith(key + ".") and n != name)
                    seen[meta["index"]] = (meta, audio_name, tar.extractfile(audio_name).read())
    assert sorted(seen) == list(range(7))
    for i, entry in enumerate(entries):
        meta, audio_name, data = seen[i]
        assert meta["wav"] == entry.wav and tuple(meta["labels"]) == entry.labels
        assert audio_name.endswith(entry.wav.rsplit(".", 1)[1])  # original format kept
        decoded, rate = soundfile.read(io.BytesIO(data), always_2d=True)
        expected = samples[i].reshape(len(samples[i]), -1)
        assert rate == (44100 if i == 3 else RATE) and decoded.shape == expected.shape
        assert np.abs(decoded - expected).max() <= 1 / 32768 + 1e-9  # 16-bit PCM
        assert torch.equal(decode_audio(data, RATE), load_audio(entry.wav))  # same samples as from the file


def test_sharded_items_equal_clip_dataset_items(clips, tmp_path):
    entries, _, labels = clips
    write_shards(entries, tmp_path / "shards", max_clips_per_shard=2)
    config = ClipDatasetConfig(frontend=FRONTEND)
    reference = ClipDataset(entries, config, labels)
    streamed = items_of(ShardDataset(tmp_path / "shards", config, labels))
    assert len(streamed) == 7 and len(ShardDataset(tmp_path / "shards")) == 7
    for item in streamed:
        ref = reference[item["index"]]
        assert torch.equal(item["spec"], ref["spec"]) and torch.equal(item["target"], ref["target"])
    assert [item["index"] for item in streamed] == list(range(7))  # unshuffled: manifest order

    # augmentation without mixup draws the same masks and noise for the same (seed, epoch, index)
    augmented = ClipDatasetConfig(frontend=FRONTEND, freqm=8, timem=8, noise=True, augment=True, seed=3)
    shards = ShardDataset(tmp_path / "shards", augmented, labels)
    shards.set_epoch(2)
    reference = ClipDataset(entries, augmented, labels)
    reference.set_epoch(2)
    for item in items_of(shards):
        assert torch.equal(item["spec"], reference[item["index"]]["spec"])

    # mixup draws partners from the stream: targets stay distributions over the classes
    mixed = ShardDataset(tmp_path / "shards", ClipDatasetConfig(frontend=FRONTEND, mixup=1.0, augment=True), labels)
    targets = torch.stack([item["target"] for item in items_of(mixed)])
    assert torch.all(targets >= 0) and torch.all(targets <= 2.0)
    assert (targets.sum(1) > 0).all()


def test_ranks_and_workers_split_the_shards(clips, tmp_path):
    entries, _, labels = clips
    write_shards(entries, tmp_path / "shards", max_clips_per_shard=1)
    config = ClipDatasetConfig(frontend=FRONTEND)
    per_rank = [[item["index"] for item in items_of(ShardDataset(tmp_path / "shards", config, rank=r, world_size=2))]
                for r in range(2)]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(7)) and not set(per_rank[0]) & set(per_rank[1])
    assert len(ShardDataset(tmp_path / "shards", rank=0, world_size=2)) == len(per_rank[0]) == 4

    loader = torch.utils.data.DataLoader(ShardDataset(tmp_path / "shards", config, labels), batch_size=3,
                                         num_workers=2, collate_fn=collate_clips)
    indices = sorted(i for batch in loader for i in batch["index"].tolist())
    assert indices == list(range(7))

    shuffled = ShardDataset(tmp_path / "shards", config, shuffle=True, shuffle_buffer=3)
    orders = []
    for epoch in (0, 1):
        shuffled.set_epoch(epoch)
        orders.append([item["index"] for item in items_of(shuffled)])
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(7)) and orders[0] != orders[1]
    with pytest.raises(ValueError, match="rank"):
        ShardDataset(tmp_path / "shards", rank=2, world_size=2)


def rewrite_tar(src, dst, edit):
    """Copy tar ``src`` to ``dst`` passing each (name, bytes) through ``edit`` (None drops it)."""
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w") as tar_out:
        for member in tar_in.getmembers():
            result = edit(member.name, tar_in.extractfile(member).read())
            if result is not None:
                info = tarfile.TarInfo(member.name)
                info.size = len(result)
                tar_out.addfile(info, io.BytesIO(result))


def test_bad_members_are_skipped_and_counted(clips, tmp_path):
    entries, _, labels = clips
    [shard] = write_shards(entries, tmp_path / "shards")
    bad = tmp_path / "bad"
    bad.mkdir()

    def corrupt(name, data):
        if name.startswith("000000001."):
            return data if name.endswith(".json") else b"RIFF garbage, not audio"
        if name == "000000004.json":
            return None  # audio without its json
        if name.startswith("000000006.") and not name.endswith(".json"):
            return None  # json without audio
        return data

    rewrite_tar(shard, bad / "shard-000000.tar", corrupt)
    dataset = ShardDataset(bad, ClipDatasetConfig(frontend=FRONTEND), labels)
    with pytest.warns(BadClipWarning) as caught:
        items = list(dataset)
    messages = " | ".join(str(w.message) for w in caught)
    assert "cannot read audio" in messages and "no .json member" in messages and "no audio member" in messages
    assert len(items) == 7 and sum(item is None for item in items) == 3
    batch = collate_clips(items)
    assert batch["num_bad"] == 3 and batch["index"].tolist() == [0, 2, 3, 5]

    # a shard truncated part way: the samples before the cut are read, then one bad item
    data = shard.read_bytes()
    (bad / "shard-000000.tar").write_bytes(data[: len(data) // 2])
    with pytest.warns(BadClipWarning) as caught:  # the sample cut in two may be reported too
        items = list(ShardDataset(bad / "shard-000000.tar", ClipDatasetConfig(frontend=FRONTEND)))
    assert "shard unreadable" in str(caught[-1].message) and "ReadError" in str(caught[-1].message)
    assert "BufferedReader" not in str(caught[-1].message)  # the reason, without a stream's repr
    assert items[-1] is None and 1 <= sum(item is not None for item in items) < 7


def test_a_member_repeated_within_a_sample_is_reported_and_the_first_kept(clips, tmp_path):
    entries, _, labels = clips
    [shard] = write_shards(entries[:2], tmp_path / "shards")
    doubled = tmp_path / "doubled.tar"
    with tarfile.open(shard) as tar_in, tarfile.open(doubled, "w") as tar_out:
        for member in tar_in.getmembers():
            data = tar_in.extractfile(member).read()
            for copy in (data, b"{}") if member.name == "000000000.json" else (data,):
                info = tarfile.TarInfo(member.name)
                info.size = len(copy)
                tar_out.addfile(info, io.BytesIO(copy))
    with pytest.warns(BadClipWarning, match="duplicate"):
        items = list(ShardDataset(doubled, ClipDatasetConfig(frontend=FRONTEND), labels))
    assert [item["index"] for item in items] == [0, 1]  # the first .json (with its labels) kept


def test_the_same_clips_make_the_same_shard_bytes(clips, tmp_path):
    entries, _, _ = clips
    [a] = write_shards(entries, tmp_path / "a")
    [b] = write_shards(entries, tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()  # no time stamps or owners in the archive


def test_writer_skips_missing_files_and_refuses_to_overwrite(clips, tmp_path):
    entries, _, labels = clips
    entries = entries + [ClipEntry(str(tmp_path / "gone.wav"), ("c1",))]
    out = tmp_path / "shards"
    with pytest.warns(BadClipWarning, match="gone.wav"):
        write_shards(entries, out, max_clips_per_shard=2)
    assert read_shard_index(out)["skipped"] == 1 and read_shard_index(out)["num_clips"] == 7
    with pytest.raises(FileExistsError):
        write_shards(entries[:2], out)
    paths = write_shards(entries[:3], out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar", "shards.json"] == sorted(
        [paths[0].name, "shards.json"])
    with pytest.raises(ValueError, match="unknown label"):
        ShardDataset(out, label_map=LabelMap.from_names(["c0"]))
    # a shard written with a byte limit closes early
    sized = write_shards(entries[:4], tmp_path / "sized", max_bytes=1)
    assert len(sized) == 4


def test_shard_command(clips, tmp_path, capsys):
    entries, _, _ = clips
    write_manifest(entries, tmp_path / "m.json")
    assert main(["shard", str(tmp_path / "m.json"), str(tmp_path / "out"), "--max-clips", "4"]) == 0
    assert "wrote 2 shard(s) with 7 clips" in capsys.readouterr().out
    assert main(["shard", str(tmp_path / "m.json"), str(tmp_path / "out")]) == 2
    assert "already holds shards" in capsys.readouterr().err
    assert main(["shard", str(tmp_path / "missing.json"), str(tmp_path / "o2")]) == 2


def test_an_interrupted_write_leaves_no_partial_shard(clips, tmp_path, monkeypatch):
    entries, _, _ = clips
    import ssamba.data.shards as shards_module

    calls = []
    real_dumps = shards_module.json.dumps

    def failing_dumps(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(shards_module.json, "dumps", failing_dumps)
    with pytest.raises(KeyboardInterrupt):
        write_shards(entries, tmp_path / "out", max_clips_per_shard=2)
    # the first, complete shard is in place; the one being written is gone; no index yet
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-000000.tar"]


# -- campaign 3 (issue 34): shard indexes that lie, and folders without one ---------------

def _shards(clips, tmp_path, per_shard=3):
    entries, _, labels = clips
    out = tmp_path / "shards"
    write_shards(entries, out, max_clips_per_shard=per_shard)
    return out, labels


@pytest.mark.parametrize("content,expected", [
    ('"hello"', 'must be an object with a "shards" list, got str'),
    ("[1, 2]", 'must be an object with a "shards" list, got list'),
    ('{"format": "webdataset"}', "got dict with keys ['format']"),
    ('{"shards": ["x"]}', 'shard 0 needs a "file" named inside the folder'),
    ('{"shards": [{"file": "../elsewhere.tar", "clips": 1}]}', 'shard 0 needs a "file" named inside the folder'),
    ('{"shards": [{"file": "shard-000000.tar", "clips": -1}]}', 'needs a "clips" count'),
    ('{"shards": [{"file": "shard-000000.tar", "clips": "3"}]}', 'needs a "clips" count'),
])
def test_a_malformed_shard_index_is_a_value_error(clips, tmp_path, content, expected):
    out, _ = _shards(clips, tmp_path)
    (out / "shards.json").write_text(content)
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        ShardDataset(out)


def test_a_folder_without_an_index_is_counted_from_its_tar_headers(clips, tmp_path):
    out, labels = _shards(clips, tmp_path)
    indexed = ShardDataset(out, ClipDatasetConfig(frontend=FRONTEND), labels)
    (out / "shards.json").unlink()
    counted = ShardDataset(out, ClipDatasetConfig(frontend=FRONTEND), labels)
    assert len(counted) == len(indexed) == 7
    assert [i["index"] for i in items_of(counted)] == [i["index"] for i in items_of(indexed)]


@pytest.mark.parametrize("damage", ["missing", "overcounted"])
def test_a_shard_short_of_its_count_yields_bad_items_for_the_shortfall(clips, tmp_path, damage):
    out, labels = _shards(clips, tmp_path)
    index = json.loads((out / "shards.json").read_text())
    if damage == "missing":
        (out / index["shards"][1]["file"]).unlink()  # 3 clips gone
        short = 3
    else:
        index["shards"][0]["clips"] += 5
        (out / "shards.json").write_text(json.dumps(index))
        short = 5
    dataset = ShardDataset(out, ClipDatasetConfig(frontend=FRONTEND), labels)
    with pytest.warns(BadClipWarning, match="shard"):
        items = list(dataset)
    assert len(items) == len(dataset)  # as long as promised: the loop never waits for more
    assert sum(item is None for item in items) == short
