"""Ped2, issue 18: can a learned *appearance* normality replace the weak raw-branch error?

    python benchmarks/ped2_appearance.py --work /tmp/w_ped2 --run /tmp/learned-s0 \
        --out benchmarks/results/ped2-appearance-seed0.json

``--run`` is a folder of ``benchmarks/ped2_learned.py`` (``model_ema.pt`` trained on Ped2 minus clips 08/16,
``errors.npz`` with its per-cube errors and speeds). Three label-free appearance scores, each a kNN distance
to the cubes of the training clips the model was trained on (index % 8 != 7), z-scored on the held-out clips
08 and 16; nothing is chosen from the test labels, which are read only to report AUROC:

1. **latent kNN**: the network's own features of the cube (encoder output and transformer output of each
   branch, averaged over the cube's frames), raw or standardised, k = 1 or 5 (cf. memory-bank methods);
2. **detector-class kNN**: what the COCO detector thinks the box holds — per box, the maximum of each of
   NanoDet-m's 80 class scores over the detector's dense cells overlapping the box (IoU > 0.3) on the cube's
   target frame; training footage holds people, so a bicycle or a cart is far from every training box
   (cf. Doshi & Yilmaz 2020, who feed YOLO class probabilities to a kNN); k = 1, 5, 20;
3. **object count**: whether normal frames with more objects score higher (frame score = max over objects),
   which a per-frame extreme-value correction (-log P(max of n normal cubes >= observed)) would remove.

Fusions are plain sums of z-scores (a-priori weights 1), STATE = raw + flow at eps 0 with the model's
training statistics; "speed" = the per-box flow magnitude (the no-learning baseline), z-scored on held-out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ped2 import _git_commit  # noqa: E402  (the Ped2 benchmarks' commit + dirty flag)

from statevad.boxes import Detector  # noqa: E402
from statevad.checkpoint import load_checkpoint  # noqa: E402
from statevad.io import read_frames  # noqa: E402
from statevad.metrics import clip_bounds, evaluate  # noqa: E402
from statevad.scoring import frame_scores  # noqa: E402
from statevad.stream.tracking import iou_matrix  # noqa: E402
from statevad.workdir import open_split  # noqa: E402

CLASS_IOU = 0.3  # a dense cell describes a box when their IoU exceeds this (fixed before any run)


def knn_distance(bank: np.ndarray, query: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Mean Euclidean distance of each query row to its k nearest rows of ``bank``."""
    import torch

    b = torch.from_numpy(np.ascontiguousarray(bank, np.float32))
    bn = (b ** 2).sum(1)
    out = []
    for a in range(0, len(query), chunk):
        q = torch.from_numpy(np.ascontiguousarray(query[a:a + chunk], np.float32))
        d2 = (q ** 2).sum(1, keepdim=True) + bn[None] - 2 * q @ b.T
        out.append(d2.clamp_min(0).topk(k, largest=False).values.sqrt().mean(1).numpy())
    return np.concatenate(out).astype(np.float64)


