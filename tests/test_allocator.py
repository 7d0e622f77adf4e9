"""The training commands' allocator policy (``ssamba.allocator``): freed memory is kept for
reuse, so training steps stop faulting fresh pages in.

Cases that set the policy run in a fresh interpreter: it holds for the process.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from ssamba import allocator
from ssamba.cli import main

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

#: A 24 MiB tensor right after the policy is applied, and how many bytes glibc mmapped for
#: it (mallinfo2). glibc's own threshold starts at 128 KiB and moves as blocks are freed,
#: so counting page faults of training steps compares two moving targets; where a block
#: comes from is deterministic.
PROBE = (
    "import ctypes, json\n"
    "from ssamba.allocator import apply_allocator_policy\n"
    "policy = apply_allocator_policy()\n"
    "import torch\n"
    "class Info(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',\n"
    "                                                'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
    "mallinfo = ctypes.CDLL(None).mallinfo2\n"
    "mallinfo.restype = Info\n"
    "before = mallinfo().hblkhd\n"
    "block = torch.ones(6 * 2**20)\n"
    "print(json.dumps({'policy': policy, 'mmapped': mallinfo().hblkhd - before}))\n"
)


def run_probe(policy: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in allocator._USER_VARS}
    out = subprocess.run([sys.executable, "-c", PROBE], env=dict(env, SSAMBA_MALLOC_POLICY=policy),
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def fresh_policy(monkeypatch):
    """The module as if no policy had been applied in this process yet."""
    monkeypatch.setattr(allocator, "_applied", None)
    for var in allocator._USER_VARS + ("SSAMBA_MALLOC_POLICY",):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.skipif(not GLIBC, reason="the policy acts on glibc's malloc only")
def test_blocks_up_to_32_mib_come_from_the_reused_heap_not_fresh_mappings():
    kept, system = run_probe("keep"), run_probe("off")
    assert kept["policy"] == "keep" and system["policy"] == "system"
    assert system["mmapped"] >= 24 * 2**20  # glibc's default: a fresh mapping, faulted in page by page
    assert kept["mmapped"] == 0  # the policy: from the heap, reused after it is freed


def test_the_users_own_malloc_settings_are_left_alone(fresh_policy, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.apply_allocator_policy() == "user"
    assert allocator.allocator_policy() == "user"


def test_off_touches_nothing(fresh_policy, monkeypatch):
    monkeypatch.setenv("SSAMBA_MALLOC_POLICY", "off")
    assert allocator.apply_allocator_policy() == "system"


@pytest.mark.skipif(not GLIBC, reason="the policy acts on glibc's malloc only")
def test_default_is_keep_on_glibc(fresh_policy):
    assert allocator.apply_allocator_policy() == "keep"


def test_a_bad_policy_is_one_error_line(fresh_policy, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("SSAMBA_MALLOC_POLICY", "never")
    assert main(["pretrain", f"run.out_dir={tmp_path}", "run.device=cpu"]) == 2  # checked once the run is known to be on CPU
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ssamba: error: SSAMBA_MALLOC_POLICY must be keep or off, not 'never'"]
