"""Ped2 with held-out normal clips (issue 18, analysis): train the `cpu` config's network on the training
clips except every 8th (clips 08 and 16), log training vs held-out loss after every epoch, then dump per-cube
errors.

    python benchmarks/ped2_holdout.py --work /tmp/w_ped2 --out benchmarks/results/ped2-holdout-seed0

Writes OUT/model.pt, OUT/curves.json (per epoch: training loss, mean per-cube SSE of both branches on a
training subsample and on the held-out clips, eval mode, unperturbed) and OUT/errors.npz (per-cube raw/flow
SSE at eps 0 / 0.002 / 0.005 / 0.01 of the held-out cubes, a 1-in-8 training subsample and every test cube),
plus OUT/run.json with the command, commit and settings. `benchmarks/ped2_analysis.py` turns them into
figures. The work directory is `statevad prepare --root ../shared/data/ped2 --work W --jobs 2`
(detector+motion, DIS).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EPSILONS = (0.0, 0.002, 0.005, 0.01)


def held_out(clip: np.ndarray, every: int = 8) -> np.ndarray:
    """Cubes of the clips with index % every == every - 1 (Ped2: clips 08 and 16)."""
    return (np.asarray(clip) % every) == every - 1


def runs(idx: np.ndarray) -> list[np.ndarray]:
    """Contiguous runs of sorted indices (memory-map slices read forward)."""
    return np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1) if len(idx) else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args(argv)

    from statevad.allocator import keep_freed_memory
    from statevad.checkpoint import load_checkpoint, save_checkpoint
    from statevad.config import get_preset, override, with_model_size
    from statevad.files import atomic_write_json
    from statevad.model import build_model
    from statevad.scoring import score_cubes
    from statevad.tensors import load_batch
    from statevad.training import (
        epoch_batches,
        fit_preset_to_cubes,
        make_optimizer,
        train_step,
        training_stats,
    )
    from statevad.workdir import open_split

    keep_freed_memory()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tr, te = open_split(args.work, "train"), open_split(args.work, "test")
    hold = held_out(tr.clip)
    idx_train, idx_hold = np.flatnonzero(~hold), np.flatnonzero(hold)
    preset = get_preset("ped2")
    preset.model = with_model_size(preset.model, "tiny")
    preset.train = override(preset.train, epochs=args.epochs, batch_size=128, seed=args.seed, device="cpu")
    preset = fit_preset_to_cubes(preset, int(tr.raw.shape[1]))
    torch.manual_seed(args.seed)
    net = build_model(preset.model)
    opt = make_optimizer(net, preset.train)
    curves, history, t0 = [], [], time.time()
    for epoch in range(args.epochs):
        total = count = 0
        for idx in epoch_batches(idx_train, 128, seed=args.seed, epoch=epoch):
            x, y = load_batch(tr.raw, tr.flow, idx, torch.device("cpu"))
            total += train_step(net, opt, x, y, preset.train) * len(idx)
            count += len(idx)
        history.append(total / count)
        curves.append({"epoch": epoch + 1, "train_loss": total / count, "minutes": (time.time() - t0) / 60,
                       "train_eval": training_stats(net, tr.raw, tr.flow, idx_train[::10], batch_size=256,
                                                    progress=False),
                       "holdout_eval": training_stats(net, tr.raw, tr.flow, idx_hold, batch_size=256,
                                                      progress=False)})
        print(json.dumps(curves[-1]), flush=True)
    stats = training_stats(net, tr.raw, tr.flow, idx_train, batch_size=128, progress=False)
    save_checkpoint(out / "model.pt", net, preset, stats, tr.manifest, history)
    atomic_write_json(out / "curves.json", {"curves": curves, "stats": stats})
    model, ckpt = load_checkpoint(out / "model.pt")
    sub = idx_train[::8]
    errors: dict[str, np.ndarray] = {"idx_hold": idx_hold, "idx_trsub": sub}
    for eps in EPSILONS:
        sc = override(ckpt.preset.score, epsilon=eps, batch_size=256)
        for name, data, idx in (("hold", tr, idx_hold), ("trsub", tr, sub), ("test", te, None)):
            # held-out clips are contiguous runs of the memory map; the training subsample is read by index
            if idx is None:
                parts = [score_cubes(model, data.raw, data.flow, sc, progress=False)]
            elif name == "hold":
                parts = [score_cubes(model, data.raw[r[0]:r[-1] + 1], data.flow[r[0]:r[-1] + 1], sc,
                                     progress=False) for r in runs(idx)]
            else:
                parts = [score_cubes(model, data.raw[idx], data.flow[idx], sc, progress=False)]
            errors[f"{name}_raw_{eps:g}"] = np.concatenate([a for a, _ in parts])
            errors[f"{name}_flow_{eps:g}"] = np.concatenate([b for _, b in parts])
        np.savez(out / "errors.npz", **errors)
        print(f"eps {eps:g} scored at {(time.time() - t0) / 60:.1f} min", flush=True)
    from ped2 import _git_commit

    command = "python benchmarks/ped2_holdout.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    atomic_write_json(out / "run.json", {
        "command": command, "git_commit": _git_commit(), "seed": args.seed, "epochs": args.epochs,
        "held_out_clips": "index % 8 == 7",
        "n_train_cubes": int(len(idx_train)), "n_held_out_cubes": int(len(idx_hold)),
        "minutes": round((time.time() - t0) / 60, 1), "chosen_on_test_labels": []})
    return 0


if __name__ == "__main__":
    sys.exit(main())
