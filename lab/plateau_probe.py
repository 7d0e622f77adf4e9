"""Why does SSAST sit at chance for its first ~1,000 pretraining steps? Look inside its snapshots.

The InfoNCE asks each masked token's output to pick out its own patch among the clip's
other masked patches. A masked token enters as the shared mask embedding plus its
position, so its output can only tell its patch apart by what it reads from its visible
neighbours, through attention. This probe measures, for a transformer's long-run
snapshots and the same architecture at random init, on the pool's validation clips with
masks drawn as the objective draws them, the attention of each layer's masked queries:

* ``entropy``: its entropy over log(tokens), averaged over heads and layers (1: uniform);
* ``local``: the share spent on the tokens within 2 positions of the query (in token
  order), against that share under uniform attention (``uniform``).

    python lab/plateau_probe.py long_runs/ssast

Prints one line per step (0: random init). A scan (SSAMBA) needs no such step: its
causal convolution and recurrence read the neighbouring frames from the start.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def masked_attention(encoder, spec, mask, num_masked: int) -> list:
    """Each block's attention from the masked queries, ``[(B, H, N, L)]`` (prefix tokens
    included in L)."""
    import torch

    attention = []
    prefix = encoder.num_prefix_tokens
    with torch.no_grad():
        tokens = encoder.embed(spec, mask)
        for block in encoder.blocks:
            weights = block.attn.attention_weights(block.norm1(tokens))  # (B, H, L, L)
            rows = weights[:, :, prefix:][mask.unsqueeze(1).expand(-1, weights.shape[1], -1)]
            attention.append(rows.view(spec.shape[0], weights.shape[1], num_masked, -1))
            tokens = block(tokens)
    return attention


def measure(encoder, spec, mask, num_masked: int) -> dict:
    import torch

    attention = masked_attention(encoder, spec, mask, num_masked)
    length, prefix = attention[0].shape[-1], encoder.num_prefix_tokens
    entropy = torch.stack([-(a * a.clamp_min(1e-12).log()).sum(-1).mean() for a in attention]).mean()
    queries = torch.nonzero(mask)[:, 1].view(spec.shape[0], 1, num_masked, 1)  # patch index of each query
    keys = torch.arange(length - prefix).view(1, 1, 1, -1)
    near = ((keys - queries).abs() <= 2).float()  # (B, 1, N, P)
    local = torch.stack([(a[..., prefix:] * near).sum(-1).mean() for a in attention]).mean()
    return {"entropy": float(entropy / math.log(length)), "local": float(local),
            "uniform": float(near.sum(-1).mean() / length)}


def main(argv=None) -> int:
    import torch

    from ssamba.data import ClipDataset, ClipDatasetConfig, collate_clips
    from ssamba.frontend import FrontendConfig
    from ssamba.models import load_model, model_from_config
    from ssamba.objectives import MaskedPatchModeling, PatchModelingConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="long-run folders (examples/long_pretrain.py)")
    p.add_argument("--clips", type=int, default=64, help="validation clips measured")
    args = p.parse_args(argv)
    for run in map(Path, args.runs):
        experiment = json.loads((run / "experiment.json").read_text())
        objective_config = PatchModelingConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                  for k, v in experiment["objective"].items()})
        snapshots = sorted((run / "snapshots").glob("step-*"))
        if not snapshots:
            print(f"{run}: no snapshots yet")
            continue
        first = load_model(snapshots[0])
        if not hasattr(first, "blocks"):
            p.error(f"{run} holds a {type(first).__name__}: the probe reads transformer attention")
        frontend = FrontendConfig(**{k: tuple(v) if isinstance(v, list) else v
                                     for k, v in experiment["frontend"].items()})
        data = ClipDataset(experiment["data"]["valid"], ClipDatasetConfig(frontend=frontend))
        spec = collate_clips([data[i] for i in range(min(args.clips, len(data)))])["spec"]
        objective = MaskedPatchModeling(objective_config, first.config.embed_dim, first.config.patch_size)
        mask = objective.draw_mask(spec.shape[0], first.patch_grid(spec.shape[1]), torch.Generator().manual_seed(0),
                                   spec.device)
        torch.manual_seed(0)
        models = [(0, model_from_config(first.config))] + [(int(s.name.split("-")[1]), load_model(s))
                                                          for s in snapshots]
        for step, model in models:
            found = measure(model.eval(), spec, mask, objective_config.num_masked)
            print(f"{run.name} step {step:>6}: " + "  ".join(f"{k} {v:.3f}" for k, v in found.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
