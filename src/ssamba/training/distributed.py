"""Multi-process training with ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc_per_node N -m ssamba.cli pretrain ...`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on GPUs, gloo on
CPU). Without those variables everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: str | None) -> int | None:
    """The integer in environment variable ``name`` (``default`` when unset)."""
    text = os.environ.get(name, default)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer (torchrun sets it)") from None


def setup(device: str = "auto") -> tuple[World, str]:
    """Join the process group if launched by torchrun; returns the world and the device
    name this process should use (``cuda:<local_rank>`` on GPUs)."""
    size, rank, local_rank = (_env_int(name, default) for name, default in
                              (("WORLD_SIZE", "1"), ("RANK", None), ("LOCAL_RANK", "0")))
    if size <= 1:
        return World(), device
    if rank is None or not 0 <= rank < size:
        raise ValueError(f"WORLD_SIZE={size} needs RANK set to 0..{size - 1} (got {os.environ.get('RANK')!r}): "
                         "launch with torchrun, which sets both, or unset WORLD_SIZE")
    world = World(rank, size, local_rank)
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if not use_cuda:  # share the cores between the processes on this machine
        local = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    return world, device


def current() -> World:
    """The world of this process (single process unless a group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for a single process)."""
    world = current()
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def mean_scalars(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys on every rank)."""
    world = current()
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: v / world.size for k, v in zip(keys, tensor.tolist())}


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
