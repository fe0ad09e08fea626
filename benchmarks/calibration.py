"""Calibrated alarms on UCSD Ped2: false alarms per hour on the normal parts of the test clips.

    python benchmarks/calibration.py --model statevad-demo/work/model.pt --work WORK_PED2 \
        --out benchmarks/results/calibration-ped2-demo.json

``WORK_PED2`` is a work directory of ``statevad prepare --root ../shared/data/ped2`` with the model's box /
flow / cube options (checked). Frame scores come from :mod:`statevad.calibration` (the scoring functions of
``statevad score``, with and without the border rule). Thresholds compared:

* ``auto``: the old automatic rule, 3 x (|w_raw| + |w_flow|) training-z units;
* ``training R``: the model's stored training-score distribution at R false alarms per hour;
* ``calibration R``: ``statevad calibrate`` on Ped2 *training* clips the model was not trained on
  (``--calib-clips``; the demo model trained on 01, 02, 03, 08), at R per hour.

Measured, per threshold: false alarms = events (runs of frames above the threshold, merged / filtered as in
``score``) that touch no anomalous frame, per hour of normal test footage; how many of the anomalous
intervals an event touches; the same on the held-out normal training clips (``--holdout-clips``); and on
both together (``all_normal_footage``).
Ped2 has about a minute of each kind of normal footage, so beside each rate stands its one-sided 95 % Poisson
upper bound (``false_alarms_per_hour_upper95``: with no event in 0.6 min, the rate may still be ~300/h). The
``training R/h`` rows exist only where the model's stored distribution was made with the same border rule.
The test labels are only used to measure, never to choose anything.

Scoring the cubes (~45,000 of them) takes ~30 min on 2 loaded CPU cores with the tiny demo network;
``--cube-scores NPZ`` keeps them, so the measurement itself can be re-run in seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import chi2

from statevad import calibration as cal
from statevad.checkpoint import load_checkpoint
from statevad.evaluation import check_options
from statevad.events import events, label_intervals
from statevad.metrics import frame_auroc
from statevad.scoring import auto_threshold
from statevad.settings import resolve
from statevad.workdir import open_split

FPS = 10.0  # Ped2 (the clips' headers say 10 frames/s)
SIZE_HW = (240, 360)


def _measure(series: list[np.ndarray], labels: list[np.ndarray] | None, thr: float,
             names: list[str] | None = None) -> dict[str, object]:
    """False alarms per hour of normal footage, and anomalous intervals touched, at threshold ``thr``;
    with ``names`` (one per series) also where each false alarm was."""
    gap, length = cal.event_frames(FPS)
    false = hit = intervals = normal = 0
    where = []
    for k, s in enumerate(series):
        lab = labels[k] if labels is not None else np.zeros(len(s), np.int8)
        found = events(s, thr, FPS, gap, length)
        wrong = [e for e in found if not (lab[e.start:e.end + 1] == 1).any()]
        false += len(wrong)
        if names:
            where += [f"{names[k]}: frames {e.start}-{e.end}, peak {e.peak_score:.3f}" for e in wrong]
        normal += int((lab == 0).sum())
        for a, b in label_intervals(lab):
            intervals += 1
            hit += any(e.start <= b and e.end >= a for e in found)
    hours = normal / FPS / 3600
    return {"false_alarms": false, "normal_minutes": round(hours * 60, 2),
            "false_alarms_per_hour": round(false / hours, 1) if hours else None,
            # Ped2 has minutes, not hours, of normal footage: "0 per hour" only means "below this"
            "false_alarms_per_hour_upper95": round(chi2.ppf(0.95, 2 * false + 2) / 2 / hours, 1) if hours
            else None,
            "anomalous_intervals": intervals, "intervals_detected": hit,
            **({"false_alarms_at": where} if names else {})}


def from_frames(npz: str, key: str, gt: str, thresholds: list[float], out: str) -> int:
    """The event-rate measurement on frame scores stored by an earlier run (``benchmarks/ped2.py``'s
    ``*-frames.npz``: the 2010 Ped2 test frames, clips 01..12 in order), at fixed thresholds."""
    d = np.load(npz)
    scores, lab_all = np.asarray(d[key], np.float64), np.asarray(d["labels"], np.int8)
    clips = json.loads(Path(gt).read_text())["clips"]
    series, labels, start = [], [], 0
    for name in sorted(clips):
        n = int(clips[name]["frames"])
        series.append(scores[start:start + n])
        labels.append(lab_all[start:start + n])
        start += n
    rows = {f"{t:g}": _measure(series, labels, t) for t in thresholds}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    doc = {"command": "python " + " ".join(sys.argv), "git_commit": commit, "frames": npz, "key": key,
           "fps": FPS, "event_rules": {"min_gap_s": cal.EVENT_MIN_GAP_S, "min_len_s": cal.EVENT_MIN_LEN_S},
           "chosen_on_test_labels": False, "thresholds": rows}
    print(json.dumps(rows, indent=1))
    Path(out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


def _cube_scores(path: str | None, model, ckpt, sc, test, train, t_all: list[int],
                 tr_clips: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Fused cube scores of the chosen test and training clips; with ``path``, kept in / read from an npz
    so that the measurement can be re-run without the ~30 min of scoring (the scores depend only on the
    model, the work dir and the score settings, which the file records and this checks)."""
    key = {"model_sha256": ckpt.sha256, "score": cal.score_settings(sc, 0.0),
           "test_cubes": int(len(test.clip)), "train_cubes": int(len(train.clip)),
           "train_clips": [str(train.clips[i]["name"]) for i in tr_clips]}
    if path and Path(path).is_file():
        d = np.load(path)
        if json.loads(str(d["key"])) != key:
            sys.exit(f"{path} holds cube scores of another model, work dir or settings; remove it")
        print(f"cube scores read from {path}", file=sys.stderr)
        return d["test"], d["train"]
    t_fused = cal.split_cube_scores(model, test, ckpt.stats, sc, t_all, progress=True,
                                    appearance=ckpt.appearance)
    tr_fused = cal.split_cube_scores(model, train, ckpt.stats, sc, tr_clips, progress=True,
                                     appearance=ckpt.appearance)
    if path:
        np.savez_compressed(path, test=t_fused, train=tr_fused, key=json.dumps(key))
    return t_fused, tr_fused


