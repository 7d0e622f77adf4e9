"""The lab's A/B rigs, probes and studies (``lab/``, beside the package, never imported
by it): each still runs against the current package, on tiny shapes."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lab(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "lab" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_ab_example_times_two_builds_of_the_kernel(capsys):
    # lab/kernel_ab.py reaches into ssamba.ops.scan_cpu's internals; this keeps it
    # runnable when they change. The same source as A and B: every line has both times.
    kernel_ab = _lab("kernel_ab")
    source = str(ROOT / "src" / "ssamba" / "ops" / "csrc" / "selective_scan_cpu.cpp")
    assert kernel_ab.main([source, source, "--threads", "1", "--repeats", "2", "--shapes", "1x8x70"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:3] for line in lines] == [["forward", "forward"], ["forward", "reverse"],
                                                     ["backward", "forward"], ["backward", "reverse"]]
    for line in lines:
        ratio = float(line.split("B/A")[1])
        assert ratio > 0
    with pytest.raises(SystemExit) as exit_info:
        kernel_ab.main([source, "/nonexistent.cpp"])
    assert exit_info.value.code == 2


def test_conv_bench_and_step_profile_examples_run(capsys):
    assert _lab("conv_bench").main(["--shapes", "2x8x40", "--repeats", "2", "--threads", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("2x8x40") and float(line.split("kernel/pytorch")[1]) > 0
    assert _lab("step_profile").main(["--preset", "ssamba_test", "--frames", "32", "--batch-size", "2",
                                          "--steps", "1", "--profile", "1", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "ssamba_test, 32 frames, batch 2: step" in out
    assert len(out.strip().splitlines()[-1].split()) >= 4  # an operation row: name, ms, share, calls


def test_train_floor_example_records_and_replays_the_products(capsys):
    floor = _lab("train_floor")
    found = floor.measure("ssamba_test", "ssast_test_patch", 32, 2, 1)
    assert found["products_calls"] > 0 and found["scan_updates"] > 0  # recorded during a real step
    assert all(found[key] > 0 for key in ("ssamba", "ssast", "products", "scans"))
    assert found["floor"] == found["products"] + found["scans"]
    from ssamba.models import get_config

    n_layers = get_config("ssamba_test").depth
    # two encoder passes, each layer's two directions, a forward and a backward call each
    assert found["kernel_calls"] == 2 * n_layers * 2 * 2 and found["kernels"] > 0
    assert found["with_kernels"] == found["products"] + found["kernels"]
    assert found["rest"] == found["ssamba"] - found["with_kernels"]
    assert floor.main(["--ssamba", "ssamba_test", "--ssast", "ssast_test_patch", "--frames", "32",
                       "--batch-size", "2", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "floor: products + scans at the bound" in out and "products + scan kernels (all else free)" in out


def test_lanes_probe_matches_the_reference_and_times_all_four(capsys):
    probe = _lab("lanes_probe")
    found = probe.measure("2x32x40", 1, 1)
    assert found["err_shipped"] < 1e-5 and found["err_lanes"] < 1e-5  # both are the scan
    assert all(found[key] > 0 for key in ("shipped", "lanes", "noact", "bound"))
    assert probe.main(["--shapes", "1x16x33", "--repeats", "1", "--threads", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[0] == "1x16x33"


def test_mixer_ab_example_switches_between_two_versions_of_the_mixer(capsys):
    mixer_ab = _lab("mixer_ab")
    old = mixer_ab.load_revision("HEAD")
    from ssamba.layers import mamba
    from ssamba.models import create_model

    model = create_model("ssamba_test", input_tdim=32)
    mixers = [m for m in model.modules() if isinstance(m, mamba.BiMambaMixer)]
    mixer_ab.use_version(model, old)
    assert mixers and all(type(m) is old.BiMambaMixer and type(m.forward_ssm) is old.SelectiveSSM for m in mixers)
    mixer_ab.use_version(model, mamba)
    assert all(type(m) is mamba.BiMambaMixer for m in mixers)
    for mode in (["--train"], ["--inference"], ["--inference", "--per-mixer"]):
        assert mixer_ab.main(["HEAD", "--preset", "ssamba_test", "--frames", "32", "--batch-size", "2",
                              "--steps", "1", *mode]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "pretraining step" in out[0] and "inference forward" in out[1] and all("B/A" in line for line in out)
    assert f"1 forwards, {len(mixers)} mixer calls" in out[2]  # every mixer ran in both versions
    assert all(type(m) is mamba.BiMambaMixer and "infer" not in vars(m) for m in mixers)
    with pytest.raises(SystemExit):  # --per-mixer is for the inference forward only
        mixer_ab.main(["HEAD", "--preset", "ssamba_test", "--per-mixer"])
    with pytest.raises(SystemExit, match="cannot read"):
        mixer_ab.load_revision("no-such-revision")


def test_pretrain_sweep_parses_recipes_and_prints_its_table(tmp_path, capsys):
    sweep = _lab("pretrain_sweep")
    assert sweep.parse_recipe("lr=3e-4,warmup=50,batch=32") == {"lr": 3e-4, "warmup": 50, "batch": 32}
    for bad in ("lr=3e-4", "lr=1,warmup=2,batch=3,momentum=4", "lr"):
        with pytest.raises(argparse.ArgumentTypeError):
            sweep.parse_recipe(bad)
    table = tmp_path / "sweep.csv"
    table.write_text(",".join(sweep.COLUMNS) + "\nssast,1200,0.001,50,32,synthetic+recorded,600:4.1 1200:30.2,"
                     "30.2,20.1,50.3,30.4,500\n")
    assert sweep.main(["--table", "--csv", str(table)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| family | lr |") and out[2].startswith("| ssast | 0.001 | 50 | 32 | 1200 | 600:4.1")


def test_scan_op_ab_times_both_registrations(capsys):
    rig = _lab("scan_op_ab")
    assert rig.main(["--preset", "ssamba_test", "--frames", "32", "--batch-size", "2", "--steps", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert "autograd.Function" in line and float(line.split("B/A")[1]) > 0
    # the kept formulation computes the package's scan and its gradients
    import torch

    from ssamba.ops import selective_scan

    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(2, 3, 9, generator=g), torch.rand(2, 3, 9, generator=g), -torch.rand(3, 4, generator=g),
               torch.randn(2, 4, 9, generator=g), torch.randn(2, 4, 9, generator=g)]
    grads = []
    for scan in (rig.function_backend(), lambda *t, **k: selective_scan(*t, **k, backend="cpu")):
        leaves = [t.clone().requires_grad_() for t in tensors]
        scan(*leaves, delta_softplus=True).pow(2).sum().backward()
        grads.append([t.grad for t in leaves])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))


def test_shard_io_ab_times_both_versions_on_shards_each_reads(capsys):
    rig = _lab("shard_io_ab")
    assert rig.main(["HEAD", "--clips", "6", "--seconds", "0.2", "--per-shard", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("same samples: True")
    assert [line.split()[0] for line in out[1:]] == ["write", "read", "count", "items"]
    assert all(float(line.split("B/A")[1]) > 0 for line in out[1:])
    with pytest.raises(SystemExit):
        rig.main(["no-such-revision", "--clips", "2"])


def test_probe_cost_parses_variants_and_compares_them_with_the_first():
    rig = _lab("probe_cost")
    import torch

    assert rig.parse_variant("max_iter=200,tol=1e-3,dtype=float32") == {"max_iter": 200, "tol": 1e-3,
                                                                       "dtype": torch.float32}
    for bad in ("C=1", "dtype=float16", "max_iter=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            rig.parse_variant(bad)
    variants = [rig.parse_variant(""), rig.parse_variant("tol=1e-3")]
    rows = [{"task": "kws", "representation": "log-mel", "seed": 0, "variant": rig.label(variants[v]), "seconds": 2.0 - v,
             "test": 0.5 + 0.01 * v, "layer": 0, "valid_by_layer": [0.4 + 0.02 * v]} for v in (0, 1)]
    table = rig.summarise(rows, variants)
    assert table[2].startswith("| max_iter=1000 tol=0.0001 float64 | 2.0 | 1.00 | 0.00 pts | 1/1 |")
    assert table[3].startswith("| max_iter=1000 tol=0.001 float64 | 1.0 | 2.00 | 2.00 pts | 1/1 | 1.00 pts |")


def test_gain_curve_redraws_its_figure_from_the_csv(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rig = _lab("gain_curve")
    run = tmp_path / "ssamba"
    run.mkdir()
    (run / "long_run.json").write_text('{"recipe": {"family": "ssamba"}}')
    (run / "metrics.csv").write_text("step,valid_acc\n100,0.2\n200,0.4\n")
    rows = [{"task": "kws", "representation": rep, "family": fam, "step": step, "seed": seed,
             "test_acc": 0.1 + 0.01 * seed + 0.001 * int(step or 0), "layer": 0, "chance": 0.03,
             "test_by_layer": "0.1 0.2"}
            for seed in (0, 1) for rep, fam, step in (("log-mel", "", ""), ("random init", "ssamba", "0"),
                                                      ("pretrained", "ssamba", "100"))]
    table = tmp_path / "gain.csv"
    with open(table, "w", newline="") as handle:
        writer = rig.csv.DictWriter(handle, rig.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    figure = tmp_path / "gain.png"
    assert rig.main(["--redraw", "--csv", str(table), "--plot", str(figure), "--runs", str(run)]) == 0
    assert figure.stat().st_size > 0
    assert rig.main(["--table", "--csv", str(table)]) == 0
    assert "| kws | ssamba pretrained | 100 |" in capsys.readouterr().out
