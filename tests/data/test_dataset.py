import math
import warnings

import numpy as np
import pytest
import soundfile
import torch

from ssamba.data import (
    BadClipTracker,
    BadClipWarning,
    ClipDataset,
    ClipDatasetConfig,
    ClipEntry,
    LabelMap,
    collate_clips,
    compute_stats,
    mixup_waveforms,
    worker_init_fn,
    write_manifest,
)
from ssamba.frontend import FrontendConfig, LogMelFrontend, load_audio

from ..conftest import speech_like

RATE = 16000
FRONTEND = FrontendConfig(target_length=64, num_mel_bins=64)  # 0.655 s of frames
AUGMENTED = dict(freqm=16, timem=20, mixup=0.5, noise=True, augment=True)


def tone(seconds: float, freq: float, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture
def clips(tmp_path):
    """Six labelled clips (speech-like and tonal, 0.3-1.1 s) and their label map; clip i has class i."""
    gen = torch.Generator().manual_seed(0)
    entries = []
    for i, seconds in enumerate([0.3, 0.5, 0.7, 0.9, 1.1, 0.6]):
        n = int(seconds * RATE)
        wave = speech_like(n, gen).numpy() if i % 2 == 0 else tone(seconds, 300 + 150 * i)
        path = tmp_path / f"clip{i}.wav"
        soundfile.write(path, wave, RATE, subtype="FLOAT")
        entries.append(ClipEntry(str(path), (f"c{i}",)))
    return entries, LabelMap.from_names([f"c{i}" for i in range(6)])


def expected_spec(wave: torch.Tensor) -> torch.Tensor:
    return LogMelFrontend(FRONTEND)(wave)[0]


def test_items_have_the_documented_shapes_and_targets(clips):
    entries, labels = clips
    dataset = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND), labels)
    assert len(dataset) == 6 and dataset.num_classes == 6
    for i in range(6):
        item = dataset[i]
        assert item["spec"].shape == (64, 64) and item["spec"].dtype == torch.float32
        assert item["target"].dtype == torch.float32
        assert item["target"].tolist() == labels.encode(entries[i]).tolist()
        assert item["index"] == i
        # without training, the input is exactly the front end of the file
        assert torch.allclose(item["spec"], expected_spec(load_audio(entries[i].wav)))

    unlabelled = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND))
    assert unlabelled[0]["target"].shape == (0,)
    batch = collate_clips([unlabelled[i] for i in range(3)])
    assert batch["spec"].shape == (3, 64, 64) and batch["target"].shape == (3, 0)


def test_dataset_reads_a_manifest_file(clips, tmp_path):
    entries, labels = clips
    write_manifest(entries, tmp_path / "m.json", relative=True)
    dataset = ClipDataset(tmp_path / "m.json", ClipDatasetConfig(frontend=FRONTEND), labels)
    assert dataset.entries == entries


def test_unknown_or_missing_labels_fail_at_construction(clips):
    entries, labels = clips
    bad = entries[:2] + [ClipEntry(entries[2].wav, ("c2", "c9"))]
    with pytest.raises(ValueError, match=r"unknown label 'c9'.*clip2\.wav"):
        ClipDataset(bad, ClipDatasetConfig(frontend=FRONTEND), labels)
    with pytest.raises(ValueError, match="no labels"):
        ClipDataset(entries + [ClipEntry(entries[0].wav)], ClipDatasetConfig(frontend=FRONTEND), labels)


def test_augmentation_is_a_function_of_seed_epoch_and_index(clips):
    entries, labels = clips
    config = ClipDatasetConfig(frontend=FRONTEND, seed=5, **AUGMENTED)
    a, b = ClipDataset(entries, config, labels), ClipDataset(entries, config, labels)
    b_order = {i: b[i] for i in reversed(range(6))}  # access order does not matter
    for i in range(6):
        first, second = a[i], b_order[i]
        assert torch.equal(first["spec"], second["spec"])
        assert torch.equal(first["target"], second["target"])

    epoch0 = [a[i]["spec"] for i in range(6)]
    a.set_epoch(1)
    epoch1 = [a[i]["spec"] for i in range(6)]
    assert all(not torch.equal(x, y) for x, y in zip(epoch0, epoch1))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i]["spec"]) for i, x in enumerate(epoch0))

    other_seed = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND, seed=6, **AUGMENTED), labels)
    assert all(not torch.equal(x, other_seed[i]["spec"]) for i, x in enumerate(epoch0))

    # augmentations change the input but keep it close to the clean one
    clean = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND), labels)
    for i in range(6):
        assert not torch.equal(clean[i]["spec"], epoch0[i])


