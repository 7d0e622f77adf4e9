import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch

import ssamba
from ssamba.interfaces import Embedder, load
from ssamba.interfaces.files import embed_files

from ..conftest import save_test_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("model"), input_tdim=1024)


def _tone(seconds, freq=440.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_layers_and_weighted_sum(model_dir):
    encoder = ssamba.load_model(model_dir).eval()
    wave = torch.from_numpy(_tone(1.0)).unsqueeze(0)
    last = Embedder(encoder, layer=-1).scene_embeddings(wave)
    first = Embedder(encoder, layer=0).scene_embeddings(wave)
    mean = Embedder(encoder, layer="mean").scene_embeddings(wave)
    states = len(encoder.forward_hidden_states(torch.zeros(1, 64, 128)))
    one_hot = [0.0] * states
    one_hot[0] = 1.0
    assert torch.allclose(Embedder(encoder, layer=one_hot).scene_embeddings(wave), first, atol=1e-6)
    assert not torch.allclose(last, first) and not torch.allclose(mean, last)
    with pytest.raises(ValueError, match="layer weights"):
        Embedder(encoder, layer=[1.0, 2.0]).scene_embeddings(wave)


def test_save_pretrained_round_trip_and_checkpoint_loading(model_dir, tmp_path):
    model = ssamba.load_model(model_dir).eval()
    model.save_pretrained(tmp_path / "copy")
    again = type(model).from_pretrained(tmp_path / "copy").eval()
    spec = torch.randn(2, 1024, 128)
    with torch.no_grad():
        assert torch.equal(model.forward_features(spec), again.forward_features(spec))
    with pytest.raises(FileNotFoundError, match="neither"):
        load(tmp_path / "nowhere")


@pytest.mark.slow
def test_embed_command_on_a_folder_with_a_corrupt_and_a_ten_minute_file(model_dir, tmp_path):
    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "short.wav", _tone(1.3), 16000)
    soundfile.write(folder / "sub" / "stereo44k.wav", np.stack([_tone(2.0, rate=44100)] * 2, 1), 44100)
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    rng = np.random.default_rng(0)
    long = (0.1 * rng.standard_normal(16000 * 600)).astype(np.float32)  # 10 minutes
    soundfile.write(folder / "long.flac", long, 16000)

    from ssamba.benchmarks._worker import CLI_PEAK_RSS_PROGRAM as code

    def embed(inputs, out):
        proc = subprocess.run([sys.executable, "-c", code, "embed", *map(str, inputs), "--checkpoint", str(model_dir),
                               "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc, float(proc.stdout.split("peak_rss_mb")[1])

    soundfile.write(tmp_path / "minute.flac", long[: 16000 * 60], 16000)
    _, one_minute_mb = embed([tmp_path / "minute.flac"], tmp_path / "emb1")
    out = tmp_path / "emb"
    proc, peak_mb = embed([folder], out)
    per_minute = (peak_mb - one_minute_mb) / 9
    print(f"ssamba embed peak memory: {one_minute_mb:.0f} MB for 1 min, {peak_mb:.0f} MB for 10 min "
          f"({per_minute:.1f} MB per minute)")
    # the filterbank is computed window by window: a minute costs its samples (3.8 MB) and
    # little else; it used to cost 64 MB per minute
    assert peak_mb < 1024 and per_minute < 20
    assert "corrupt.wav" in proc.stderr

    index = json.loads((out / "index.json").read_text())
    assert [f["audio"].endswith("corrupt.wav") for f in index["failed"]] == [True]
    by_name = {f["audio"].split("/")[-1]: f for f in index["files"]}
    assert set(by_name) == {"short.wav", "stereo44k.wav", "long.flac"}
    long_npz = np.load(out / "long.npz")
    assert long_npz["timestamp_embeddings"].shape == (by_name["long.flac"]["timestamps"], 32)
    assert index["model_hop_ms"] == 160.0  # the model's own stride (16 frames), as ssamba.load keeps it
    assert abs(long_npz["timestamps_ms"][-1] - 600_000) < 2 * 160
    assert np.allclose(np.diff(long_npz["timestamps_ms"]), 160.0)
    assert np.load(out / "sub" / "stereo44k.npz")["scene"].shape == (32,)


def test_command_line_and_python_api_embed_alike(model_dir, tmp_path):
    # One default for both front doors: the model's own hop; --hop-frames and hop_frames
    # re-stride both the same way.
    from ssamba.cli import main

    soundfile.write(tmp_path / "tone.wav", _tone(3.1, freq=330.0), 16000, subtype="FLOAT")  # exact samples
    wave = torch.from_numpy(_tone(3.1, freq=330.0)).unsqueeze(0)
    for extra, options in (([], {}), (["--hop-frames", "4"], {"hop_frames": 4})):
        out = tmp_path / f"cli{len(extra)}"
        assert main(["embed", str(tmp_path / "tone.wav"), "--checkpoint", str(model_dir), "--out", str(out),
                     "--no-progress", *extra]) == 0
        cli = np.load(out / "tone.npz")
        embedder = ssamba.load(model_dir, **options)
        with torch.no_grad():
            [(emb, times)] = embedder.timestamp_embeddings(wave)
            scene = embedder.scene_embeddings(wave)
        assert embedder.hop_ms == (40.0 if options else 160.0)
        assert np.allclose(cli["timestamps_ms"], times.numpy())
        assert np.allclose(cli["timestamp_embeddings"], emb.numpy(), atol=1e-5)
        assert np.allclose(cli["scene"], scene[0].numpy(), atol=1e-5)


def test_set_format_and_manifest_input(model_dir, tmp_path):
    from ssamba.data import ClipEntry, write_manifest

    paths = []
    for i, seconds in enumerate((0.5, 0.7, 3.0)):
        path = tmp_path / f"clip{i}.wav"
        soundfile.write(path, _tone(seconds, 300 + 100 * i), 16000)
        paths.append(path)
    write_manifest([ClipEntry(str(p)) for p in paths], tmp_path / "m.json")
    index = embed_files([tmp_path / "m.json"], load(model_dir, hop_frames=4), tmp_path / "out", "set", progress=False)
    data = np.load(tmp_path / "out" / "embeddings.npz")
    assert data["scene"].shape == (3, 32)
    assert data["offsets"][-1] == data["timestamps_ms"].shape[0] == sum(f["timestamps"] for f in index["files"])


@pytest.fixture(scope="module")
def short_window_model(tmp_path_factory):
    # ssamba_test with a 64-frame input: a 5 s clip spans 8 windows
    return save_test_model(tmp_path_factory.mktemp("short"), input_tdim=64)


def test_whole_file_embeddings_see_the_whole_file(short_window_model):
    rng = np.random.default_rng(0)
    clip = torch.from_numpy(_tone(5.0) + 0.05 * rng.standard_normal(80000).astype(np.float32))
    windows = ssamba.load(short_window_model)
    whole = ssamba.load(short_window_model, whole=True)
    [(w_emb, w_times)] = windows.timestamp_embeddings([clip])
    [(emb, times)] = whole.timestamp_embeddings([clip])
    assert emb.shape == w_emb.shape and torch.equal(times, w_times) and torch.isfinite(emb).all()
    assert not torch.allclose(emb, w_emb, atol=1e-4)  # context crosses the windows' borders
    # a change in the last second reaches the first column in one pass, not through windows
    changed = clip.clone()
    changed[-16000:] = torch.from_numpy(_tone(1.0, freq=1200.0))
    [(emb2, _)] = whole.timestamp_embeddings([changed])
    [(w_emb2, _)] = windows.timestamp_embeddings([changed])
    assert not torch.allclose(emb2[0], emb[0], atol=1e-6)
    assert torch.allclose(w_emb2[0], w_emb[0], atol=1e-6)
    # a clip within one window gets exactly its windowed embeddings; clips do not affect each other
    short = clip[:4000]
    [(s_whole, _), (l_whole, _)] = whole.timestamp_embeddings([short, clip])
    [(s_win, _)] = windows.timestamp_embeddings([short])
    assert torch.allclose(s_whole, s_win, atol=1e-6)
    assert torch.allclose(l_whole, emb, atol=1e-6)


def test_whole_flag_of_the_command(short_window_model, tmp_path):
    from ssamba.cli import main

    soundfile.write(tmp_path / "long.wav", _tone(4.0), 16000, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["embed", str(tmp_path / "long.wav"), "--checkpoint", str(short_window_model), "--out", str(out),
                 "--whole", "--no-progress", "--json"]) == 0
    saved = np.load(out / "long.npz")
    [(emb, times)] = ssamba.load(short_window_model, whole=True).timestamp_embeddings(
        [torch.from_numpy(_tone(4.0))])
    assert np.allclose(saved["timestamp_embeddings"], emb.numpy(), atol=1e-5)
    assert json.loads((out / "index.json").read_text())["mode"] == "whole"
    # resuming the folder in windows would mix two kinds of embeddings: refused, one line
    assert main(["embed", str(tmp_path / "long.wav"), "--checkpoint", str(short_window_model), "--out", str(out),
                 "--no-progress"]) == 2


# -- campaign 3 (issue 34): an embed folder knows what made it ----------------------------

def test_a_folder_refuses_other_settings_and_recomputes_damaged_files(model_dir, tmp_path, capsys):
    from ssamba.cli import main

    for i in range(3):
        soundfile.write(tmp_path / f"t{i}.wav", _tone(1.2, freq=300.0 + 50 * i), 16000)
    inputs = [str(tmp_path / f"t{i}.wav") for i in range(3)]
    out = tmp_path / "out"
    base = ["embed", *inputs, "--checkpoint", str(model_dir), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    made_by = json.loads((out / "index.json").read_text())["made_by"]
    assert set(made_by) >= {"model", "layer", "hop_ms", "mode", "frontend", "format"}
    first = {i: np.load(out / f"t{i}.npz")["timestamp_embeddings"] for i in range(3)}
    capsys.readouterr()

    other = save_test_model(tmp_path / "other", input_tdim=1024)
    torch.manual_seed(1)
    ssamba.save_model(ssamba.create_model("ssamba_test", input_tdim=1024), other)  # other weights, same config
    for extra, named in ((["--checkpoint", str(other)], "model"), (["--hop-frames", "4"], "hop_ms"),
                         (["--layer", "1"], "layer"), (["--whole"], "mode")):
        argv = [a for a in base if a not in ("--checkpoint", str(model_dir))] if extra[0] == "--checkpoint" else base
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ssamba: error: ") and named in err[0], err
    assert all(np.array_equal(np.load(out / f"t{i}.npz")["timestamp_embeddings"], first[i]) for i in range(3))

    (out / "t1.npz").write_bytes(b"PK\x03\x04 not a zip")  # damaged
    np.savez(out / "t2.npz", something_else=np.zeros(3))  # foreign
    assert main(base) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["resumed"] == [inputs[0]] and index["complete"] is True
    assert all(np.allclose(np.load(out / f"t{i}.npz")["timestamp_embeddings"], first[i], atol=1e-6) for i in range(3))


def test_a_folder_without_an_index_is_not_resumed_into(model_dir, tmp_path, capsys):
    from ssamba.cli import main

    soundfile.write(tmp_path / "t.wav", _tone(1.0), 16000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "t.npz").write_bytes(b"from somewhere else")
    assert main(["embed", str(tmp_path / "t.wav"), "--checkpoint", str(model_dir), "--out", str(out)]) == 2
    assert "does not say what made it" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "t.wav"), "--checkpoint", str(model_dir), "--out", str(out),
                 "--overwrite", "--no-progress"]) == 0
    assert len(np.load(out / "t.npz")["timestamps_ms"]) > 0


