"""The command line's OpenMP wait policy (``ssamba.threads``): sleep when the machine is busy.

Each case runs in a fresh interpreter, because the policy only acts before torch is
imported and this test process has imported it long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ssamba.threads import apply_thread_policy, busy_cores

PROBE = (
    "import json, os, sys\n"
    "from ssamba.threads import apply_thread_policy\n"
    "policy = apply_thread_policy()\n"
    "print(json.dumps({'policy': policy, 'wait': os.environ.get('OMP_WAIT_POLICY'),\n"
    "                  'threads': os.environ.get('OMP_NUM_THREADS'), 'torch': 'torch' in sys.modules}))\n"
)
SPIN = "while True: pass\n"


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS",
                          "SSAMBA_THREAD_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=dict(clean, **env), capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def busy_machine():
    """One spinning process per usable CPU, for the length of the test."""
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(len(os.sched_getaffinity(0)))]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_explicit_choices_set_the_environment_before_torch():
    passive = probe(SSAMBA_THREAD_POLICY="passive")
    assert passive == {"policy": "passive", "wait": "PASSIVE", "threads": None, "torch": False}
    active = probe(SSAMBA_THREAD_POLICY="active")
    assert active["policy"] == "active" and active["wait"] is None


def test_the_users_own_openmp_settings_are_left_alone():
    for var, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000")):
        got = probe(**{var: value})
        assert got["policy"] == "user"
        assert got["wait"] == (value if var == "OMP_WAIT_POLICY" else None)
    assert probe(SSAMBA_THREAD_POLICY="off")["policy"] == "user"


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs Linux /proc/stat")
def test_a_busy_machine_is_seen_and_makes_threads_sleep(busy_machine):
    import time

    time.sleep(0.5)  # the spinners are running
    assert busy_cores(0.3) >= 0.75 * len(os.sched_getaffinity(0)) - 0.25
    auto = probe()
    assert auto["policy"] == "passive" and auto["wait"] == "PASSIVE"
    share = probe(SSAMBA_THREAD_POLICY="share")
    assert share["wait"] == "PASSIVE" and share["threads"] is not None
    assert 1 <= int(share["threads"]) <= max(1, len(os.sched_getaffinity(0)) - 1)


def test_too_late_once_torch_is_imported():
    import ssamba.threads as threads

    assert "torch" in sys.modules
    saved = threads._applied
    threads._applied = None
    try:
        assert apply_thread_policy() in ("late", "user")
    finally:
        threads._applied = saved


def test_a_bad_policy_is_one_error_line():
    env = dict(os.environ, SSAMBA_THREAD_POLICY="fast")
    proc = subprocess.run([sys.executable, "-m", "ssamba.cli", "models"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "ssamba: error: SSAMBA_THREAD_POLICY must be auto, share, active, passive or off, not 'fast'"
    ]