def test_specaugment_masks_with_the_official_value(clips):
    entries, labels = clips
    base = dict(frontend=FRONTEND, freqm=30, timem=30, augment=True)
    official = ClipDataset(entries, ClipDatasetConfig(**base), labels)
    after_norm = ClipDataset(entries, ClipDatasetConfig(mask_after_norm=True, **base), labels)
    clean = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND), labels)
    raw_zero = (0.0 - FRONTEND.mean) / (2 * FRONTEND.std)  # SSAST masks the log-mel with 0
    for i in range(6):
        spec, reference = official[i]["spec"], clean[i]["spec"]
        changed = spec != reference
        assert torch.allclose(spec[changed], torch.tensor(raw_zero))
        masked_cols = changed.all(dim=0).sum().item()
        assert masked_cols < 30
        spec = after_norm[i]["spec"]
        assert torch.all(spec[spec != reference] == 0)


def test_mixup_mixes_waveforms_and_labels_with_one_lambda(clips):
    entries, labels = clips
    config = ClipDatasetConfig(frontend=FRONTEND, mixup=1.0, augment=True)
    dataset = ClipDataset(entries, config, labels)
    waves = [load_audio(e.wav) for e in entries]
    partners, lambdas = set(), []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(6):
            item = dataset[i]
            target = item["target"]
            assert math.isclose(target.sum().item(), 1.0, rel_tol=1e-6)
            others = [j for j in range(6) if j != i and target[j] > 0]
            assert len(others) <= 1
            j = others[0] if others else i  # mixed with itself when no other class appears
            lam = target[i].item() if j != i else None
            if lam is not None:
                lambdas.append(lam)
                expected = expected_spec(mixup_waveforms(waves[i], waves[j], lam))
                assert torch.allclose(item["spec"], expected, atol=1e-4)
            partners.add(j)
    assert len(partners) >= 4
    assert all(0.1 < lam < 0.9 for lam in lambdas)  # Beta(10, 10) rarely leaves [0.2, 0.8]


def write_bad_clips(folder) -> dict[str, str]:
    """Bad clips of each kind, name -> path."""
    paths = {name: str(folder / f"{name}.wav") for name in ("missing", "corrupt", "zero_bytes", "no_samples", "nan", "too_short")}
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVE this is not really audio")
    (folder / "zero_bytes.wav").write_bytes(b"")
    soundfile.write(paths["no_samples"], np.zeros(0, dtype=np.float32), RATE)
    nan = tone(0.5, 440)
    nan[100:110] = np.nan
    soundfile.write(paths["nan"], nan, RATE, subtype="FLOAT")
    soundfile.write(paths["too_short"], tone(0.01, 440), RATE)  # 160 samples < 400 per frame
    return paths


def test_bad_clips_give_none_with_a_warning_and_collate_counts_them(clips, tmp_path):
    entries, labels = clips
    bad = write_bad_clips(tmp_path)
    all_entries = entries[:2] + [ClipEntry(p, ("c0",)) for p in bad.values()]
    dataset = ClipDataset(all_entries, ClipDatasetConfig(frontend=FRONTEND), labels)
    items = []
    for i, (name, path) in enumerate(bad.items(), start=2):
        with pytest.warns(BadClipWarning) as record:
            item = dataset[i]
        assert item is None, name
        message = str(record[0].message)
        assert path in message, message
    reasons = {}
    for i, name in enumerate(bad, start=2):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            dataset[i]
        reasons[name] = str(record[0].message)
    assert "does not exist" in reasons["missing"]
    assert "NaN" in reasons["nan"]
    assert "shorter than one frame" in reasons["too_short"]
    assert "no samples" in reasons["no_samples"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadClipWarning)
        items = [dataset[i] for i in range(len(dataset))]
    batch = collate_clips(items)
    assert batch["num_bad"] == len(bad)
    assert batch["spec"].shape == (2, 64, 64)
    assert batch["index"].tolist() == [0, 1]
    assert batch["target"].tolist() == [labels.encode("c0").tolist(), labels.encode("c1").tolist()]

    empty = collate_clips([None, None])
    assert empty["num_bad"] == 2 and empty["index"].numel() == 0


