"""MambaOut's mixer against the literal definition, and the MambaOut encoder."""

import pytest
import torch
import torch.nn.functional as F

import ssamba
from ssamba.layers import BiMambaMixer, GatedConvMixer
from ssamba.models import MambaOut, SSAMBA


def _literal(mixer: GatedConvMixer, hidden):
    """The definition with flips and nn.Conv1d's own causal convolution (padding K-1,
    first L outputs): out_proj(mean(SiLU(conv_f(x)), flip(SiLU(conv_b(flip(x))))) * SiLU(z))."""
    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)  # (B, L, Di)
    length = hidden.shape[1]

    def causal(conv, v):
        return F.silu(conv(v.transpose(1, 2))[..., :length]).transpose(1, 2)

    y = causal(mixer.forward_conv, x)
    if mixer.backward_conv is not None:
        y = y + causal(mixer.backward_conv, x.flip(1)).flip(1)
        if mixer.average_directions:
            y = y / 2
    return mixer.out_proj(y * F.silu(z))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("average", [True, False])
def test_mixer_equals_the_literal_definition_and_mirrors(bidirectional, average, gen):
    torch.manual_seed(0)
    mixer = GatedConvMixer(16, bidirectional=bidirectional, average_directions=average).double()
    hidden = torch.randn(2, 11, 16, generator=gen, dtype=torch.float64)
    assert torch.allclose(mixer(hidden), _literal(mixer, hidden), atol=1e-12)
    assert torch.allclose(mixer(hidden, mirrored=True), _literal(mixer, hidden.flip(1)).flip(1), atol=1e-12)
    with torch.no_grad():  # the encoder's inference interface, with a norm and an output to add to
        norm = torch.nn.LayerNorm(16).double()
        out = torch.ones(2, 11, 16, dtype=torch.float64)
        lean = mixer.infer(hidden, mirrored=True, out=out, norm=norm)
        assert lean is out and torch.allclose(out, 1 + mixer(norm(hidden), mirrored=True), atol=1e-12)


def test_mixer_reach_is_the_conv_width():
    # no SSM: a token sees d_conv - 1 neighbours on each side, no further
    torch.manual_seed(0)
    mixer = GatedConvMixer(16, d_conv=4)
    x = torch.randn(1, 20, 16)
    changed = x.clone()
    changed[:, 10] += 1
    with torch.no_grad():
        moved = (mixer(changed) - mixer(x)).abs().amax(-1)[0]
    assert (moved[7:14] > 0).all() and (moved[:7] == 0).all() and (moved[14:] == 0).all()


def test_mambaout_is_ssamba_without_the_ssm():
    ssamba_model, mambaout = ssamba.create_model("ssamba_tiny"), ssamba.create_model("mambaout_tiny")
    assert isinstance(mambaout, MambaOut) and isinstance(ssamba_model, SSAMBA) and mambaout.family == "mambaout"
    assert isinstance(mambaout.layers[0].mixer, GatedConvMixer)
    assert len(mambaout.layers) == len(ssamba_model.layers) == 24
    assert mambaout.config.embed_dim == ssamba_model.config.embed_dim
    # every parameter of MambaOut is one of SSAMBA's with the same shape; what SSAMBA has
    # beyond them is exactly its SSMs (x_proj, dt_proj, A_log, D per direction)
    theirs = dict(ssamba_model.named_parameters())
    renamed = {n.replace("forward_conv", "forward_ssm.conv1d").replace("backward_conv", "backward_ssm.conv1d"): p
               for n, p in mambaout.named_parameters()}
    assert all(theirs[n].shape == p.shape for n, p in renamed.items())
    extra = {n.split(".")[-2] if n.endswith(".weight") or n.endswith(".bias") else n.split(".")[-1]
             for n in set(theirs) - set(renamed)}
    assert extra == {"x_proj", "dt_proj", "A_log", "D"}
    assert not any(isinstance(m, BiMambaMixer) for m in mambaout.modules())
