"""Fuzzing the inputs users hand us (issue 15), with hypothesis: audio bytes, manifests,
label CSVs, config overrides and model directories. Each input must end in a result or a
user error (:data:`ssamba.errors.USER_ERRORS`: the CLI prints one line for those), never
in another exception and never in a hang (each example runs under a 20 s alarm).

Examples are derandomised: the suite is the same on every machine and every run.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import string

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ssamba
from ssamba.errors import USER_ERRORS

from .conftest import save_test_model

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    def alarm(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def ends_well(fn, *args, **kwargs):
    """``fn(...)``'s result, or None if it raised a user error; anything else fails the test."""
    with no_hang():
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS:
            return None


def _wav_bytes(seconds: float = 0.2, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    tone = (0.3 * np.sin(np.arange(int(16000 * seconds)) * 0.1)).astype(np.float32)
    soundfile.write(buffer, tone, 16000, subtype=subtype, format=fmt)
    return buffer.getvalue()


VALID_AUDIO = [_wav_bytes(), _wav_bytes(subtype="FLOAT"), _wav_bytes(fmt="FLAC")]


@st.composite
def mutated_audio(draw):
    data = bytearray(draw(st.sampled_from(VALID_AUDIO)))
    for _ in range(draw(st.integers(0, 6))):  # overwrite bytes, mostly in the header
        at = draw(st.integers(0, min(len(data) - 1, draw(st.sampled_from([64, len(data) - 1])))))
        data[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=512), mutated_audio()))
def test_audio_decoder(data):
    from ssamba.frontend import decode_audio

    wave = ends_well(decode_audio, data)
    if wave is not None:
        assert wave.dtype == torch.float32 and wave.dim() == 1 and wave.numel() > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["wav", "labels", "data", "x"]), inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(st.one_of(json_values, st.fixed_dictionaries({"data": st.lists(json_values, max_size=4)})),
       st.booleans())
def test_manifest_reader(tmp_path, content, as_text):
    from ssamba.data import read_manifest

    path = tmp_path / "m.json"
    path.write_text(json.dumps(content) if as_text else json.dumps(content)[: len(json.dumps(content)) // 2])
    entries = ends_well(read_manifest, path)
    if entries is not None:
        assert isinstance(entries, list)


csv_cells = st.text(alphabet=string.ascii_letters + string.digits + ",\"' -\n", max_size=6)


@FUZZ
@given(st.lists(st.lists(csv_cells, min_size=1, max_size=4), max_size=5), st.booleans())
def test_label_csv_reader(tmp_path, rows, header):
    from ssamba.data import read_label_csv

    lines = (["index,mid,display_name"] if header else []) + [",".join(row) for row in rows]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    labels = ends_well(read_label_csv, path)
    if labels is not None:
        assert labels.num_classes == len(labels.ids)


def _leaf_options():
    from ssamba.config import describe_fields
    from ssamba.training.experiment import ExperimentConfig

    return [name for name, _, _ in describe_fields(ExperimentConfig)]


override_values = st.one_of(
    st.sampled_from(["-1", "0", "1", "8.5", "3e-4", "abc", "true", "null", "[1, 2]", "{a: 1}", "1e400", "nan", "",
                     ".inf", "-.inf", ".nan", "inf", "1e308", "[0.9, .nan]"]),
    st.text(alphabet=string.printable, max_size=8),
)


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_leaf_options() + ["optim.nope", "nope", "run"]), override_values),
                min_size=1, max_size=4))
def test_config_overrides(pairs):
    from ssamba.training.experiment import load_experiment, parse_overrides

    items = [f"{key}={value}" for key, value in pairs]

    def load():
        return load_experiment(None, parse_overrides(items))

    config = ends_well(load)
    if config is not None:
        assert config.run.batch_size >= 1 and config.optim.grad_accum >= 1 and 0 <= config.data.max_bad_fraction < 1
        from ssamba.config import _non_finite

        assert list(_non_finite(config, "config")) == []  # no NaN or infinity gets through


@FUZZ
@given(st.integers(1, 200_000), st.sampled_from(["manifest", "model", "shards", "state"]), st.booleans())
def test_json_nested_to_any_depth(tmp_path, depth, reader, in_dict):
    from ssamba.data import read_manifest, read_shard_index
    from ssamba.models.serialization import _read_meta
    from ssamba.training.checkpoint import load_checkpoint

    nested = "[" * depth + "]" * depth
    text = '{"data": ' + nested + "}" if in_dict else nested
    name = {"manifest": "m.json", "model": "config.json", "shards": "shards.json", "state": "state.json"}[reader]
    (tmp_path / name).write_text(text)
    call = {"manifest": lambda: read_manifest(tmp_path / name), "model": lambda: _read_meta(tmp_path / name),
            "shards": lambda: read_shard_index(tmp_path),
            "state": lambda: load_checkpoint(tmp_path)}[reader]
    ends_well(call)


@FUZZ
@given(st.lists(st.sampled_from(["..", ".", "snapshots", "models--org--tiny", "/", "etc", "f" * 40, "x"]),
                min_size=1, max_size=6), st.sampled_from(["ref", "revision"]))
def test_hostile_hub_caches_never_load_from_outside(tmp_path, monkeypatch, parts, where):
    pytest.importorskip("huggingface_hub")
    from ssamba.models import hub

    home = tmp_path / "hf"
    storage = home / "hub" / "models--org--tiny"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "snapshots").mkdir(exist_ok=True)
    outside = tmp_path / "outside"
    if not outside.exists():
        save_test_model(outside, input_tdim=64)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = "/".join(parts)
    if where == "ref":
        (storage / "refs" / "main").write_text(text)
        spec = "org/tiny"
    else:
        spec = "org/tiny@" + text
    folder = ends_well(hub.resolve_repo, spec)
    if folder is not None:
        assert folder.resolve().parent == (storage / "snapshots").resolve()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_test_model(tmp_path_factory.mktemp("model"), input_tdim=64)


config_values = st.one_of(st.integers(-3, 10**12), st.floats(allow_nan=True), st.text(max_size=6), st.booleans(),
                          st.none(), st.lists(st.integers(-2, 40), max_size=3))


@FUZZ
@given(st.data())
def test_model_directory(tmp_path, model_dir, data):
    target = tmp_path / "m"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(model_dir, target)
    meta = json.loads((target / "config.json").read_text())
    section = data.draw(st.sampled_from(["config", "top", "weights"]))
    if section == "config":
        key = data.draw(st.sampled_from(sorted(meta["config"]) + ["unknown_key"]))
        meta["config"][key] = data.draw(config_values)
    elif section == "top":
        key = data.draw(st.sampled_from(["format", "family", "config", "frontend"]))
        meta[key] = data.draw(st.one_of(config_values, st.dictionaries(st.text(max_size=4), config_values, max_size=2)))
    else:
        raw = bytearray((target / "model.safetensors").read_bytes())
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, 200))] = data.draw(st.integers(0, 255))
        (target / "model.safetensors").write_bytes(bytes(raw))
    (target / "config.json").write_text(json.dumps(meta))
    model = ends_well(ssamba.load_model, target)
    if model is not None:
        assert sum(p.numel() for p in model.parameters()) > 0