def test_a_bad_mixup_partner_leaves_the_clip_unmixed(clips, tmp_path):
    entries, labels = clips
    missing = ClipEntry(str(tmp_path / "gone.wav"), ("c1",))
    dataset = ClipDataset([entries[0], missing], ClipDatasetConfig(frontend=FRONTEND, mixup=1.0, augment=True), labels)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        items = []
        for epoch in range(6):
            dataset.set_epoch(epoch)
            items.append(dataset[0])
    assert all(item is not None and item["target"][1] == 0 for item in items)
    assert any("gone.wav" in str(w.message) for w in record)


def test_bad_clip_tracker():
    tracker = BadClipTracker(max_bad_fraction=0.1, min_seen=20)
    tracker.update(num_seen=10, num_bad=5)  # 50 % but too few seen to judge
    tracker.update(num_seen=50, num_bad=1)  # 6 / 60 = 10 %: at the limit, fine
    assert tracker.num_seen == 60 and tracker.num_bad == 6
    with pytest.raises(RuntimeError) as info:
        tracker.update(num_seen=10, num_bad=2)  # 8 / 70 = 11.4 %
    message = str(info.value)
    assert "8 of 70" in message and "11.4%" in message and "10.0%" in message
    assert "max_bad_fraction" in message
    with pytest.raises(ValueError):
        tracker.update(num_seen=1, num_bad=2)


def test_stereo_44k_input_is_downmixed_and_resampled(tmp_path):
    seconds, freq = 0.8, 1000.0
    t = np.arange(int(seconds * 44100)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * freq * t), 0.3 * np.sin(2 * np.pi * freq * t + 0.2)], axis=1)
    soundfile.write(tmp_path / "stereo.wav", stereo, 44100)
    t16 = np.arange(int(seconds * RATE)) / RATE
    soundfile.write(tmp_path / "mono.wav", 0.3 * np.sin(2 * np.pi * freq * t16), RATE)
    config = ClipDatasetConfig(frontend=FRONTEND)
    dataset = ClipDataset([ClipEntry(str(tmp_path / "stereo.wav")), ClipEntry(str(tmp_path / "mono.wav"))], config)
    stereo_spec, mono_spec = dataset[0]["spec"], dataset[1]["spec"]
    assert stereo_spec.shape == (64, 64)
    # same loudest mel bin in every frame, and close values there
    assert torch.equal(stereo_spec.argmax(dim=1), mono_spec.argmax(dim=1))
    assert torch.allclose(stereo_spec.amax(dim=1), mono_spec.amax(dim=1), atol=0.05)


