import pytest
import torch

import ssamba
from ssamba.training.optim import LRSchedule, OptimConfig, build_optimizer, fused_where_possible


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


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_fused_optimizer_on_cpu_matches_the_default_update(name):
    # Three steps of build_optimizer's (fused) optimiser and of PyTorch's default one on
    # copies of a model with the same gradients: the same parameters up to float rounding.
    model = ssamba.create_model("ssamba_test", num_classes=3)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    twin = ssamba.create_model("ssamba_test", num_classes=3)
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, OptimConfig(optimizer=name, lr=1e-2, weight_decay=0.1))
    assert all(group["fused"] for group in opt.param_groups)
    twin_params = dict(twin.named_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    ref = cls([{**{k: v for k, v in g.items() if k not in ("params", "fused")},
                "params": [twin_params[names[id(p)]] for p in g["params"]]} for g in opt.param_groups])
    assert not any(group["fused"] for group in ref.param_groups)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for n, p in model.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen)
            twin_params[n].grad = p.grad.clone()
        opt.step()
        ref.step()
    for n, p in model.named_parameters():
        assert not torch.equal(p, start[n]), n  # every parameter moved
        torch.testing.assert_close(p, twin_params[n], rtol=1e-5, atol=1e-6, msg=n)


def test_fused_where_possible_falls_back():
    # Where PyTorch refuses fused=True (an unsupported device or dtype raises when the
    # optimiser is built), the default implementation is built instead of an error.
    class NoFused(torch.optim.AdamW):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, **kwargs)

    params = (torch.nn.Parameter(torch.zeros(3)) for _ in range(2))  # a generator, consumed once
    opt = fused_where_possible(NoFused, params, lr=1e-3)
    assert isinstance(opt, NoFused) and len(opt.param_groups[0]["params"]) == 2
    assert not opt.param_groups[0]["fused"]


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
