"""Why are STATE's reconstruction errors weak on Ped2? Figures and tables for docs/ANALYSIS.md (issue 18).

    python benchmarks/ped2_analysis.py --work /tmp/w_ped2 --run benchmarks/results/ped2-holdout-seed0 \\
        --out docs/analysis

Reads the held-out run of `benchmarks/ped2_holdout.py` (model, curves, per-cube errors) and the work
directory, and writes OUT/*.png plus OUT/analysis.json (every number of docs/ANALYSIS.md, with the command and
commit). Object-level labels come from the official pixel masks (``gt/pixel_masks_test_packbits.npz``): a test
cube is an anomalous object when the mask covers at least 10 % of its box in the target frame. Every AUROC
here is computed with test labels and is reported as information; nothing in the package is chosen from it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PED2 = REPO.parent / "shared" / "data" / "ped2"


def object_labels(te, masks_file: Path, min_cover: float = 0.1) -> np.ndarray:
    """1 where the pixel mask covers >= ``min_cover`` of the cube's box in its target frame."""
    z = np.load(masks_file)
    out = np.zeros(len(te.frame), np.int8)
    starts = {str(c["name"]): int(c["start"]) for c in te.clips}
    frame = np.asarray(te.frame)
    box = np.asarray(te.box)
    for name, start in starts.items():
        m = np.unpackbits(z[name], axis=-1)[..., :360].astype(bool)  # (frames, 240, 360)
        sel = np.flatnonzero((frame >= start) & (frame < start + len(m)))
        for i in sel:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box[i])
            x1, y1 = max(x1, 0), max(y1, 0)
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            region = m[frame[i] - start, y1:y2, x1:x2]
            out[i] = int(region.size and region.mean() >= min_cover)
    return out


