"""How the command line's OpenMP threads wait: spin on a quiet machine, sleep on a busy one.

PyTorch (and the CPU scan kernel, which runs on PyTorch's OpenMP team) keeps one thread
per core. Between parallel regions the OpenMP runtime lets idle threads *spin* for a
while before they sleep. On a quiet machine that is what makes the thousands of small
operations of a Mamba step cheap to start. When another process keeps the cores busy it
is a disaster: a thread spins on a core whose other thread - the one it waits for - has
been descheduled, and a training step of ``ssamba_tiny`` ran 4.7x slower beside one
other PyTorch job instead of about 2x (``ssamba bench train --under-load``).
``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) fixes the busy case and costs about 2x on a
quiet machine, so neither setting is right everywhere.

:func:`apply_thread_policy` therefore looks, once, before torch is imported, at how
busy the CPUs this process may run on were over the last ~0.1 s (``/proc/stat``), and
sets ``OMP_WAIT_POLICY=PASSIVE`` if other processes kept at least half a core busy.
The choice holds for the life of the process (OpenMP reads it when it starts); the
number of threads, and so every result, is the same either way. It is applied by the
``ssamba`` command and the benchmark workers, never on ``import ssamba``: library users
choose for themselves.

Overrides, in order:

* ``SSAMBA_THREAD_POLICY=active`` or ``passive``: always that; ``off``: touch nothing;
  ``share``: like ``auto``, and on a busy machine also as many threads as cores are
  free (at least one; unless ``OMP_NUM_THREADS`` is set). It helped one workload beside
  another job and hurt others (see the README), and the thread count then depends on
  the load, while PyTorch's gradients differ in the last bits between thread counts:
  runs stop being bitwise repeatable, which is why it is not the default;
* any of ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``KMP_BLOCKTIME`` already set: left
  as the user set it (the policy does nothing);
* ``OMP_NUM_THREADS`` / ``torch.set_num_threads`` choose the thread count as usual.

This module must not import torch.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["OPENMP_WAIT_VARS", "apply_thread_policy", "busy_cores", "thread_policy"]

#: The OpenMP runtimes' own wait settings: set by the user, they win.
OPENMP_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
#: Cores kept busy by others above which the machine counts as loaded.
BUSY_THRESHOLD = 0.5

_applied: str | None = None


def _cpu_times(cpus: set[int] | None) -> tuple[float, float] | None:
    """(busy, total) jiffies summed over ``cpus`` (all if None), from ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    busy = total = 0.0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        try:
            index = int(name[3:])
        except ValueError:
            continue
        if cpus is not None and index not in cpus:
            continue
        fields = [float(v) for v in rest.split()]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        all_ = sum(fields[:8])  # user..steal; guest time is already inside user
        busy += all_ - idle
        total += all_
    return busy, total


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _usable_cpus() -> int:
    cpus = _affinity()
    return len(cpus) if cpus else (os.cpu_count() or 1)


def busy_cores(window_s: float = 0.1) -> float | None:
    """Cores' worth of CPU time that other processes used over ``window_s`` (this one
    sleeps meanwhile), counted on the CPUs this process may run on; None off Linux."""
    cpus = _affinity()
    first = _cpu_times(cpus)
    if first is None:
        return None
    time.sleep(window_s)
    second = _cpu_times(cpus)
    if second is None:
        return None
    busy, total = second[0] - first[0], second[1] - first[1]
    return _usable_cpus() * busy / total if total > 0 else 0.0


def thread_policy() -> str:
    """The wait policy this process runs with: ``active``, ``passive`` (with the thread
    count, under ``share``) or ``user`` (the environment decided), as
    :func:`apply_thread_policy` left it."""
    if _applied is not None:
        return _applied
    if os.environ.get("OMP_WAIT_POLICY", "").lower() == "passive":
        return "passive"
    return "user" if any(os.environ.get(v) for v in OPENMP_WAIT_VARS) else "active"


def apply_thread_policy() -> str:
    """Choose the OpenMP wait policy for this process (see the module docstring) and
    return it: ``active``, ``passive`` (``passive, N threads`` under ``share``), ``user``
    (left to the environment) or ``late`` (torch was imported already: nothing changes)."""
    global _applied
    if _applied is not None:
        return _applied
    choice = os.environ.get("SSAMBA_THREAD_POLICY", "auto").strip().lower()
    if choice not in ("auto", "share", "active", "passive", "off"):
        from .errors import UserError

        raise UserError(f"SSAMBA_THREAD_POLICY must be auto, share, active, passive or off, not {choice!r}")
    if choice == "off" or (choice == "auto" and any(os.environ.get(v) for v in OPENMP_WAIT_VARS)):
        _applied = "user"
    elif "torch" in sys.modules:
        _applied = "late"
    elif choice in ("active", "passive"):
        _applied = choice
    else:
        busy = busy_cores()
        _applied = "passive" if busy is not None and busy >= BUSY_THRESHOLD else "active"
        if _applied == "passive" and choice == "share" and not os.environ.get("OMP_NUM_THREADS"):
            free = max(1, round(_usable_cpus() - busy))
            os.environ["OMP_NUM_THREADS"] = str(free)
            _applied = f"passive, {free} thread{'s' if free > 1 else ''}"
    if _applied.startswith("passive"):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return _applied
