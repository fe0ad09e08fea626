"""DDP training (torchrun, gloo on CPU) matches a 1-process run with the same global batch and seed.

Why it can match: every rank takes its share of each global batch, its loss is weighted so that DDP's
gradient average is the gradient of the global-batch mean (also for unequal and empty shares), and
BatchNorm statistics cover the *global* batch (:class:`statevad.distributed.SyncBatchNorm2d`; PyTorch's
own SyncBatchNorm refuses CPU tensors). The first step agrees to ~1e-8.

Why a tolerance: summation order differs (per-rank partial sums, float64 BatchNorm statistics vs PyTorch's
float32 kernel), and Adam (eps 1e-7) divides every gradient coordinate by its own magnitude, so
coordinates whose gradient is pure rounding noise (the conv biases before BatchNorm: zero in exact
arithmetic) take +-lr steps whose sign depends on that order. Measured on this problem: per-epoch loss within
6e-4 relative (the 1-process run alone moves by 3e-4 between 1 and 2 threads), median weight difference
4e-4, worst 2e-2 (such a bias), training means 2e-3, training stds (of near-constant errors) 5e-2.
Per-rank BatchNorm (plain DDP) measured 2e-3 / 8e-3 on the two epoch losses, 1.2e-2 median weight
difference and stds off by ~70x, so the bounds below separate "same training" from "another training".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_work

from statevad.cli import main
from statevad.distributed import DistContext, env_world
from statevad.errors import UserError
from statevad.preparation import parse_shard, shard_clips
from statevad.synthetic import make_scene

pytestmark = pytest.mark.usefixtures("one_thread")

# 16 training cubes, global batch 5: batches of 5, 5, 5, 1 -> rank shares 3/2 and 1/0 (an empty share).
ARGS = ["--model-size", "tiny", "--epochs", "2", "--batch-size", "5", "--lr", "3e-3", "--seed", "3",
        "--device", "cpu", "--quiet"]


def _torchrun(work: Path, out: Path, nproc: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FFMPEG_LOGLEVEL": "-8"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "statevad", "train", "--work", str(work), "--out", str(out), *ARGS]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.slow
def test_two_rank_gloo_training_matches_one_process(tmp_path: Path) -> None:
    work = make_work(tmp_path / "work")
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    assert main(["train", "--work", str(work), "--out", str(single), *ARGS]) == 0
    res = _torchrun(work, ddp, 2)
    assert res.returncode == 0, res.stderr[-3000:]
    assert '"ranks": 2' in res.stdout and res.stdout.count('"model"') == 1  # rank 0 alone reports
    a, b = torch.load(single, weights_only=True), torch.load(ddp, weights_only=True)
    np.testing.assert_allclose(b["history"]["epoch_loss"], a["history"]["epoch_loss"], rtol=2e-3)
    assert len(a["history"]["epoch_loss"]) == 2
    diffs = []
    for k, v in a["state_dict"].items():
        w = b["state_dict"][k]
        if v.is_floating_point():
            d = (w - v).abs()
            assert d.max() < 5e-2, k
            diffs.append(float(d.mean()))
        else:
            assert torch.equal(w, v), k  # num_batches_tracked: every global step counted once
    assert float(np.median(diffs)) < 2e-3
    for k in ("raw_mean", "flow_mean"):
        assert b["stats"][k] == pytest.approx(a["stats"][k], rel=1e-2), k
    for k in ("raw_std", "flow_std"):
        assert b["stats"][k] == pytest.approx(a["stats"][k], rel=0.25), k
    assert b["stats"]["n_cubes"] == a["stats"]["n_cubes"] == 16  # statistics over ALL training cubes
    for k in ("motion_mean", "motion_std"):  # the cubes' speed does not depend on the weights: equal
        assert b["stats"][k] == pytest.approx(a["stats"][k], rel=1e-12), k
    assert not list(tmp_path.glob(".*.tmp*")) and not (tmp_path / "ddp.resume.pt").exists()


def test_torchrun_environment_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_world() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_world() == (1, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UserError, match="inconsistent torchrun"):
        env_world()
    ctx = DistContext(rank=1, world=2)
    assert not ctx.is_main and ctx.active and not DistContext().active




def test_shard_partition_and_parsing() -> None:
    parts = [shard_clips(7, (i, 3)) for i in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(parts, [])) == list(range(7))
    assert parse_shard("1/4") == (1, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)


@pytest.mark.slow
def test_two_shards_and_merge_equal_an_unsharded_run(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    scene = make_scene(tmp_path / "scene", n_train=3, n_test=2, n_frames=16)
    common = ["--root", str(scene), "--boxes", "motion", "--length", "1", "--quiet"]
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert main(["prepare", "--work", str(one), *common]) == 0
    assert main(["prepare", "--work", str(sharded), "--shard", "1/2", *common]) == 0
    assert not (sharded / "manifest.json").exists()
    capsys.readouterr()
    assert main(["prepare", "--work", str(sharded), "--merge", *common]) == 2
    err = capsys.readouterr().err
    assert "cannot merge" in err and "2 of 3 train clips" in err and "01" in err and "03" in err
    assert main(["prepare", "--work", str(sharded), "--shard", "0/2", *common]) == 0
    assert main(["prepare", "--work", str(sharded), "--merge", *common]) == 0
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (one, sharded))
    for split in ("train", "test"):
        for name in ("raw", "flow", "frame", "clip", "box", "frames.json", "labels"):
            fa = one / split / (name if "." in name else f"{name}.npy")
            if fa.exists() or name != "labels":
                assert fa.read_bytes() == (sharded / split / fa.name).read_bytes(), (split, name)
        ea, eb = a["splits"][split], b["splits"][split]
        assert eb["n_clips_computed"] == 0
        for k in ("n_clips_computed", "seconds"):
            ea.pop(k), eb.pop(k)
        assert ea == eb
    assert {k: v for k, v in a.items() if k != "splits"} == {k: v for k, v in b.items() if k != "splits"}
