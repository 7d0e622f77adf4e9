"""The demo's tables and bar styles, from made-up results: random, fresh and long rows
with their gains, and the long columns only where a long-pretrained encoder ran."""

from ssamba import demo


def _runs(values):
    return [{"test": v} for v in values]


def _probes(with_long: bool):
    row = {"chance": 0.1, "log-mel": _runs([0.2, 0.2, 0.2]),
           "ssamba random init": _runs([0.3, 0.3, 0.3]), "ssamba pretrained": _runs([0.35, 0.35, 0.35]),
           "ssast random init": _runs([0.3, 0.3, 0.3]), "ssast pretrained": _runs([0.3, 0.32, 0.34])}
    if with_long:
        row["ssast long"] = _runs([0.5, 0.5, 0.5])
    return {"kws": row}


def test_probe_table_gives_fresh_and_long_gains_over_random_init():
    table = demo.format_probe_table(_probes(with_long=True), ("ssamba", "ssast"))
    head, _, line = table.splitlines()
    assert "ssamba long" not in head and head.count("ssast long") == 1 and "ssamba fresh" in head
    assert line.split()[-2:] == ["0.0", "+20.0"]  # ssast long: 50.0 +- 0.0, +20 over random init
    assert "+5.0" in line and "+2.0" in line  # the fresh gains: ssamba +5, ssast +2
    assert "long" not in demo.format_probe_table(_probes(with_long=False), ("ssamba", "ssast"))


def test_finetune_table_gives_fresh_and_long_gains_over_scratch():
    rows = [{"task": "kws", "model": "ssast", "init": init, "acc": acc, "seed": s}
            for init, acc in (("scratch", 0.2), ("pretrained", 0.25), ("long", 0.6)) for s in range(3)]
    rows += [{"task": "kws", "model": "ssamba", "init": init, "acc": 0.3, "seed": s}
             for init in ("scratch", "pretrained") for s in range(3)]
    head, _, line = demo.format_finetune_table(rows, _probes(False), ("ssamba", "ssast")).splitlines()
    assert head.count("long") == 1 and "ssast long" in head
    assert line.split()[-1] == "+40.0" and "+5.0" in line


def test_bar_styles_keep_one_colour_per_family_and_shade_by_init():
    styles = {init: demo._bar_style(f"ssamba {init}") for init in ("random init", "pretrained", "long")}
    assert {s["color"] for s in styles.values()} == {demo.FAMILY_COLOURS["ssamba"]}
    assert styles["random init"]["alpha"] < styles["pretrained"]["alpha"] < styles["long"]["alpha"]
    assert demo._bar_style("ssast scratch")["color"] == demo.FAMILY_COLOURS["ssast"] != styles["long"]["color"]
    assert demo._bar_style("log-mel")["label"] == "log-mel"
    assert styles["random init"]["hatch"] and not styles["pretrained"]["hatch"]  # untrained bars hatched


def test_pretrain_steps_reaches_the_demo_and_rejects_nonsense(monkeypatch, capsys):
    import pytest

    from ssamba.cli import main

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda *args, **kwargs: seen.update(kwargs))
    assert main(["demo", "--quick", "--pretrain-steps", "30"]) == 0
    assert seen["pretrain_steps"] == 30
    assert main(["demo", "--quick"]) == 0 and seen["pretrain_steps"] is None
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--pretrain-steps", "0"])
    assert stop.value.code == 2 and "must be at least 1" in capsys.readouterr().err
