"""The pretraining step ``ssamba bench train`` times, for its worker and the examples that
profile or A/B it (``lab/step_profile.py``, ``train_floor.py``, ``mixer_ab.py``)."""

from __future__ import annotations


def pretraining_step(model, spec, mask_ratio: float = 400 / 512, seed: int = 0):
    """The step ``ssamba bench train`` times, for ``model`` (put in training mode) on the
    spectrograms ``spec (B, T, F)``: the official objective with ``mask_ratio`` of the
    patches masked (masks drawn from a CPU generator seeded with ``seed``), backward and
    an AdamW step over the encoder and both heads, built as training builds it (fused where
    it runs). Returns ``(step, num_masked)``; the allocator policy is the caller's."""
    import torch

    from ..objectives import MaskedPatchModeling, PatchModelingConfig
    from ..training.optim import fused_where_possible

    model.train()
    fgrid, tgrid = model.patch_grid(spec.shape[1])
    num_masked = max(1, round(float(mask_ratio) * fgrid * tgrid))
    objective = MaskedPatchModeling(PatchModelingConfig(num_masked=num_masked),
                                    model.config.embed_dim, model.config.patch_size).to(spec.device)
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    optimizer = fused_where_possible(torch.optim.AdamW, params, lr=1e-4, weight_decay=0.05)
    mask_gen = torch.Generator().manual_seed(seed)  # masks are drawn on the CPU

    def step():
        optimizer.zero_grad(set_to_none=True)
        objective(model, spec, mask_gen)["loss"].backward()
        optimizer.step()

    return step, num_masked
