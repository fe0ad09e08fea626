"""Crash safety: a real SIGKILL of `statevad prepare` / `statevad train`, then a rerun, equals an
uninterrupted run; no visible file is ever half-written; corrupted caches / resume states are handled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_work

from statevad import preparation as prep
from statevad.checkpoint import resume_path
from statevad.cli import main
from statevad.synthetic import make_scene

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FFMPEG_LOGLEVEL": "-8"}
TRAIN = ["--model-size", "tiny", "--batch-size", "4", "--lr", "3e-3", "--seed", "1", "--device", "cpu",
         "--quiet"]


def _cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "statevad", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it finished first (nothing was tested)."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before the kill point: "
                        f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("kill point never reached")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def _visible_files_are_whole(work: Path) -> None:
    """Every non-hidden file parses completely; only hidden temporaries may be partial."""
    for f in work.rglob("*"):
        if not f.is_file() or f.name.startswith("."):
            continue
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                for k in z.files:
                    z[k]  # noqa: B018 - reading every member checks its CRC
        elif f.suffix == ".npy":
            np.load(f, allow_pickle=False)
        elif f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".pt":
            torch.load(f, weights_only=True)




@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(tmp_path_factory.mktemp("crash") / "scene", n_train=5, n_test=2, n_frames=32)


@pytest.mark.slow
def test_sigkilled_prepare_reruns_to_the_uninterrupted_result(scene: Path, tmp_path: Path) -> None:
    ref, work = tmp_path / "ref", tmp_path / "work"
    assert main(["prepare", "--root", str(scene), "--work", str(ref), "--boxes", "motion", "--quiet"]) == 0
    proc = _cli("prepare", "--root", str(scene), "--work", str(work), "--boxes", "motion", "--quiet")
    _kill_when(proc, lambda: any(not p.name.startswith(".") for p in work.glob("*/clips/*.npz")))
    assert not (work / "manifest.json").exists()
    _visible_files_are_whole(work)
    rerun = _cli("prepare", "--root", str(scene), "--work", str(work), "--boxes", "motion", "--quiet")
    assert rerun.wait(120) == 0, rerun.stderr.read().decode()[-2000:]
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (ref, work))
    for split in ("train", "test"):
        assert a["splits"][split]["checksums"] == b["splits"][split]["checksums"]
        assert b["splits"][split]["n_clips_computed"] < b["splits"][split]["clips"] or split == "test"
        assert (ref / split / "frames.json").read_bytes() == (work / split / "frames.json").read_bytes()
    assert not list(work.rglob(".*.tmp*")), "the rerun sweeps the killed run's temporaries"


@pytest.mark.slow
def test_sigkilled_train_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    work = make_work(tmp_path / "work")
    ref, out = tmp_path / "ref.pt", tmp_path / "model.pt"
    args = ["train", "--work", str(work), "--epochs", "12", *TRAIN]
    full = _cli(*args, "--out", str(ref))
    assert full.wait(180) == 0, full.stderr.read().decode()[-2000:]
    proc = _cli(*args, "--out", str(out))
    _kill_when(proc, lambda: resume_path(out).exists())
    assert not out.exists()
    _visible_files_are_whole(tmp_path)
    rerun = _cli(*args, "--out", str(out), "--resume")
    assert rerun.wait(180) == 0, rerun.stderr.read().decode()[-2000:]
    assert b"resuming after epoch" in rerun.stderr.read()
    a, b = torch.load(ref, weights_only=True), torch.load(out, weights_only=True)
    assert a["sha256"] == b["sha256"] and a["stats"] == b["stats"]
    assert a["history"] == b["history"] and len(a["history"]["epoch_loss"]) == 12
    assert not resume_path(out).exists() and not list(tmp_path.glob(".*.tmp*"))


def test_corrupted_resume_state_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = make_work(tmp_path / "work")
    out = tmp_path / "m.pt"
    rstate = resume_path(out)
    from statevad import training

    real = training.train_step
    calls = {"n": 0}

    def die_in_epoch_2(*a: object, **k: object) -> float:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    training.train_step = die_in_epoch_2
    try:
        assert main(["train", "--work", str(work), "--epochs", "2", "--out", str(out), *TRAIN]) == 130
    finally:
        training.train_step = real
    data = torch.load(rstate, weights_only=True)
    key = next(k for k, v in data["state_dict"].items() if v.is_floating_point())
    data["state_dict"][key] += 1.0
    torch.save(data, rstate)
    capsys.readouterr()
    assert main(["train", "--work", str(work), "--epochs", "2", "--out", str(out), "--resume", *TRAIN]) == 2
    err = capsys.readouterr().err
    assert "fails its checksum" in err and str(rstate) in err and "Traceback" not in err
    rstate.write_bytes(b"PK\x03\x04 torn")
    assert main(["train", "--work", str(work), "--epochs", "2", "--out", str(out), "--resume", *TRAIN]) == 2
    assert "corrupted" in capsys.readouterr().err


def test_cache_with_a_flipped_bit_is_recomputed(scene: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    m1 = prep.prepare(scene, work, split="test", box_source="motion", progress=False)
    cache = sorted((work / "test" / "clips").glob("*.npz"))[0]
    with np.load(cache, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["raw"] = arrays["raw"].copy()
    arrays["raw"].flat[0] ^= 1  # valid zip, valid npy, wrong content: only the sha256 catches it
    np.savez(cache, **arrays)
    assert prep.read_cache(cache, str(arrays["fingerprint"]), prep.resolve_options(
        prep.get_preset("generic"), box_source="motion").cube) is None
    m2 = prep.prepare(scene, work, split="test", box_source="motion", progress=False)
    assert m2["splits"]["test"]["n_clips_computed"] == 1
    assert m1["splits"]["test"]["checksums"] == m2["splits"]["test"]["checksums"]
