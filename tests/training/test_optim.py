import pytest
import torch

import ssamba
from ssamba.training.optim import LRSchedule, OptimConfig, build_optimizer


def test_groups_honour_no_weight_decay_tags_and_head_multiplier():
    model = ssamba.create_model("ssamba_test", num_classes=3)
    opt = build_optimizer(model, OptimConfig(lr=1.0, weight_decay=0.1, head_lr_multiplier=3.0), ("head.",))
    names = {id(p): n for n, p in model.named_parameters()}
    by_group = {g["name"]: (g, [names[id(p)] for p in g["params"]]) for g in opt.param_groups}
    no_decay = by_group["body_no_decay"][1]
    assert "layers.0.mixer.forward_ssm.A_log" in no_decay and "pos_embed" in no_decay
    assert by_group["body_no_decay"][0]["weight_decay"] == 0.0
    assert by_group["body"][0]["weight_decay"] == 0.1
    assert all(n.startswith("head.") for n in by_group["head"][1])
    assert by_group["head"][0]["lr"] == 3.0
    assert sum(len(p) for _, p in by_group.values()) == len(list(model.parameters()))


def _schedule(**options):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    return LRSchedule(opt, OptimConfig(lr=1.0, **options)), opt


def test_warmup_is_linear():
    schedule, opt = _schedule(warmup_steps=4, schedule="constant")
    lrs = []
    for step in range(6):
        schedule.apply(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_step_decay_matches_multisteplr():
    schedule, opt = _schedule(warmup_steps=0, schedule="step", decay_start=3, decay_every=2, decay_gamma=0.5)
    param = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([param], lr=1.0)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, list(range(3, 100, 2)), gamma=0.5)
    for epoch in range(1, 10):
        schedule.end_epoch(epoch)
        schedule.apply(0)
        ref_opt.step()
        ref.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"]), epoch


def test_plateau_matches_reduce_on_plateau():
    schedule, opt = _schedule(warmup_steps=0, schedule="plateau", plateau_factor=0.5, plateau_patience=2)
    param = torch.nn.Parameter(torch.zeros(1))
    ref_opt = torch.optim.SGD([param], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="max", factor=0.5, patience=2, threshold=0)
    for epoch, metric in enumerate([0.1, 0.2, 0.2, 0.15, 0.19, 0.3, 0.3, 0.3, 0.3, 0.31], 1):
        schedule.end_epoch(epoch, metric)
        schedule.apply(0)
        ref.step(metric)
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"]), epoch
    state = schedule.state_dict()
    again, _ = _schedule(warmup_steps=0, schedule="plateau")
    again.load_state_dict(state)
    assert again.state_dict() == state


def test_unknown_choices():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, OptimConfig(optimizer="sgdx"))
    with pytest.raises(ValueError, match="schedule"):
        _schedule(schedule="cosine")
