"""Selective scan with interchangeable backends behind one signature.

Every backend computes exactly what :func:`selective_scan_reference` computes and is
tested against it (outputs and gradients). Backends register under a name with an
availability check and a priority; ``backend="auto"`` picks the available one with the
highest priority for the given tensors.

Bidirectional layers call the scan once per direction; ``reverse=True`` runs the
recurrence from the last step to the first (defined by the reference as
``flip(scan(flip(inputs)))`` and tested per backend), so the backward direction costs
no flipped copies where a backend scans in reverse natively (the CPU kernel does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..errors import UserError
from .scan_reference import selective_scan_reference

__all__ = [
    "BackendUnavailableError",
    "available_backends",
    "conv_silu",
    "register_backend",
    "scan_carries_state",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_with_state",
]


class BackendUnavailableError(UserError, RuntimeError):
    """A scan backend asked for by name cannot run here (a setting the user can change)."""


@dataclass(frozen=True)
class ScanBackend:
    name: str
    fn: Callable[..., Tensor]
    is_available: Callable[[Tensor], bool]  # called with ``u``
    priority: int  # higher wins under backend="auto"
    unavailable_reason: Callable[[Tensor], str] | None = None  # for the error of an explicit choice
    # The scan of one piece from a carried state, for inference (see selective_scan_with_state);
    # None where the backend has none.
    with_state: Callable[..., tuple[Tensor, Tensor]] | None = None
    # Where the backend runs when asked for by name but is never chosen by "auto" (Triton's
    # interpreter on CPU tensors); None: where is_available says.
    runs_by_name: Callable[[Tensor], bool] | None = None


_BACKENDS: dict[str, ScanBackend] = {}


def register_backend(
    name: str,
    fn: Callable[..., Tensor],
    is_available: Callable[[Tensor], bool] = lambda u: True,
    priority: int = 0,
    unavailable_reason: Callable[[Tensor], str] | None = None,
    with_state: Callable[..., tuple[Tensor, Tensor]] | None = None,
    runs_by_name: Callable[[Tensor], bool] | None = None,
) -> None:
    """Register ``fn`` (same signature as :func:`selective_scan_reference`, ``reverse``
    included) as ``name``; ``unavailable_reason(u)`` explains a failed explicit choice;
    ``with_state`` (the signature of :func:`selective_scan_with_state`, less ``backend``)
    scans a piece of a longer sequence from a carried state, where the backend can;
    ``runs_by_name(u)``: also usable for ``u`` when named, though "auto" never picks it."""
    _BACKENDS[name] = ScanBackend(name, fn, is_available, priority, unavailable_reason, with_state, runs_by_name)


def available_backends(u: Tensor | None = None) -> list[str]:
    """Names of the registered backends usable for ``u`` (all, if ``u`` is None), best first."""
    ordered = sorted(_BACKENDS.values(), key=lambda b: -b.priority)
    return [b.name for b in ordered if u is None or b.is_available(u)]


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be (batch, channels, length), got shape {tuple(u.shape)}")
    batch, channels, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be (channels={channels}, d_state), got {tuple(A.shape)}")
    d_state = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if tuple(t.shape) != (batch, d_state, length):
            raise ValueError(
                f"{name} must be (batch, d_state, length) = {(batch, d_state, length)}, "
                f"got {tuple(t.shape)}"
            )
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"{name} must be ({channels},), got {tuple(t.shape)}")


def _resolve(backend: str, u: Tensor) -> ScanBackend:
    """The backend that ``backend`` (a name or ``"auto"``) means for ``u``; a clear error
    for an unknown or unavailable name."""
    if backend == "auto":
        return _BACKENDS[available_backends(u)[0]]
    if backend not in _BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; registered: {sorted(_BACKENDS)}")
    chosen = _BACKENDS[backend]
    if not (chosen.is_available(u) or (chosen.runs_by_name is not None and chosen.runs_by_name(u))):
        why = chosen.unavailable_reason(u) if chosen.unavailable_reason else f"it cannot run on {u.device.type} tensors here"
        raise BackendUnavailableError(
            f"scan backend {backend!r} is unavailable: {why}; available: {available_backends(u)} "
            "(a model's scan_backend is a runtime option: load it with scan_backend='auto')")
    return chosen


def scan_carries_state(backend: str, u: Tensor) -> bool:
    """Whether :func:`selective_scan_with_state` can run ``backend`` on tensors like ``u``
    here: the backend has a carried-state scan, and nothing is tracing (those scans are
    eager calls; torch.compile and torch.export see the plain scan)."""
    return _resolve(backend, u).with_state is not None and not torch.compiler.is_compiling()


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
    reverse: bool = False,
) -> Tensor:
    """Selective scan ``(B, D, L) -> (B, D, L)``; see :mod:`ssamba.ops.scan_reference`.

    ``backend`` is a registered name (:func:`available_backends`) or ``"auto"``;
    ``reverse`` scans from the last step to the first (see the reference).
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    chosen = _resolve(backend, u)
    return chosen.fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse=reverse)


def selective_scan_with_state(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
    state: Tensor | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """One piece of a longer sequence, for inference: the scan started from ``state``
    ``(B, D, N)`` (zeros if None), returning ``(out, the state after the piece's last
    step)``. Scanning consecutive pieces, each from the state the previous one left, equals
    one scan over the whole sequence (with ``reverse``, the pieces go from the last to the
    first). No gradients flow through it. ``backend`` as in :func:`selective_scan`, among
    those that can (:func:`scan_carries_state`: the CPU kernel and the reference, each
    tested against one whole-sequence reference scan)."""
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if state is not None and tuple(state.shape) != (u.shape[0], u.shape[1], A.shape[1]):
        raise ValueError(f"state must be (batch, channels, d_state) = {(u.shape[0], u.shape[1], A.shape[1])}, "
                         f"got {tuple(state.shape)}")
    chosen = _resolve(backend, u)
    if chosen.with_state is None:
        raise ValueError(f"scan backend {chosen.name!r} cannot scan from a carried state "
                         "(see scan_carries_state)")
    with torch.no_grad():
        return chosen.with_state(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, state)


def _reference_with_state(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, state):
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse,
                                    initial_state=state, return_state=True)


register_backend("reference", selective_scan_reference, priority=0, with_state=_reference_with_state)
from .conv import conv_silu  # noqa: E402  (the conv before each scan, an op of its own)
# The exportable formulation (torch's scan operator -> ONNX Scan): chosen by name only.
from .scan_export import selective_scan_export  # noqa: E402

register_backend("export", selective_scan_export, priority=-10)

# Fast backends. The modules are cheap to import: the CPU kernel compiles on first use
# (cached on disk), mamba-ssm and Triton are imported on the first CUDA availability check.
from . import scan_cpu as _scan_cpu  # noqa: E402
from . import scan_cuda as _scan_cuda  # noqa: E402
from . import scan_triton as _scan_triton  # noqa: E402

register_backend("cpu", _scan_cpu.selective_scan_cpu, _scan_cpu.is_available, priority=10,
                 unavailable_reason=_scan_cpu.unavailable_reason, with_state=_scan_cpu.selective_scan_cpu_with_state)
register_backend("cuda", _scan_cuda.selective_scan_cuda, _scan_cuda.is_available, priority=20)
# Triton needs no build; below mamba-ssm's kernel until a GPU run measures the two
# (scripts/gpu_check.sh), above the reference loop.
register_backend("triton", _scan_triton.selective_scan_triton, _scan_triton.is_available, priority=15,
                 unavailable_reason=_scan_triton.unavailable_reason, runs_by_name=_scan_triton.runs_interpreted)
