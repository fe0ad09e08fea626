"""Which cues could lift the learned score above the box speed on Ped2 (issue 18; docs/ANALYSIS.md, 11).

    python benchmarks/ped2_cues.py --work W --out benchmarks/results/ped2-cues.json [--model W/model.pt]

(W = ``statevad prepare --root ../shared/data/ped2 --work W --jobs 2``.) Four studies, each scored as frame
micro AUROC on the 12 test clips (max over a frame's objects, the published protocol):

1. **motion features without learning**: the per-box mean flow speed (the baseline) against other summaries
   of the same flow cubes (quantiles, the mean over moving pixels only, the middle frame) and against the
   speed divided by the object height expected at its position (a ground-plane scale fitted on the training
   boxes: perspective makes far walkers small and slow in pixels);
2. **temporal aggregation** of the box speed and, with ``--model``, of the model's own fused score: a causal
   mean over the last n frames of the frame score, a Gaussian over frames (non-causal), and a causal mean
   along each object's IoU track (``statevad.stream.tracking.IouTracker``, the streaming tracker);
3. **deep appearance features**: the detector's own head features (NanoDet-m, 128 channels at strides 8
   and 16, averaged over the cells inside each box), a kNN distance to the training boxes outside the
   selection's held-out clips, z-scored on those held-out clips, alone and fused with the speed by the tail
   rule (``statevad.selection.tail_weights``); needs the ``onnx`` package to expose the hidden outputs;
4. with ``--model``: the flow branch's prediction used differently: the excess of the observed speed over
   the predicted one (one-sided, "faster than the model expects from the object's look"), the log ratio,
   the error of the mean flow vector, each z-scored on the held-out training clips and fused by the tail rule;
5. with ``--model``: the two candidates that section 11 wrote down after seed 3, before any other training was
   scored (their held-out check): the excess speed in place of the flow SSE, alone with the raw SSE and with
   every other term of the model, each also with a causal mean along the track over 10 frames.

Every window, k and formula was fixed before it was scored; the test labels are read only to compute the
AUROCs, which are information: nothing here sets a default (``"chosen_on_test_labels": []``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from statevad.tracks import causal_track_mean  # the package's own (score.track_frames)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ped2 import write_study  # noqa: E402

# NanoDet-m's head features before its classifier (names in the bundled ONNX graph): stride 8 and 16.
HEAD_FEATURES = {8: "PartitionedCall/onnx_tf_prefix_LeakyRelu_151:0",
                 16: "PartitionedCall/onnx_tf_prefix_LeakyRelu_162:0"}
CAUSAL_FRAMES = (3, 5, 10)
GAUSS_SIGMAS = (1.0, 2.0, 3.0)
TRACK_FRAMES = (5, 10, 20)
KNN_K = (1, 5)
TRACK_CANDIDATE = 10  # frames of the pre-registered track mean (study 5)


def motion_summaries(flow: np.ndarray, chunk: int = 2048) -> dict[str, np.ndarray]:
    """Per cube (N, T, P, P, 2): summaries of the flow speed |f| over the cube's pixels."""
    import torch

    n = len(flow)
    out = {k: np.empty(n) for k in ("mean", "p75", "p90", "moving_mean", "middle_frame")}
    for a in range(0, n, chunk):
        mag = torch.linalg.vector_norm(torch.from_numpy(np.array(flow[a:a + chunk])).float(), dim=-1)
        flat = mag.flatten(1)  # (cube, T*P*P)
        moving = (mag > 0.5).float().flatten(1)  # statevad.stream.tracking.MOVING_PX
        out["mean"][a:a + chunk] = flat.mean(1).numpy()
        out["p75"][a:a + chunk] = flat.quantile(0.75, dim=1).numpy()
        out["p90"][a:a + chunk] = flat.quantile(0.90, dim=1).numpy()
        out["moving_mean"][a:a + chunk] = ((flat * moving).sum(1) / moving.sum(1).clamp_min(1)).numpy()
        out["middle_frame"][a:a + chunk] = mag[:, mag.shape[1] // 2].flatten(1).mean(1).numpy()
    return out


def expected_height(train_box: np.ndarray, bins: int = 10) -> np.ndarray:
    """log(height) = a * y_bottom + b, fitted to the per-bin medians of the training boxes (no label)."""
    h = train_box[:, 3] - train_box[:, 1]
    y = train_box[:, 3]
    edges = np.quantile(y, np.linspace(0, 1, bins + 1))
    mid, med = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (y >= lo) & (y <= hi) & (h > 0)
        if sel.any():
            mid.append(np.median(y[sel]))
            med.append(np.median(np.log(h[sel])))
    return np.polyfit(mid, med, 1)


def track_ids(frame: np.ndarray, clip: np.ndarray, box: np.ndarray) -> np.ndarray:
    """An IoU track id for every cube, clip by clip, frames in order (the streaming tracker)."""
    from statevad.stream.tracking import IouTracker

    ids = np.full(len(frame), -1, np.int64)
    offset = 0  # ids unique over the split
    for c in np.unique(clip):
        tracker = IouTracker()
        sel = np.flatnonzero(clip == c)
        for f in np.unique(frame[sel]):
            idx = sel[frame[sel] == f]
            ids[idx] = tracker.update(box[idx]) + offset
        offset = int(ids[sel].max()) + 1
    return ids


def trailing_mean(values: np.ndarray, n: int) -> np.ndarray:
    """Mean of each value with the up to n - 1 values before it (a causal window; shorter at the start)."""
    s = np.cumsum(np.r_[0.0, values])
    k = np.arange(1, len(values) + 1)
    lo = np.maximum(0, k - n)
    return (s[k] - s[lo]) / (k - lo)


def causal_frame_mean(frames: np.ndarray, bounds: list[tuple[str, int, int]], n: int) -> np.ndarray:
    out = frames.copy()
    for _name, a, b in bounds:
        out[a:b] = trailing_mean(frames[a:b], n)
    return out


def head_features(split, model_path: Path) -> np.ndarray:
    """(N, 256) float32: per cube, the detector's head features averaged over the box's cells."""
    import cv2
    import onnx
    import onnxruntime as ort

    from statevad.boxes import _nanodet_input

    graph = onnx.load(str(model_path))
    for name in HEAD_FEATURES.values():
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    frame, box = np.asarray(split.frame), np.asarray(split.box)
    out = np.zeros((len(frame), 128 * len(HEAD_FEATURES)), np.float32)
    for c in split.clips:
        cap = cv2.VideoCapture(str(c["source"]))
        k = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            idx = np.flatnonzero(frame == c["start"] + k)
            k += 1
            if not len(idx):
                continue
            blob, (sx, sy), _ = _nanodet_input(img, False)
            maps = sess.run(list(HEAD_FEATURES.values()), {inp: blob})
            for level, (stride, fm) in enumerate(zip(HEAD_FEATURES, maps, strict=True)):
                out[idx, 128 * level:128 * (level + 1)] = pool_cells(fm[0], box[idx], sx, sy, stride)
    return out


def pool_cells(fmap: np.ndarray, boxes: np.ndarray, sx: float, sy: float, stride: int) -> np.ndarray:
    """Mean feature (C,) of the cells (C, H, W) whose centres lie inside each box (else the nearest cell)."""
    _, hf, wf = fmap.shape
    out = np.zeros((len(boxes), fmap.shape[0]), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        gx = np.array([x1, x2]) * sx / stride - 0.5  # cell index space: centre of cell j at j
        gy = np.array([y1, y2]) * sy / stride - 0.5
        cx0, cx1 = int(np.clip(np.ceil(gx[0]), 0, wf - 1)), int(np.clip(np.floor(gx[1]), 0, wf - 1))
        cy0, cy1 = int(np.clip(np.ceil(gy[0]), 0, hf - 1)), int(np.clip(np.floor(gy[1]), 0, hf - 1))
        if cx1 < cx0:
            cx0 = cx1 = int(np.clip(round(gx.mean()), 0, wf - 1))
        if cy1 < cy0:
            cy0 = cy1 = int(np.clip(round(gy.mean()), 0, hf - 1))
        out[i] = fmap[:, cy0:cy1 + 1, cx0:cx1 + 1].mean(axis=(1, 2))
    return out


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)


def model_outputs(model_path: Path, split, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Per cube (eps 0, eval mode): the two SSEs, the flow branch's score by the model's own flow term
    (``e_term``: what its statistics z-score) and the observed / predicted flow summaries."""
    import torch

    from statevad.checkpoint import load_checkpoint
    from statevad.model.network import inference_copy
    from statevad.tensors import flow_error, mean_speed, per_cube_sse, to_flow_target, to_model_input

    model, ckpt = load_checkpoint(model_path)
    term = ckpt.preset.score.flow_term
    model = inference_copy(model).eval()
    cpu = torch.device("cpu")
    keys = ("e_raw", "e_flow", "e_term", "speed", "speed_hat", "u", "v", "u_hat", "v_hat")
    out = {k: np.empty(len(idx)) for k in keys}
    with torch.no_grad():
        for a in range(0, len(idx), 256):
            ii = idx[a:a + 256]
            x = to_model_input(split.raw[ii], cpu)
            y = to_flow_target(split.flow[ii], cpu)  # (cube, T, 2, P, P)
            raw_out, flow_out = model(x)
            flow_out = flow_out.float()
            vals = {"e_raw": per_cube_sse(x, raw_out), "e_flow": per_cube_sse(y, flow_out),
                    "e_term": flow_error(y, flow_out, term),
                    "speed": mean_speed(y, 2), "speed_hat": mean_speed(flow_out, 2),
                    "u": y[:, :, 0].flatten(1).mean(1), "v": y[:, :, 1].flatten(1).mean(1),
                    "u_hat": flow_out[:, :, 0].flatten(1).mean(1),
                    "v_hat": flow_out[:, :, 1].flatten(1).mean(1)}
            for k, v in vals.items():
                out[k][a:a + len(ii)] = v.double().numpy()
    return out


def flow_branch_terms(o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"raw SSE": o["e_raw"], "flow SSE": o["e_flow"], "speed": o["speed"],
            "excess speed over predicted": o["speed"] - o["speed_hat"],
            "log speed ratio": np.log((o["speed"] + 0.1) / (o["speed_hat"] + 0.1)),
            "mean flow vector error": np.hypot(o["u"] - o["u_hat"], o["v"] - o["v_hat"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="prepared Ped2 work directory")
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--model", default=None, help="a model trained on --work (studies 2 and 4 use it)")
    p.add_argument("--no-deep", action="store_true", help="skip study 3 (the detector's head features)")
    args = p.parse_args(argv)

    from statevad.appearance import knn_distance
    from statevad.boxes import default_detector_path
    from statevad.metrics import evaluate
    from statevad.scoring import frame_scores, smooth
    from statevad.selection import holdout_mask, tail_weights
    from statevad.workdir import open_split

    t0 = time.perf_counter()
    work = Path(args.work)
    test, train = open_split(work, "test"), open_split(work, "train")
    if test.labels is None:
        raise SystemExit(f"{work}: the test split has no labels")
    bounds = [(str(c["name"]), int(c["start"]), int(c["start"]) + int(c["n_frames"])) for c in test.clips]
    names = [str(c["name"]) for c in test.clips]

    def frame_auc(frames: np.ndarray) -> dict[str, object]:
        r = evaluate(frames, test.labels, bounds)
        return {"micro": round(float(r["micro_auroc"]), 4), "macro": round(float(r["macro_auroc"]), 4)}

    def cube_auc(cube_score: np.ndarray) -> dict[str, object]:
        return frame_auc(frame_scores(test.frame, cube_score, test.n_frames))

    held = holdout_mask(np.asarray(train.clip), np.asarray(train.frame))
    fit_idx, ref_idx = np.flatnonzero(~held), np.flatnonzero(held)
    results: dict[str, object] = {}

    # 1. motion features
    print("motion features ...", file=sys.stderr)
    te_m, tr_m = motion_summaries(test.flow), motion_summaries(train.flow)
    study1 = {f"box {k} speed": cube_auc(v) for k, v in te_m.items()}
    coef = expected_height(np.asarray(train.box))
    exp_h = np.exp(np.polyval(coef, np.asarray(test.box)[:, 3]))
    study1["box mean speed / expected height at its y"] = cube_auc(te_m["mean"] / exp_h)
    study1["box mean speed / its own height"] = cube_auc(
        te_m["mean"] / np.maximum(np.asarray(test.box)[:, 3] - np.asarray(test.box)[:, 1], 1))
    study1["ground-plane fit: log(height) = a * y_bottom + b"] = [round(float(c), 5) for c in coef]
    results["motion_features"] = study1

    # 2. temporal aggregation
    print("temporal aggregation ...", file=sys.stderr)
    ids = track_ids(np.asarray(test.frame), np.asarray(test.clip), np.asarray(test.box))
    scores = {"box speed (no learning)": te_m["mean"]}
    model_terms = None
    if args.model:
        from statevad.checkpoint import load_checkpoint
        from statevad.scoring import combine, motion_zscore, zscores

        _, ckpt = load_checkpoint(args.model)
        o_test = model_outputs(Path(args.model), test, np.arange(len(test.frame)))
        o_held = model_outputs(Path(args.model), train, ref_idx)
        sc = ckpt.preset.score
        z_raw, z_flow = zscores(o_test["e_raw"], o_test["e_term"], ckpt.stats)  # the term its stats are of
        z_mot = motion_zscore(te_m["mean"], ckpt.stats)
        z_app = None
        if ckpt.appearance is not None and test.classes is not None:
            z_app = ckpt.appearance.zscore(np.asarray(test.classes, np.float32))
        scores["STATE alone (model's raw + flow weights, eps 0)"] = combine(z_raw, z_flow, None, sc.w_raw,
                                                                           sc.w_flow, 0.0)
        scores["model default (eps 0)"] = combine(z_raw, z_flow, z_mot, sc.w_raw, sc.w_flow, sc.w_motion,
                                                  z_app, sc.w_appearance)
        z_app_held = None
        if z_app is not None and train.classes is not None:
            z_app_held = ckpt.appearance.zscore(np.asarray(train.classes, np.float32)[ref_idx])
        model_terms = (o_test, o_held, z_app, z_app_held)
    study2 = {}
    for name, s in scores.items():
        fr = frame_scores(test.frame, s, test.n_frames)
        row = {"as is": frame_auc(fr)}
        row.update({f"causal frame mean {n}": frame_auc(causal_frame_mean(fr, bounds, n))
                    for n in CAUSAL_FRAMES})
        row.update({f"gaussian sigma {g:g}": frame_auc(smooth(fr, g, bounds)) for g in GAUSS_SIGMAS})
        row.update({f"causal track mean {n}": cube_auc(causal_track_mean(s, np.asarray(test.frame), ids, n))
                    for n in TRACK_FRAMES})
        study2[name] = row
    results["temporal_aggregation"] = {"n_tracks": int(len(np.unique(ids))), "n_cubes": int(len(ids)),
                                       "scores": study2}

    def z_held(held_v: np.ndarray, test_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, sd = float(held_v.mean()), float(held_v.std())
        return (held_v - mu) / sd, (test_v - mu) / sd

    speed_z = z_held(tr_m["mean"][ref_idx], te_m["mean"])

    def tail_fused(terms: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, dict[str, float]]:
        w, _ = tail_weights({k: v[0] for k, v in terms.items()}, tuple(terms))
        return sum(w[k] * terms[k][1] for k in terms), w

    # 3. deep appearance features of the detector
    if not args.no_deep:
        try:
            import onnx  # noqa: F401
        except ImportError:
            results["deep_features"] = "skipped: the onnx package is not installed (pip install onnx)"
        else:
            print("detector head features (one detector pass over every frame) ...", file=sys.stderr)
            detector = default_detector_path()
            f_tr, f_te = head_features(train, detector), head_features(test, detector)
            study3 = {}
            for label, cols in (("strides 8+16", slice(None)), ("stride 8", slice(0, 128)),
                                ("stride 16", slice(128, 256))):
                a, b = unit_rows(f_tr[:, cols]), unit_rows(f_te[:, cols])
                for k in KNN_K:
                    d_ref = knn_distance(a[fit_idx], a[ref_idx], k)
                    d_te = knn_distance(a[fit_idx], b, k)
                    deep = z_held(d_ref, d_te)
                    fused, w = tail_fused({"deep": deep, "speed": speed_z})
                    study3[f"{label}, k={k}"] = {"alone": cube_auc(deep[1]),
                                                 "with speed (tail rule)": cube_auc(fused), "weights": w}
            results["deep_features"] = study3

    # 4. the flow branch's prediction used differently
    if model_terms is not None:
        o_test, o_held, z_app, z_app_held = model_terms
        t_te, t_he = flow_branch_terms(o_test), flow_branch_terms(o_held)
        z = {k: z_held(t_he[k], t_te[k]) for k in t_te}
        if z_app is not None and z_app_held is not None:
            z["appearance"] = (z_app_held, z_app)  # the model's own kNN term, z-scored on the same clips
        study4 = {f"{k} alone": cube_auc(v[1]) for k, v in z.items()}
        combos = [("raw SSE", "flow SSE"), ("raw SSE", "flow SSE", "speed"),
                  ("raw SSE", "speed"),  # the control: the raw branch with the observed speed alone
                  ("raw SSE", "excess speed over predicted"),
                  ("raw SSE", "excess speed over predicted", "speed"),
                  ("raw SSE", "log speed ratio"), ("raw SSE", "mean flow vector error"),
                  ("raw SSE", "flow SSE", "mean flow vector error", "speed")]
        for combo in combos:
            fused, w = tail_fused({k: z[k] for k in combo})
            study4[" + ".join(combo) + " (tail rule)"] = {**cube_auc(fused), "weights": w}
        results["flow_branch"] = study4
        # The candidates written down (docs/ANALYSIS.md section 11) after seed 3 and before any other
        # training was scored: the flow SSE replaced by the excess speed, with and without the model's other
        # terms, and the causal mean along the object's track over TRACK_CANDIDATE frames (1 s at 10 fps).
        frame_ids = np.asarray(test.frame)
        others = ("speed", "appearance") if "appearance" in z else ("speed",)
        pairs = {"reconstruction only": (("raw SSE", "flow SSE"), ("raw SSE", "excess speed over predicted")),
                 "all terms": (("raw SSE", "flow SSE", *others),
                               ("raw SSE", "excess speed over predicted", *others))}
        study5 = {}
        for label, (published, candidate) in pairs.items():
            for name, combo in (("flow SSE (today)", published), ("excess speed (candidate)", candidate)):
                fused, w = tail_fused({k: z[k] for k in combo})
                track = causal_track_mean(fused, frame_ids, ids, TRACK_CANDIDATE)
                study5[f"{label}: {name}"] = {"terms": list(combo), "weights": w, "as is": cube_auc(fused),
                                              f"causal track mean {TRACK_CANDIDATE}": cube_auc(track)}
        base = te_m["mean"]
        study5["box speed (no learning)"] = {
            "as is": cube_auc(base),
            f"causal track mean {TRACK_CANDIDATE}": cube_auc(causal_track_mean(base, frame_ids, ids,
                                                                               TRACK_CANDIDATE))}
        results["candidates"] = study5

    doc = {"benchmark": "ped2_cues", "work": str(work), "model": args.model,
           "chosen_on_test_labels": [],
           "clips": names, "results": results,
           "settings": {"causal_frames": CAUSAL_FRAMES, "gauss_sigmas": GAUSS_SIGMAS,
                        "track_frames": TRACK_FRAMES,
                        "knn_k": KNN_K, "head_features": HEAD_FEATURES,
                        "held_out": "statevad.selection.holdout_mask (clips with index % 8 == 7)"}}
    write_study(args.out, doc, "ped2_cues.py", argv, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
