"""A/B the Mamba mixer's code at a git revision against the working tree, in one process.

Loads ``src/ssamba/layers/mamba.py`` as it is at ``REV`` beside the current one (both use
the current ``ssamba.ops`` and everything else), builds one model with the current code,
and alternates steps with its mixers switched between the two versions' classes (the
same parameters, the same inputs), each version first in every other round. On a machine
whose speed drifts by tens of percent from minute to minute, the ratio of two versions
measured together is meaningful where their separate timings are not
(``lab/kernel_ab.py`` does the same for the scan kernel's source). Two steps:

* ``--train`` (default): ``ssamba bench train``'s pretraining step (two encoder passes,
  InfoNCE + 10 x MSE, backward, AdamW; batch 8) at ``--frames``;
* ``--inference``: the encoder's forward without autograd (the lean paths) on
  ``--frames`` frames at batch ``--batch-size``;
* ``--inference --per-mixer``: the same forwards, but both versions run every mixer
  call on the same input (the order alternating from call to call; the working tree's
  result goes on), and the times are the sums over all calls. This machine's speed
  moves between slow and fast phases lasting many seconds: alternating whole forwards
  of several seconds can land the versions in different phases, alternating calls of a
  fraction of a second cannot.

Prints each version's median step time and the ratio B / A (A: ``REV``, B: the working
tree).

    python lab/mixer_ab.py HEAD~1 --frames 1024 --steps 4
    python lab/mixer_ab.py HEAD~1 --inference --frames 44000 --batch-size 1 --steps 3
    python lab/mixer_ab.py HEAD~1 --inference --per-mixer --frames 44000 --batch-size 1 --steps 3
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the lab's own helpers
from revision import module_at  # noqa: E402


def load_revision(rev: str):
    """``ssamba.layers.mamba`` as of ``rev``, imported as a sibling module of the current one."""
    module = module_at(rev, "ssamba.layers.mamba", "mixer_ab")
    mixer = module.BiMambaMixer
    if not hasattr(mixer, "infer"):  # revisions before the rename call the inference path forward_lean
        mixer.infer = mixer.forward_lean
    return module


def use_version(model, module) -> None:
    """Switch every mixer (and its SSMs) of ``model`` to the classes of ``module``."""
    for sub in model.modules():
        for cls_name in ("BiMambaMixer", "SelectiveSSM"):
            if type(sub).__name__ == cls_name:
                sub.__class__ = getattr(module, cls_name)


def main(argv=None) -> int:
    import torch

    from ssamba.allocator import apply_allocator_policy
    from ssamba.benchmarks.train import padded_frames
    from ssamba.layers import mamba
    from ssamba.models import get_config

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev", help="git revision of version A (version B is the working tree)")
    p.add_argument("--preset", default="ssamba_tiny")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--train", dest="inference", action="store_false", help="time the pretraining step (default)")
    mode.add_argument("--inference", action="store_true", help="time the encoder's forward without autograd")
    p.set_defaults(inference=False)
    p.add_argument("--frames", type=int, default=1024, help="input frames (padded to whole 16-frame patches)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="timed steps per version, alternated")
    p.add_argument("--per-mixer", action="store_true",
                   help="with --inference: alternate the versions at every mixer call, not every forward")
    args = p.parse_args(argv)
    if args.per_mixer and not args.inference:
        p.error("--per-mixer needs --inference")
    from train_floor import build_step

    apply_allocator_policy()
    old = load_revision(args.rev)
    frames = padded_frames(get_config(args.preset), args.frames)
    if args.inference:
        from ssamba.models import create_model

        torch.manual_seed(0)
        model = create_model(args.preset, input_tdim=frames).eval()
        spec = torch.randn(args.batch_size, frames, model.config.input_fdim)

        def step():
            with torch.inference_mode():
                model.forward_features(spec)
    else:
        step, model = build_step(args.preset, frames, args.batch_size, with_model=True)
    if args.per_mixer:
        return per_mixer(args, model, step, old, mamba, frames)
    times: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.steps + 1):  # the first round warms up
        for key in ("AB" if i % 2 else "BA"):
            use_version(model, old if key == "A" else mamba)
            t0 = time.perf_counter()
            step()
            if i:
                times[key].append(time.perf_counter() - t0)
    use_version(model, mamba)
    ta, tb = (statistics.median(times[k]) for k in ("A", "B"))
    what = "inference forward" if args.inference else "pretraining step"
    print(f"{args.preset} {what}, {frames} frames, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"median of {args.steps}: A ({args.rev}) {ta:.3f} s  B (working tree) {tb:.3f} s  B/A {tb / ta:.3f}")
    return 0


def per_mixer(args, model, step, old, current, frames) -> int:
    """``--per-mixer``: every mixer's inference path (``infer``) runs in both versions, timed, the
    order alternating from call to call; the working tree's result is the one used."""
    import torch

    totals = {"A": 0.0, "B": 0.0}
    calls = [0]  # mixer calls, each timed in both versions

    def both(mixer, hidden, mirrored=False, out=None, norm=None):
        calls[0] += 1
        result = None
        for key in ("AB" if calls[0] % 2 else "BA"):
            use_version(mixer, old if key == "A" else current)
            target = out if out is None or key == "B" else out.clone()  # A adds into a copy
            t0 = time.perf_counter()
            found = type(mixer).infer(mixer, hidden, mirrored, target, norm)
            totals[key] += time.perf_counter() - t0
            if key == "B":
                result = found
        return result

    mixers = [m for m in model.modules() if isinstance(m, current.BiMambaMixer)]
    for mixer in mixers:
        mixer.infer = functools.partial(both, mixer)
    try:
        step()  # warm-up
        totals.update(A=0.0, B=0.0)
        calls[0] = 0
        for _ in range(args.steps):
            step()
    finally:
        for mixer in mixers:
            del mixer.infer
            use_version(mixer, current)
    ta, tb = totals["A"], totals["B"]
    print(f"{args.preset} inference forward, per mixer call, {frames} frames, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, {args.steps} forwards, {calls[0]} mixer calls: "
          f"A ({args.rev}) {ta:.3f} s  B (working tree) {tb:.3f} s  B/A {tb / ta:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
