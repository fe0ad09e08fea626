"""Shared test helpers: fake work directories and small presets (imported by tests as ``helpers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from statevad.config import get_preset, override, with_model_size
from statevad.files import atomic_save_npy, atomic_write_json
from statevad.workdir import FORMAT

T, P = 3, 32


def split_arrays(n_clips: int, n_frames: int, seed: int, anomalous: bool) -> dict:
    """Two blobs per frame moving right; in 'anomalous' frames one blob moves fast and is bright."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:P, 0:P] / P
    raw, flow, frame, clip, box, labels = [], [], [], [], [], []
    for c in range(n_clips):
        for f in range(n_frames):
            g = c * n_frames + f
            odd = anomalous and f >= n_frames // 2
            labels.append(int(odd))
            for k in range(2):
                fast = odd and k == 0
                speed, amp = (0.2, 1.0) if fast else (0.03, 0.5)
                cx, cy = rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.7)
                cube_r = np.empty((T, P, P, 3), np.uint8)
                cube_f = np.empty((T, P, P, 2), np.float16)
                for t in range(T):
                    img = amp * np.exp(-((xx - cx - speed * t) ** 2 + (yy - cy) ** 2) / 0.01)
                    cube_r[t] = (255 * img)[..., None].repeat(3, -1).astype(np.uint8)
                    cube_f[t] = np.stack([img * speed * 40, img * 0], -1)
                raw.append(cube_r)
                flow.append(cube_f)
                frame.append(g)
                clip.append(c)
                box.append([10 * k, 0, 10 * k + 20, 30])
    arrs = {"raw": np.stack(raw), "flow": np.stack(flow), "frame": np.array(frame, np.int64),
            "clip": np.array(clip, np.int32), "box": np.array(box, np.float32)}
    clips = [{"name": f"{c:02d}", "n_frames": n_frames, "start": c * n_frames, "scene": None, "source": ""}
             for c in range(n_clips)]
    return {"arrays": arrs, "clips": clips, "labels": np.array(labels, np.int8)}


def make_work(work: Path) -> Path:
    """A work directory in the documented layout (docs/ARCHITECTURE.md), without running prepare."""
    preset = get_preset("ped2")
    manifest = {"format": FORMAT, "dataset": {"root": "/nowhere/ped2", "layout": "fake", "name": "ped2"},
                "options": {"preset": "ped2", "box": {}, "flow": {},
                            "cube": {"length": 1, "patch": P, "motion_thr": 0.0}},
                "versions": {}, "splits": {}}
    for split, n_clips, anomalous in (("train", 2, False), ("test", 2, True)):
        data = split_arrays(n_clips, 4, seed=len(split), anomalous=anomalous)
        for k, v in data["arrays"].items():
            atomic_save_npy(work / split / f"{k}.npy", v)
        atomic_write_json(work / split / "frames.json", data["clips"])
        if split == "test":
            atomic_save_npy(work / split / "labels.npy", data["labels"])
        manifest["splits"][split] = {
            "n_frames": n_clips * 4, "n_cubes": len(data["arrays"]["frame"]),
            "shapes": {k: list(v.shape) for k, v in data["arrays"].items()}}
    atomic_write_json(work / "manifest.json", manifest)
    assert preset.name == "ped2"
    return work


def tiny_preset(epochs: int = 2, **train_kw):
    """The ped2 preset with the tiny network, trained briefly; without the preset's moving average of the
    weights unless asked (a two-epoch run is not what it is for)."""
    p = get_preset("ped2")
    p.model = with_model_size(p.model, "tiny")
    kw = {"epochs": epochs, "batch_size": 8, "lr": 3e-3, "device": "cpu", "ema_epochs": 0.0, **train_kw}
    p.train = override(p.train, **kw)
    return p


def tiny_model(path: Path) -> Path:
    """A tiny untrained STATE network with plausible statistics, saved as a model file: enough to exercise
    every output of `statevad score` quickly."""
    import torch

    from statevad.checkpoint import save_checkpoint
    from statevad.model import STATE

    p = get_preset("generic")
    p.model = with_model_size(p.model, "tiny")
    torch.manual_seed(0)
    save_checkpoint(path, STATE(p.model).eval(), p,
                    {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0,
                     "motion_mean": 1.0, "motion_std": 1.0}, None)
    return path


def fails_one_line(argv: list[str], capsys, *needles: str) -> str:
    """``statevad ARGV`` exits 2 with one error line that contains every needle (and no traceback)."""
    from statevad.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def train_on_one_thread(work: Path, *flags: str) -> Path:
    """``statevad train --work WORK FLAGS`` on one torch thread (module-scoped fixtures cannot use the
    ``one_thread`` fixture); returns WORK/model.pt."""
    import torch

    from statevad.cli import main

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--work", str(work), *flags]) == 0
    finally:
        torch.set_num_threads(before)
    return work / "model.pt"


def score_synthetic(video_root: Path, model: Path, out: Path, *flags: str) -> dict:
    """`statevad score` on the first synthetic test video (motion boxes, no video, quiet, and ``flags``) into
    ``out``; asserts exit 0 and returns its events.json document."""
    import json

    from statevad.cli import main

    clip = str(sorted((video_root / "test").iterdir())[0])
    assert main(["score", clip, "--model", str(model), "--boxes", "motion", "--no-video", "--quiet",
                 "--out", str(out), *flags]) == 0
    return json.loads((out / "events.json").read_text())


def load_benchmark(name: str):
    """A script of benchmarks/ (e.g. "ped2_onsets") as a module, to test its pure functions; the scripts
    import each other by name, which their own ``sys.path`` line makes work."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
