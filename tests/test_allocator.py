"""statevad.allocator: freed tensors are reused instead of being unmapped and re-faulted (glibc only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from statevad.allocator import keep_freed_memory

# A small training-like step on 48 MB activations, eight times; the minor page faults of each step.
PROBE = """
import json, resource
import torch
from statevad.allocator import keep_freed_memory
took = keep_freed_memory()
torch.manual_seed(0)
conv = torch.nn.Conv2d(8, 8, 3, padding=1)
x = torch.randn(96, 8, 128, 128)  # 48 MB activations: above the 32 MiB that glibc ever serves from its heap
faults = []
for _ in range(8):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    conv(x).relu().sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"took": took, "faults": faults}))
"""


def _probe(env_value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("STATEVAD_MALLOC", None)
    if env_value is not None:
        env["STATEVAD_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    import platform

    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="the allocator setting is glibc-specific (Linux); elsewhere a no-op")
def test_freed_memory_is_reused_and_opt_out_keeps_defaults() -> None:
    tuned = _probe(None)
    default = _probe("default")
    assert tuned["took"] is True and default["took"] is False
    # glibc's default unmaps every 48 MB activation and re-faults its 12,288 pages at each step (measured:
    # 86,000 faults per step, forever); the tuned heap reuses them once the first steps have grown it (it may
    # still grow by a block in one of the later steps, measured 0 or 12,288, hence a steady step and a sum)
    assert min(default["faults"][-4:]) > 20_000
    assert min(tuned["faults"][-4:]) < 1_000
    assert sum(tuned["faults"][-4:]) < sum(default["faults"][-4:]) / 4


def test_opt_out_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEVAD_MALLOC", "default")
    assert keep_freed_memory() is False


# A 64 MB block freed after keep_freed_memory stays in the process; after return_large_blocks (what
# `statevad serve` sets) it goes back to the OS at once, and release_free_memory returns what a heap kept.
RETURN_PROBE = """
import json, re, sys
import numpy as np
from statevad.allocator import keep_freed_memory, release_free_memory, return_large_blocks
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
keep_freed_memory()
if sys.argv[1] == "serve":
    assert return_large_blocks()
a = np.ones(64 << 20, np.uint8); before = rss(); del a; after_free = rss()
released = release_free_memory(); after_release = rss()
print(json.dumps({"before": before, "after_free": after_free, "after_release": after_release,
                  "released": released}))
"""


@pytest.mark.skipif(not _glibc(), reason="the allocator setting is glibc-specific (Linux); elsewhere a no-op")
def test_serve_returns_large_blocks_and_releases_free_memory() -> None:
    def run(mode: str) -> dict:
        env = {k: v for k, v in os.environ.items() if k != "STATEVAD_MALLOC"}
        out = subprocess.run([sys.executable, "-c", RETURN_PROBE, mode], env=env, capture_output=True,
                             text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    keep, serve = run("keep"), run("serve")
    assert keep["before"] - keep["after_free"] < 16  # kept in the heap (MB)
    assert keep["released"] and keep["before"] - keep["after_release"] > 48  # malloc_trim gives it back
    assert serve["before"] - serve["after_free"] > 48  # mapped, so unmapped when freed


def test_serve_opt_out_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    from statevad.allocator import return_large_blocks

    monkeypatch.setenv("STATEVAD_MALLOC", "default")
    assert return_large_blocks() is False