def auroc(y: np.ndarray, s: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    return float(roc_auc_score(y, s)) if 0 < y.sum() < y.size else None


def frame_micro(te, cube_scores: np.ndarray) -> dict[str, object]:
    """Frame micro and macro AUROC and per-clip AUROC of cube scores (max per frame)."""
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import frame_scores

    frames = frame_scores(te.frame, cube_scores, te.n_frames)
    ev = evaluate(frames, te.labels, clip_bounds(te.clips))
    return {k: ev[k] for k in ("micro_auroc", "macro_auroc", "per_clip_auroc")}


def binned(values: np.ndarray, by: np.ndarray, edges: np.ndarray) -> list[float | None]:
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        k = (by >= lo) & (by < hi)
        out.append(float(np.median(values[k])) if k.sum() >= 20 else None)
    return out


def wrong_frames(npz_files: list[str], out: Path, argv: list[str]) -> dict[str, object]:
    """Frames each score gets wrong at its own EER threshold, per test clip, from benchmarks/ped2.py's
    ``*-frames.npz`` files; and a picture of the clips that hold most of them."""
    import cv2
    from sklearn.metrics import roc_auc_score, roc_curve

    from statevad.files import atomic_write_json

    clips = json.loads((PED2 / "gt" / "frame_labels_test.json").read_text())["clips"]
    names = sorted(clips)
    edges = np.cumsum([0] + [clips[k]["frames"] for k in names])
    table = {}
    for f in npz_files:
        z = np.load(f)
        lab = z["labels"]
        for key in ("state_eps_0.002", "model_eps_0.002", "box_flow_magnitude"):
            s = z[key]
            fpr, tpr, thr = roc_curve(lab, s)
            wrong = (s >= thr[int(np.argmin(np.abs(fpr - (1 - tpr))))]) != (lab == 1)
            table.setdefault(Path(f).name, {})[key] = {
                "micro_auroc": float(roc_auc_score(lab, s)), "wrong": int(wrong.sum()),
                "wrong_per_clip": {n: int(wrong[a:b].sum()) for n, a, b in zip(names, edges[:-1], edges[1:],
                                                                                strict=True)}}
    rows = []
    for clip, picks in (("09", (0, 40, 80, 119)), ("10", (0, 50, 100, 149)), ("11", (0, 60, 120, 179)),
                        ("12", (60, 100, 140, 170))):
        cap = cv2.VideoCapture(str(PED2 / "video" / "testing" / f"{clip}.mkv"))
        frames = []
        while True:
            ok, fr = cap.read()
            if not ok:
                break
            frames.append(fr)
        ims = []
        for i in picks:
            im = frames[i].copy()
            cv2.putText(im, f"test {clip} frame {i}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 255, 255), 1, cv2.LINE_AA)
            ims.append(im)
        rows.append(np.concatenate(ims, 1))
    img = np.concatenate(rows, 0)
    img = cv2.resize(img, (img.shape[1] * 3 // 4, img.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out / "ped2_hard_clips.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    from ped2 import _git_commit

    res = {"wrong_frames_at_eer": table, "git_commit": _git_commit(), "chosen_on_test_labels": [],
           "command": "python benchmarks/ped2_analysis.py " + " ".join(shlex.quote(a) for a in argv)}
    atomic_write_json(out / "wrong_frames.json", res)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work")
    p.add_argument("--run", help="output folder of benchmarks/ped2_holdout.py")
    p.add_argument("--out", required=True)
    p.add_argument("--eps", type=float, default=0.002, help="perturbation step of the error columns used")
    p.add_argument("--wrong-frames", nargs="+", metavar="FRAMES_NPZ",
                   help="only tabulate the frames each score gets wrong, per clip, from these files")
    args = p.parse_args(argv)
    if args.wrong_frames:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        res = wrong_frames(args.wrong_frames, Path(args.out), list(argv or sys.argv[1:]))
        print(json.dumps({k: {s: (v["micro_auroc"], v["wrong"]) for s, v in d.items()}
                          for k, d in res["wrong_frames_at_eer"].items()}, indent=1))
        return 0
    if not (args.work and args.run):
        p.error("--work and --run are required unless --wrong-frames is given")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from statevad.files import atomic_write_json
    from statevad.tensors import cube_motion
    from statevad.workdir import open_split

    out, run = Path(args.out), Path(args.run)
    out.mkdir(parents=True, exist_ok=True)
    tr, te = open_split(args.work, "train"), open_split(args.work, "test")
    err = np.load(run / "errors.npz")
    curves = json.loads((run / "curves.json").read_text())["curves"]
    eps = f"{args.eps:g}"
    res: dict[str, object] = {"eps": args.eps}

    # 1. training vs held-out loss curves (under- or over-fitting?)
    ep = [c["epoch"] for c in curves]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, branch in zip(axes, ("raw", "flow"), strict=True):
        train_curve = [c["train_eval"][f"{branch}_mean"] for c in curves]
        held_curve = [c["holdout_eval"][f"{branch}_mean"] for c in curves]
        ax.plot(ep, train_curve, "o-", label="training clips (1 in 10)")
        ax.plot(ep, held_curve, "s-", label="held-out clips 08, 16")
        ax.set_title(f"{branch} branch: mean per-cube SSE (eval mode)")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=90)
    plt.close(fig)
    res["curves"] = [{"epoch": c["epoch"], "train_loss": c["train_loss"],
                      **{f"{w}_{b}": c[f"{w}_eval"][f"{b}_mean"] for w in ("train", "holdout")
                         for b in ("raw", "flow")}} for c in curves]

    # 2. errors against object size, position and speed; held-out normals vs test objects
    obj = object_labels(te, PED2 / "gt" / "pixel_masks_test_packbits.npz")
    hold = err["idx_hold"]
    h_box, t_box = np.asarray(tr.box)[hold], np.asarray(te.box)
    geo = {"height": (h_box[:, 3] - h_box[:, 1], t_box[:, 3] - t_box[:, 1]),
           "y_centre": ((h_box[:, 1] + h_box[:, 3]) / 2, (t_box[:, 1] + t_box[:, 3]) / 2)}
    speed_h = cube_motion(np.asarray(tr.flow[hold[0]:hold[-1] + 1]))[hold - hold[0]]
    speed_t = cube_motion(te.flow)
    geo["speed"] = (speed_h, speed_t)
    cols = {b: (np.log(err[f"hold_{b}_{eps}"]), np.log(err[f"test_{b}_{eps}"])) for b in ("raw", "flow")}
    cols["speed"] = (speed_h, speed_t)
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    res["by_geometry"] = {}
    for j, (gname, (gh, gt)) in enumerate(geo.items()):
        edges = np.quantile(gh, np.linspace(0, 1, 7))
        edges[0], edges[-1] = min(edges[0], gt.min()), max(edges[-1], gt.max()) + 1e-9
        mid = (edges[:-1] + edges[1:]) / 2
        for i, b in enumerate(("raw", "flow")):
            ax = axes[i, j]
            hv, tv = cols[b]
            rows = {"held-out normal": binned(hv, gh, edges), "test normal object": binned(tv[obj == 0],
                    gt[obj == 0], edges), "test anomalous object": binned(tv[obj == 1], gt[obj == 1], edges)}
            for label, vals in rows.items():
                ax.plot(mid, [np.nan if v is None else v for v in vals], "o-", label=label)
            ax.set_xlabel(gname)
            ax.set_ylabel(f"median log {b} SSE")
            res["by_geometry"][f"{b}_by_{gname}"] = {"bin_edges": edges.tolist(), **rows}
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "errors_by_geometry.png", dpi=90)
    plt.close(fig)

    # 3. object-level and frame-level separability of each score (information: test labels)
    scores = {"raw SSE": err[f"test_raw_{eps}"], "flow SSE": err[f"test_flow_{eps}"], "box speed": speed_t}
    res["object_auroc"] = {k: auroc(obj, v) for k, v in scores.items()}
    res["frame_micro_auroc"] = {k: frame_micro(te, v) for k, v in scores.items()}
    res["n_objects"] = {"test": int(len(obj)), "anomalous": int(obj.sum()), "held_out_normal": int(len(hold))}

    # 4. normalisation: training statistics (published) vs held-out normals, plain vs log, global vs per band
    tr_raw, tr_flow = err[f"trsub_raw_{eps}"], err[f"trsub_flow_{eps}"]
    sub = err["idx_trsub"]
    err_speed_train = cube_motion(np.asarray(tr.flow[sub]))
    ho_raw, ho_flow = err[f"hold_raw_{eps}"], err[f"hold_flow_{eps}"]
    te_raw, te_flow = err[f"test_raw_{eps}"], err[f"test_flow_{eps}"]

    def z(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return (v - ref.mean()) / ref.std()

    def banded(v: np.ndarray, ref: np.ndarray, y_v: np.ndarray, y_ref: np.ndarray,
               bands: int = 4) -> np.ndarray:
        edges = np.quantile(y_ref, np.linspace(0, 1, bands + 1))
        edges[0], edges[-1] = -np.inf, np.inf
        outv = np.empty_like(v)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            k, kr = (y_v >= lo) & (y_v < hi), (y_ref >= lo) & (y_ref < hi)
            outv[k] = (v[k] - ref[kr].mean()) / ref[kr].std()
        return outv

    yh, yt = geo["y_centre"]
    variants = {
        "published: z with training-cube statistics": z(te_raw, tr_raw) + z(te_flow, tr_flow),
        "z with held-out statistics": z(te_raw, ho_raw) + z(te_flow, ho_flow),
        "log-z with held-out statistics": (z(np.log(te_raw), np.log(ho_raw))
                                           + z(np.log(te_flow), np.log(ho_flow))),
        "log-z per y band (4, held-out)": (banded(np.log(te_raw), np.log(ho_raw), yt, yh)
                                           + banded(np.log(te_flow), np.log(ho_flow), yt, yh)),
    }
    # Fisher's rule, fixed before any of these numbers was seen: each term's one-sided tail -log P(X >= x)
    # under a log-normal fitted to the held-out normal cubes, summed (no weight to choose).
    from scipy.special import log_ndtr

    def tail(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return -log_ndtr(-z(np.log(np.maximum(v, 1e-12)), np.log(np.maximum(ref, 1e-12))))

    state_tail = tail(te_raw, ho_raw) + tail(te_flow, ho_flow)
    variants["Fisher: held-out log-normal tails, raw + flow"] = state_tail
    variants["Fisher: raw + flow + box speed"] = state_tail + tail(speed_t, speed_h)
    variants["log-z with held-out statistics, + box speed"] = (variants["log-z with held-out statistics"]
                                                               + z(np.log(speed_t), np.log(speed_h)))
    variants["published z (training stats) + w_motion 4 x z speed (TEST-CHOSEN weight)"] = (
        variants["published: z with training-cube statistics"] + 4 * z(speed_t, err_speed_train))
    res["fusion_frame_micro_auroc"] = {k: frame_micro(te, v) for k, v in variants.items()}
    res["fusion_object_auroc"] = {k: auroc(obj, v) for k, v in variants.items()}
    res["held_out_vs_training_error"] = {
        "raw_mean_ratio": float(ho_raw.mean() / tr_raw.mean()),
        "flow_mean_ratio": float(ho_flow.mean() / tr_flow.mean()),
        "flow_skew_plain": float(((ho_flow - ho_flow.mean()) ** 3).mean() / ho_flow.std() ** 3),
        "flow_skew_log": float(((np.log(ho_flow) - np.log(ho_flow).mean()) ** 3).mean()
                               / np.log(ho_flow).std() ** 3)}

    res["command"] = "python benchmarks/ped2_analysis.py " + " ".join(shlex.quote(a)
                                                                      for a in (argv or sys.argv[1:]))
    from ped2 import _git_commit

    res["git_commit"] = _git_commit()
    res["chosen_on_test_labels"] = []
    res["note"] = "every AUROC here uses test labels and is information only; no setting was chosen from it"
    atomic_write_json(out / "analysis.json", res)
    print(json.dumps({k: res[k] for k in ("object_auroc", "frame_micro_auroc", "fusion_frame_micro_auroc")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