def test_a_file_with_non_finite_features_is_skipped_and_named(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    soundfile.write(tmp_path / "ok.wav", _tone(1.0), 16000)
    soundfile.write(tmp_path / "loud.wav", 1e30 * rng.standard_normal(16000), 16000, subtype="FLOAT")
    index = embed_files([tmp_path / "ok.wav", tmp_path / "loud.wav"], ssamba.load(model_dir), tmp_path / "out",
                        progress=False)
    assert [f["audio"] for f in index["files"]] == [str(tmp_path / "ok.wav")]
    assert len(index["failed"]) == 1 and "not finite" in index["failed"][0]["error"]
    assert np.isfinite(np.load(tmp_path / "out" / "ok.npz")["timestamp_embeddings"]).all()
    assert not (tmp_path / "out" / "loud.npz").exists()


def test_undecodable_file_names_and_a_folder_called_index_json(model_dir, tmp_path):
    import os
    import shutil

    root = os.fsencode(tmp_path / "in")
    os.makedirs(root + b"/index.json")
    soundfile.write(tmp_path / "tone.wav", _tone(1.0), 16000)
    shutil.copy(tmp_path / "tone.wav", root + b"/caf\xe9.wav")  # not UTF-8
    shutil.copy(tmp_path / "tone.wav", root + b"/index.json/x.wav")
    index = embed_files([tmp_path / "in"], ssamba.load(model_dir), tmp_path / "out", progress=False)
    assert index["failed"] == [] and len(index["files"]) == 2
    assert (tmp_path / "out" / "index.json").is_file() and (tmp_path / "out" / "_index.json" / "x.npz").is_file()
    assert (tmp_path / "out" / os.fsdecode(b"caf\xe9.npz")).is_file()