def test_compute_stats_matches_a_direct_computation(clips, tmp_path):
    entries, _ = clips
    frontend = LogMelFrontend(FRONTEND)
    values = torch.cat([frontend.fbank(load_audio(e.wav)).flatten().double() for e in entries])
    mean, std = compute_stats(entries, FRONTEND)
    assert math.isclose(mean, values.mean().item(), rel_tol=1e-9)
    assert math.isclose(std, values.std(unbiased=False).item(), rel_tol=1e-9)

    # the statistics are of unpadded frames: target_length does not matter
    longer = FrontendConfig(target_length=1024, num_mel_bins=64)
    assert np.allclose(compute_stats(entries, longer), (mean, std))

    # bad clips are skipped with a warning; a dataset and a manifest file work too
    bad = write_bad_clips(tmp_path)
    with pytest.warns(BadClipWarning):
        with_bad = compute_stats(entries + [ClipEntry(p) for p in bad.values()], FRONTEND)
    assert np.allclose(with_bad, (mean, std))
    write_manifest(entries, tmp_path / "m.json")
    assert np.allclose(compute_stats(tmp_path / "m.json", FRONTEND), (mean, std))
    dataset = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND, **AUGMENTED))
    assert np.allclose(compute_stats(dataset), (mean, std))  # no augmentation in statistics

    subset = compute_stats(entries, FRONTEND, max_clips=2)  # clips 0 and 5
    direct = torch.cat([frontend.fbank(load_audio(entries[i].wav)).flatten().double() for i in (0, 5)])
    assert np.allclose(subset, (direct.mean().item(), direct.std(unbiased=False).item()))
    with pytest.raises(ValueError, match="no usable clip"):
        with pytest.warns(BadClipWarning):
            compute_stats([ClipEntry(bad["missing"])], FRONTEND)


def test_dataloader_workers_do_not_change_batches(clips, tmp_path):
    entries, labels = clips
    (tmp_path / "broken.wav").write_bytes(b"garbage")
    entries = entries + [ClipEntry(str(tmp_path / "broken.wav"), ("c0",))]
    dataset = ClipDataset(entries, ClipDatasetConfig(frontend=FRONTEND, **AUGMENTED), labels)

    def batches(num_workers: int, epoch: int):
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=3, shuffle=True, num_workers=num_workers,
            generator=torch.Generator().manual_seed(epoch), collate_fn=collate_clips,
            worker_init_fn=worker_init_fn,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BadClipWarning)
            return list(loader)

    for epoch in (0, 1):
        serial, parallel = batches(0, epoch), batches(2, epoch)
        assert len(serial) == len(parallel) == 3
        assert sum(b["num_bad"] for b in serial) == sum(b["num_bad"] for b in parallel) == 1
        for x, y in zip(serial, parallel):
            assert torch.equal(x["index"], y["index"])
            assert torch.equal(x["spec"], y["spec"])
            assert torch.equal(x["target"], y["target"])
            assert x["num_bad"] == y["num_bad"]


def test_config_validation_and_dicts():
    config = ClipDatasetConfig.from_dict({"frontend": {"target_length": 128}, "freqm": 48, "mixup": 0.6})
    assert config.frontend.target_length == 128 and config.freqm == 48
    assert ClipDatasetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TypeError, match="mixupp"):
        ClipDatasetConfig.from_dict({"mixupp": 0.5})
    with pytest.raises(TypeError, match="target_len"):
        ClipDatasetConfig.from_dict({"frontend": {"target_len": 128}})
    with pytest.raises(ValueError, match="mixup"):
        ClipDatasetConfig(mixup=1.5)
    with pytest.raises(ValueError, match="max_bad_fraction"):
        ClipDatasetConfig(max_bad_fraction=-0.1)


def test_a_clip_with_non_finite_features_is_a_counted_bad_clip(tmp_path):
    from ssamba.data import ClipEntry, compute_stats

    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "ok.wav", 0.1 * rng.standard_normal(16000), 16000, subtype="FLOAT")
    soundfile.write(tmp_path / "loud.wav", 1e30 * rng.standard_normal(16000), 16000, subtype="FLOAT")
    entries = [ClipEntry(str(tmp_path / "ok.wav")), ClipEntry(str(tmp_path / "loud.wav"))]
    config = ClipDatasetConfig(frontend=FrontendConfig(target_length=64))
    dataset = ClipDataset(entries, config)
    assert dataset[0] is not None
    with pytest.warns(BadClipWarning, match="loud.wav.*not finite"):
        assert dataset[1] is None
    batch = collate_clips([dataset[0], None])
    assert batch["num_bad"] == 1 and torch.isfinite(batch["spec"]).all()
    with pytest.warns(BadClipWarning, match="loud.wav"):
        mean, std = compute_stats(entries, config.frontend)
    assert math.isfinite(mean) and math.isfinite(std)