def latent_features(model, raw: np.ndarray, batch: int = 512) -> dict[str, np.ndarray]:
    """Per cube: encoder and transformer outputs of both branches, mean over the cube's frames, flattened."""
    import torch

    from statevad.tensors import to_model_input

    out: dict[str, list[np.ndarray]] = {}
    with torch.no_grad():
        for a in range(0, len(raw), batch):
            x = to_model_input(np.asarray(raw[a:a + batch]), torch.device("cpu"))
            b, t = x.shape[:2]
            # (B, T, 3, P, P) -> (B*T, 3, P, P): the CNNs are per frame
            flat = x.reshape(b * t, *x.shape[2:]).contiguous(memory_format=torch.channels_last)
            for name, branch in (("raw", model.raw), ("flow", model.flow)):
                enc = branch.encoder(flat)
                for key, v in ((f"encoder_{name}", enc), (f"transformer_{name}", branch.transformer(enc, t))):
                    # (B*T, D, h, w) -> (B, T, D, h, w) -> mean over T -> (B, D*h*w)
                    v = v.float().reshape(b, t, *v.shape[1:]).mean(1).reshape(b, -1)
                    out.setdefault(key, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def class_features(split, detector: Detector) -> np.ndarray:
    """(N cubes, 80): per class, the best score of the detector cells overlapping the cube's box."""
    feats = np.zeros((len(split.box), 80), np.float32)
    order = np.argsort(split.frame, kind="stable")
    frames_sorted = np.asarray(split.frame)[order]
    for clip in split.clips:
        frames = read_frames(str(ROOT / clip["source"]) if not Path(clip["source"]).is_absolute()
                             else clip["source"])
        for t in range(clip["n_frames"]):
            g = clip["start"] + t
            lo, hi = np.searchsorted(frames_sorted, g), np.searchsorted(frames_sorted, g, "right")
            if lo == hi:
                continue
            idx = order[lo:hi]
            cell_boxes, cell_scores = detector.cells(frames[t])
            if not len(cell_boxes):
                continue
            # (boxes, cells)
            over = iou_matrix(np.asarray(split.box[idx], np.float32), cell_boxes) > CLASS_IOU
            for j, i in enumerate(idx):
                if over[j].any():
                    feats[i] = cell_scores[over[j]].max(0)
        print(f"  class features {clip['name']}", file=sys.stderr, flush=True)
    return feats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--run", required=True,
                    help="folder of benchmarks/ped2_learned.py (model_ema.pt, errors.npz)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fit-sample", type=int, default=8000, help="training cubes in the latent memory bank")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = Path(args.run)
    model, ck = load_checkpoint(run / "model_ema.pt")
    model.eval()
    st = ck.stats
    dump = np.load(run / "errors.npz")
    tr, te = open_split(args.work, "train"), open_split(args.work, "test")
    bounds = clip_bounds(te.clips)
    n_frames = len(te.labels)
    fit = np.flatnonzero(tr.clip % 8 != 7)
    hold = np.flatnonzero(tr.clip % 8 == 7)

    def z_on_held(held: np.ndarray, test: np.ndarray) -> np.ndarray:
        return (test - held.mean()) / held.std()

    def report(z: np.ndarray) -> dict[str, float]:
        r = evaluate(frame_scores(te.frame, z, n_frames), te.labels, bounds)
        return {"micro": round(r["micro_auroc"], 4), "macro": round(r["macro_auroc"], 4),
                "per_clip": {k: (round(v, 4) if v is not None else None)
                             for k, v in r["per_clip_auroc"].items()}}

    rows: list[dict] = []
    z_speed = z_on_held(dump["hold_speed"], dump["test_speed"])
    z_raw = (dump["test_raw_0"] - st["raw_mean"]) / st["raw_std"]
    z_flow = (dump["test_flow_0"] - st["flow_mean"]) / st["flow_std"]
    rows.append({"score": "speed (no learning)", **report(z_speed)})
    rows.append({"score": "STATE raw+flow, eps 0, training stats", **report(z_raw + z_flow)})
    rows.append({"score": "STATE + speed", **report(z_raw + z_flow + z_speed)})

    # 1. latent kNN
    rng = np.random.default_rng(0)
    bank_idx = np.sort(rng.choice(fit, size=min(args.fit_sample, len(fit)), replace=False))
    f_bank, f_hold, f_test = (latent_features(model, tr.raw[bank_idx]), latent_features(model, tr.raw[hold]),
                              latent_features(model, te.raw))
    print(f"latent features: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    for key in f_bank:
        mu, sd = f_bank[key].mean(0), f_bank[key].std(0) + 1e-6
        for standardise in (False, True):
            tf = (lambda x, mu=mu, sd=sd: (x - mu) / sd) if standardise else (lambda x: x)
            for k in (1, 5):
                z = z_on_held(knn_distance(tf(f_bank[key]), tf(f_hold[key]), k),
                              knn_distance(tf(f_bank[key]), tf(f_test[key]), k))
                rows.append({"score": f"latent kNN {key}{' standardised' if standardise else ''} k={k}",
                             **report(z)})

    # 2. detector-class kNN
    det = Detector(score_thr=0.05)
    c_train, c_test = class_features(tr, det), class_features(te, det)
    print(f"class features: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    non_person = {"train": float((np.delete(c_train, 0, 1).max(1) > 0.3).mean()),
                  "test": float((np.delete(c_test, 0, 1).max(1) > 0.3).mean())}
    for k in (1, 5, 20):
        z_cls = z_on_held(knn_distance(c_train[fit], c_train[hold], k), knn_distance(c_train[fit], c_test, k))
        rows.append({"score": f"detector-class kNN k={k}", **report(z_cls)})
        rows.append({"score": f"STATE + detector-class k={k}", **report(z_raw + z_flow + z_cls)})
        rows.append({"score": f"STATE + detector-class k={k} + speed",
                     **report(z_raw + z_flow + z_cls + z_speed)})
        rows.append({"score": f"detector-class k={k} + speed", **report(z_cls + z_speed)})

    # 3. object count vs the frame score on normal frames
    n_per = np.bincount(te.frame, minlength=n_frames)
    normal = (te.labels == 0) & (n_per > 0)
    count = {name: float(np.corrcoef(frame_scores(te.frame, z, n_frames)[normal], n_per[normal])[0, 1])
             for name, z in (("speed", z_speed), ("STATE", z_raw + z_flow))}

    result = {"benchmark": "ped2-appearance", "command": "python " + shlex.join(sys.argv),
              "commit": _git_commit(),
              "run": str(run), "settings": {"fit_sample": args.fit_sample, "class_iou": CLASS_IOU,
                                            "held_out_clips": "index % 8 == 7", "epsilon": 0.0},
              "chosen_on_test_labels": [],
              "note": "every row is information: a-priori settings, test labels read only for AUROC",
              "rows": rows, "share_boxes_non_person_class_over_0.3": non_person,
              "normal_frames_corr_frame_score_vs_object_count": count,
              "seconds": round(time.time() - t0, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"{r['score']:55s} micro {r['micro']:.4f} macro {r['macro']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