def _compare(spec: str, train, tr_fused: np.ndarray, sc) -> dict[str, object]:
    """The calibration that `statevad calibrate` stored from *videos* (the stream path of ``score``) against
    the distribution rebuilt here from the same clips' prepared cubes: equal, or this benchmark does not
    measure what ``score`` would do."""
    path, _, names = spec.rpartition(":")
    stored = load_checkpoint(path)[1].calibration
    if not stored:
        sys.exit(f"{path} carries no calibration")
    border = float(stored["settings"]["border_min_px"])
    clips = names.split(",")
    series = cal.series_from_cubes(train, tr_fused, cal.choose_clips(train, clips), border, SIZE_HW)
    ours = cal.score_distribution(series, FPS, cal.score_settings(sc, border), source="calibration",
                                  footage="cubes")
    same_grid = len(ours["thresholds"]) == len(stored["thresholds"])
    rate = float(stored["false_alarms_per_hour"])
    return {"model": path, "clips": clips, "frames": ours["n_frames"], "stored_frames": stored["n_frames"],
            "quantiles_max_abs_diff": float(np.max(np.abs(np.subtract(ours["quantiles"]["values"],
                                                                       stored["quantiles"]["values"])))),
            "event_curve_equal": same_grid and ours["events"] == stored["events"]
            and bool(np.array_equal(ours["thresholds"], stored["thresholds"])),
            "rate_per_hour": rate, "threshold_stored": stored["threshold"],
            "threshold_from_cubes": cal.threshold_for_rate(ours, rate)[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from-frames", default=None, metavar="NPZ",
                    help="measure on stored test frame scores at --at thresholds instead (no model run)")
    ap.add_argument("--key", default="model_eps_0.002", help="with --from-frames: the score array")
    ap.add_argument("--gt", default="../shared/data/ped2/gt/frame_labels_test.json")
    ap.add_argument("--at", default="18", help="with --from-frames: comma-separated thresholds")
    ap.add_argument("--model")
    ap.add_argument("--work")
    ap.add_argument("--calib-clips", default="04,05,06,07,09,10,11,12")
    ap.add_argument("--holdout-clips", default="13,14,15,16")
    ap.add_argument("--rates", default="1,10,60")
    ap.add_argument("--compare", default=None, metavar="MODEL:CLIPS",
                    help="a copy of --model calibrated by `statevad calibrate` on the videos of Ped2 "
                         "training clips CLIPS (e.g. cal.pt:04,05): check that its stored distribution "
                         "equals the one made here from the cubes (the stream and the cube path score alike)")
    ap.add_argument("--cube-scores", default=None, metavar="NPZ",
                    help="fused cube scores of the test split and the training clips: reused when the file "
                         "exists (same model and work dir, checked by sha256), else computed and saved there")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.from_frames:
        return from_frames(args.from_frames, args.key, args.gt, [float(t) for t in args.at.split(",")],
                           args.out)
    if not (args.model and args.work):
        ap.error("--model and --work are needed (or --from-frames)")
    t0 = time.perf_counter()
    model, ckpt = load_checkpoint(args.model)
    sc = resolve(ckpt.preset, "score").score
    work = Path(args.work)
    test, train = open_split(work, "test", verify=True), open_split(work, "train", verify=True)
    check_options(work, test.manifest, ckpt.work_manifest, Path(args.model))
    calib_clips = args.calib_clips.split(",")
    hold_clips = args.holdout_clips.split(",")
    rates = [float(r) for r in args.rates.split(",")]

    t_all = cal.choose_clips(test)
    tr_clips = cal.choose_clips(train, calib_clips + hold_clips)
    t_fused, tr_fused = _cube_scores(args.cube_scores, model, ckpt, sc, test, train, t_all, tr_clips)
    labels = [np.asarray(test.labels[int(c["start"]):int(c["start"]) + int(c["n_frames"])], np.int8)
              for c in test.clips]

    results: dict[str, object] = {}
    for border in (cal.BORDER_MIN_PX, 0.0):
        tag = f"border_{border:g}px"
        t_series = cal.series_from_cubes(test, t_fused, t_all, border, SIZE_HW)
        cal_series = cal.series_from_cubes(train, tr_fused, cal.choose_clips(train, calib_clips), border,
                                           SIZE_HW)
        hold_series = cal.series_from_cubes(train, tr_fused, cal.choose_clips(train, hold_clips), border,
                                            SIZE_HW)
        dist = cal.score_distribution(cal_series, FPS, cal.score_settings(sc, border), source="calibration",
                                      footage=f"Ped2 training clips {args.calib_clips}")
        thresholds = {"auto": (auto_threshold(sc.w_raw, sc.w_flow, w_motion=sc.w_motion), "auto")}
        train_dist = ckpt.score_distribution
        for r in rates:
            if train_dist and train_dist.get("settings") == cal.score_settings(sc, border):
                thresholds[f"training {r:g}/h"] = cal.threshold_for_rate(train_dist, r)
            thresholds[f"calibration {r:g}/h"] = cal.threshold_for_rate(dist, r)
        rows = {}
        hold_labels = [np.zeros(len(h), np.int8) for h in hold_series]
        hold_names = [f"train {train.clips[i]['name']}" for i in cal.choose_clips(train, hold_clips)]
        for name, (thr, words) in thresholds.items():
            rows[name] = {"threshold": round(thr, 4), "rule": words,
                          "test": _measure(t_series, labels, thr, [f"test {c['name']}" for c in test.clips]),
                          "held_out_normal_train_clips": _measure(hold_series, None, thr,
                                                                  hold_names),
                          "all_normal_footage": _measure(t_series + hold_series, labels + hold_labels, thr)}
        auroc = frame_auroc(np.concatenate(labels), np.concatenate(t_series))
        clip02 = [str(c["name"]) for c in test.clips].index("02")  # the demo's test clip (Test002)
        kept = cal.border_keep(test.box, SIZE_HW, border)
        results[tag] = {"frame_auroc_test": round(float(auroc), 4) if auroc is not None else None,
                        "test_clip_02_first_frames": [round(float(v), 3) for v in t_series[clip02][:6]],
                        "test_cubes_skipped_by_border_rule": int((~kept).sum()),
                        "test_cubes": int(len(kept)),
                        "calibration_minutes": round(dist["hours"] * 60, 2),
                        "training_minutes": round(train_dist["hours"] * 60, 2) if train_dist else None,
                        "thresholds": rows}
        print(json.dumps({tag: results[tag]}, indent=1))

    compared = _compare(args.compare, train, tr_fused, sc) if args.compare else None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    doc = {"command": "python " + " ".join(sys.argv), "git_commit": commit, "model": args.model,
           "stream_vs_cubes": compared,
           "model_sha256": ckpt.sha256, "work": str(work), "score": cal.score_settings(sc, cal.BORDER_MIN_PX),
           "fps": FPS, "calibration_clips": calib_clips, "held_out_clips": hold_clips,
           "rates_per_hour": rates, "cube_scores": args.cube_scores,
           "chosen_on_test_labels": False, "seconds": round(time.perf_counter() - t0, 1), "results": results}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
