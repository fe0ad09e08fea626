"""statevad.allocator: freed tensors are reused instead of being unmapped and re-faulted (glibc only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from statevad.allocator import keep_freed_memory

# Allocate, touch and free a 128 MB array twice; report the minor page faults of the second round.
PROBE = """
import json, resource, sys
import numpy as np
from statevad.allocator import keep_freed_memory
took = keep_freed_memory()
def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(16_000_000)  # 128 MB: far above glibc's mmap threshold
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
faults()
print(json.dumps({"took": took, "faults": faults()}))
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
    # 128 MB = 31,250 pages of 4 KiB: glibc's default unmaps and re-faults all of them, the tuned heap none
    assert default["faults"] > 20_000
    assert tuned["faults"] < 2_000


def test_opt_out_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEVAD_MALLOC", "default")
    assert keep_freed_memory() is False
