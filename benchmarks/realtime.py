"""Real-time scoring (issue 20): today's streaming path and the new ones side by side, in one process.

Speed: the same first ``--frames`` frames of one Ped2 test video (optionally resized, e.g. to Avenue's
640x360) are scored by each configuration in interleaved rounds (A B C A B C ...), so a shared, noisy
machine slows all of them alike; the ratio to ``today`` is taken per round and its median reported with the
spread. Two rates per run: ``frames_per_s`` over ``statevad score``'s whole loop (first frame read to the
last file written, incl. the score curve, report and events written once at the end: a fixed cost that
weighs on a 60-frame run) and ``frames_per_s_stream`` to the last frame's score written (the rate a long
live stream runs at). Configurations (``--set`` values of ``statevad score``, the same model file for all):

* ``today``   -- the path before issue 20: no overlap, every cube every frame, the detector on every frame;
* ``default`` -- the current defaults (config.ScoreConfig's streaming fields, whatever the model file stored);
* ``overlap`` -- today's path with the network pass overlapped with the next frames' boxes and flow;
* ``k3`` / ``k4`` / ``k5`` -- overlapped, each tracked object's cube every 3rd / 4th / 5th frame; ``_de2``:
  the detector every 2nd frame; ``_t1``: one torch thread;
* ``fast``    -- the documented fast settings (config.FAST_SCORE, ``statevad score --fast``); ``_novideo``:
  without annotated.mp4;
* ``fast_before`` -- the fast settings before 2026-12-06 (the streaming defaults without the perturbation);
  ``fast_deK``, ``fast_fs50...``: the candidates built on them (the detector every K-th frame, the flow on the
  half-size frame, each object every 7th frame, the detector ahead in its own thread; see CONFIGS).

Accuracy (``--auroc``): all 12 Ped2 test clips scored by each configuration through ``statevad score``
(frame micro AUROC of the concatenated frame scores against the official labels) and by ``statevad test`` on
a prepared work directory with the same model (its default border rule, as ``score``'s; the AUROC without
the rule is recomputed from the same cube scores). ``--jobs 2`` spreads the clips and the ``test`` run over
two processes of one torch thread each (throughput only: the AUROC does not depend on it); the JSON is
rewritten after every finished item (``complete`` false until the end). Per-stage times come from the
scorer's counters.

    python benchmarks/realtime.py --model /tmp/h20/model.pt --frames 60 --rounds 3 \\
        --out benchmarks/results/realtime-ped2.json
    python benchmarks/realtime.py --model /tmp/h20/model.pt --size 640x360 --configs today fast \\
        --out benchmarks/results/realtime-640x360.json
    python benchmarks/realtime.py --model /tmp/h20/model.pt --auroc --work /tmp/w_ped2 --frames 0 \\
        --out benchmarks/results/realtime-auroc.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from ped2 import _git_commit  # the Ped2 benchmarks' commit + dirty flag

from statevad import stream
from statevad.config import fast_score_sets
from statevad.files import atomic_write_json
from statevad.metrics import frame_auroc

HERE = Path(__file__).resolve().parent
PED2 = HERE.parent.parent / "shared" / "data" / "ped2"
VS = "@vs"  # the suffix of the --vs-model rows
PIN_TODAY = ["score.overlap=false", "score.score_every=1", "score.detect_every=1"]
FAST_BEFORE = ["score.score_every=4", "score.detect_every=2", "score.epsilon=0.0", "score.overlap=true"]
# Speed candidates with the perturbation on (the model's epsilon): overlapped, each tracked object's cube
# every k-th frame (``k``), the detector every 2nd frame (``de2``); ``t1``: the network with one torch thread
# (a ``threads=N`` entry is the benchmark's, not a ``--set``: torch.set_num_threads for that run only;
# ``video=false``: ScoreOptions(video=False), `statevad score --no-video`).
CONFIGS: dict[str, list[str]] = {
    "today": PIN_TODAY,
    "default": [],
    "overlap": ["score.overlap=true", "score.score_every=1", "score.detect_every=1"],
    **{f"k{k}": ["score.overlap=true", f"score.score_every={k}", "score.detect_every=1"] for k in (3, 4, 5)},
    **{f"k{k}_de2": ["score.overlap=true", f"score.score_every={k}", "score.detect_every=2"]
       for k in (3, 4, 5)},
    **{f"k{k}_t1": ["score.overlap=true", f"score.score_every={k}", "score.detect_every=1", "threads=1"]
       for k in (3, 4)},
    "k3_de2_t1": ["score.overlap=true", "score.score_every=3", "score.detect_every=2", "threads=1"],
    "default_t1": ["threads=1"],  # the defaults with one torch thread
    # the fast settings before 2026-12-06 (each object every 4th frame, the detector every 2nd, no
    # perturbation); the candidates below that led to today's config.FAST_SCORE are built on them
    "fast_before": FAST_BEFORE,
    **{f"fast_de{k}": [*FAST_BEFORE, f"score.detect_every={k}"] for k in (1, 2, 3, 4)},
    # ... with the flow on frames at most 320 px wide (score.flow_max_side; 640x360: half-size), the detector
    # every 4th frame, and
    # without annotated.mp4 (``video=false``: the benchmark's, `statevad score --no-video`)
    "fast_fs50": [*FAST_BEFORE, "score.flow_max_side=320"],
    "fast_fs50_de4": [*FAST_BEFORE, "score.flow_max_side=320", "score.detect_every=4"],
    "fast_before_novideo": [*FAST_BEFORE, "video=false"],
    "fast_fs50_novideo": [*FAST_BEFORE, "score.flow_max_side=320", "video=false"],
    "fast_fs50_de4_novideo": [*FAST_BEFORE, "score.flow_max_side=320", "score.detect_every=4", "video=false"],
    # ... and the detector started in its own thread as each detector frame arrives (score.detect_ahead)
    **{f"fast_fs50_de{k}_ahead_novideo": [*FAST_BEFORE, "score.flow_max_side=320", f"score.detect_every={k}",
                                          "score.detect_ahead=true", "video=false"] for k in (2, 3, 4)},
    # ... each object through the network every 7th frame (the cube's length: score.max_score_every's ceiling)
    **{f"fast_fs50_de{k}_k7_novideo": [*FAST_BEFORE, "score.flow_max_side=320", f"score.detect_every={k}",
                                       "score.score_every=7", "video=false"] for k in (4, 8)},
    # today's fast settings (config.FAST_SCORE, `statevad score --fast`), with and without the annotated video
    "fast": fast_score_sets(),
    "fast_novideo": [*fast_score_sets(), "video=false"],
    "fast_ahead_novideo": [*fast_score_sets(), "score.detect_ahead=true", "video=false"],
}


def untrained_model(path: Path) -> str:
    """A tiny untrained network with the Ped2 preset and plausible statistics (speed does not depend on the
    weights; the box and flow stages are the preset's: NanoDet + motion boxes, DIS flow)."""
    from statevad.checkpoint import save_checkpoint
    from statevad.config import get_preset, with_model_size
    from statevad.model import STATE

    p = get_preset("ped2")
    p.model = with_model_size(p.model, "tiny")
    torch.manual_seed(0)
    save_checkpoint(path, STATE(p.model).eval(), p,
                    {"raw_mean": 50.0, "raw_std": 20.0, "flow_mean": 500.0, "flow_std": 300.0,
                     "motion_mean": 1.0, "motion_std": 1.0}, None)
    return str(path)


def resized_copy(video: Path, size: tuple[int, int], frames: int, tmp: Path) -> Path:
    """The first ``frames`` frames of ``video`` resized to ``size`` (W, H), as a lossless-enough MJPEG."""
    out = tmp / f"{video.stem}_{size[0]}x{size[1]}.avi"
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    wr = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    n = 0
    while n < frames or frames <= 0:
        ok, f = cap.read()
        if not ok:
            break
        wr.write(cv2.resize(f, size, interpolation=cv2.INTER_LINEAR))
        n += 1
    cap.release()
    wr.release()
    return out


def run(video: str, model: str, sets: list[str], frames: int, out: Path, labels: np.ndarray | None = None
        ) -> dict[str, Any]:
    threads = [int(v.split("=", 1)[1]) for v in sets if v.startswith("threads=")]
    annotated = "video=false" not in sets
    sets = [v for v in sets if not v.startswith(("threads=", "video="))]
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads[-1])
    try:
        opts = stream.ScoreOptions(max_frames=frames or None, progress=False, labels=labels, overwrite=True,
                                   video=annotated)
        res = stream.score(video, model, out, opts, sets=sets)
    finally:
        torch.set_num_threads(before)
    n = max(res.n_frames, 1)
    return {"frames": res.n_frames, "objects": res.n_objects, "loop_s": round(res.loop_s, 3),
            "frames_per_s": round(res.n_frames / max(res.loop_s, 1e-9), 3),
            "stream_s": round(res.stream_s, 3),
            "frames_per_s_stream": round(res.n_frames / max(res.stream_s, 1e-9), 3),
            "cpu_s_per_frame": round(res.cpu_s / n, 4), "torch_threads": threads[-1] if threads else before,
            "ms_per_frame_by_stage": {k: round(1000 * v / n, 1) for k, v in res.timing.items()},
            "latency": res.latency, "scores": res.scores, "threshold": res.threshold,
            "threshold_rule": res.threshold_rule}


def speed(args: argparse.Namespace, video: str, tmp: Path) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    # with --vs-model each configuration also runs with the second model file, in the same round
    models = [("", args.model)] + ([(VS, args.vs_model)] if args.vs_model else [])
    names = [name + suffix for name in args.configs for suffix, _ in models]
    for r in range(args.rounds):
        row = {}
        for name in args.configs:
            for suffix, model in models:
                t0 = time.perf_counter()
                res = run(video, model, CONFIGS[name], args.frames, tmp / f"out_{name}{suffix}")
                for key in ("scores", "threshold", "threshold_rule"):
                    res.pop(key)
                row[name + suffix] = res
                print(f"round {r + 1} {name}{suffix}: {res['frames_per_s']:.2f} frames/s "
                      f"({res['frames_per_s_stream']:.2f} without the summary files) "
                      f"({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})", file=sys.stderr)
        rounds.append(row)
    summary: dict[str, Any] = {}
    for name in names:
        fps = [row[name]["frames_per_s"] for row in rounds]
        stream_fps = [row[name]["frames_per_s_stream"] for row in rounds]
        summary[name] = {"frames_per_s_median": round(statistics.median(fps), 3), "frames_per_s": fps,
                         "frames_per_s_stream_median": round(statistics.median(stream_fps), 3),
                         "frames_per_s_stream": stream_fps}
        ref = args.reference + (VS if name.endswith(VS) else "")  # each model's ratio to its own reference
        if args.reference in args.configs and name != ref:
            ratio = [row[name]["frames_per_s"] / row[ref]["frames_per_s"] for row in rounds]
            summary[name][f"ratio_to_{ref}_median"] = round(statistics.median(ratio), 3)
            summary[name][f"ratio_to_{ref}"] = [round(x, 3) for x in ratio]
        if args.vs_model and not name.endswith(VS):
            ratio = [row[name]["frames_per_s"] / row[name + VS]["frames_per_s"] for row in rounds]
            summary[name]["ratio_to_vs_model_median"] = round(statistics.median(ratio), 3)
            summary[name]["ratio_to_vs_model"] = [round(x, 3) for x in ratio]
    return {"rounds": rounds, "summary": summary}


def _init_worker() -> None:
    torch.set_num_threads(1)


def _clip_item(name: str, clip: str, model: str, tmp: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = run(clip, model, CONFIGS[name], 0, Path(tmp) / f"auc_{name}_{Path(clip).stem}")
    return {"scores": res["scores"], "frames": res["frames"], "seconds": round(time.perf_counter() - t0, 1),
            "threshold": res["threshold"], "threshold_rule": res["threshold_rule"]}


def _test_item(work: str, model: str, tmp: str, clips: list[str] | None, per_clip: bool = False
               ) -> dict[str, Any]:
    """`statevad test` with its defaults (the border rule on), and the AUROC of the same cube scores with
    the rule off (the published protocol), from its objects.csv."""
    import csv

    from statevad.errors import UserError
    from statevad.evaluation import run_test
    from statevad.metrics import clip_bounds, evaluate
    from statevad.scoring import frame_scores
    from statevad.workdir import open_split, select_clips

    t0 = time.perf_counter()
    out = Path(tmp) / ("test" if clips is None else "test_" + "_".join(clips))
    try:
        m = run_test(work, model, out=out, progress=False, clips=clips)
    except UserError as exc:
        # one clip whose frames are all anomalous (Ped2 08-11): its AUROC is undefined, but its scores.csv and
        # objects.csv are written before the evaluation, and the combined run needs only them
        if not (per_clip and "only one class" in str(exc) and (out / "scores.csv").is_file()):
            raise
        m = None
    seconds = time.perf_counter() - t0
    with open(out / "objects.csv", newline="") as fh:
        score = np.array([float(r["score"]) for r in csv.DictReader(fh)])
    split = select_clips(open_split(work, "test"), clips)
    off_frames = frame_scores(split.frame, score, split.n_frames)
    with open(out / "scores.csv", newline="") as fh:
        on_frames = np.array([float(r["score"]) for r in csv.DictReader(fh)])
    if per_clip:  # one clip of a test run split clip by clip: its frame scores, combined by the caller
        return {"on": on_frames, "off": off_frames, "seconds": round(seconds, 1), "n_cubes": len(score),
                "skipped": None if m is None else m["border_rule"]["cubes_skipped"],
                "border_rule": None if m is None else m["border_rule"]}
    assert m is not None
    off = evaluate(off_frames, split.labels, clip_bounds(split.clips))
    return {"statevad test": {"micro_auroc": round(float(m["micro_auroc"]), 5),
                              "macro_auroc": round(float(m["macro_auroc"]), 5),
                              "border_rule": m["border_rule"],
                              "n_cubes": m["n_cubes"], "seconds": round(seconds, 1)},
            "statevad test, border rule off": {
                "micro_auroc": round(float(off["micro_auroc"]), 5),
                "how": "the same run's cube scores (objects.csv, 6 digits), every cube counted: "
                       "`statevad test --border-min-size 0`"}}


def _combine_test(parts: dict[int, dict[str, Any]], chosen: list[int], labels: np.ndarray,
                  lengths: list[int], names: list[str]) -> dict[str, Any]:
    """`statevad test` run clip by clip (``--clips NN``, one run per clip): the frame scores concatenated in
    clip order give the micro AUROC a single run gives (each clip's frame scores depend on its cubes only)."""
    from statevad.metrics import evaluate

    bounds, start = [], 0
    for i in chosen:
        bounds.append((names[i], start, start + lengths[i]))
        start += lengths[i]
    on = evaluate(np.concatenate([parts[i]["on"] for i in chosen]), labels, bounds)
    off = evaluate(np.concatenate([parts[i]["off"] for i in chosen]), labels, bounds)
    return {"statevad test": {"micro_auroc": round(float(on["micro_auroc"]), 5),
                              "macro_auroc": round(float(on["macro_auroc"]), 5),
                              "how": "one `statevad test --clips NN` run per clip (its defaults: border rule "
                                     "on), frame scores concatenated in clip order",
                              "border_rule": next((parts[i]["border_rule"]["meaning"] for i in chosen
                                                   if parts[i]["border_rule"]), None),
                              "cubes_skipped (clips with both classes)": int(sum(
                                  parts[i]["skipped"] or 0 for i in chosen)),
                              "n_cubes": int(sum(parts[i]["n_cubes"] for i in chosen)),
                              "seconds": round(sum(parts[i]["seconds"] for i in chosen), 1)},
            "statevad test, border rule off": {
                "micro_auroc": round(float(off["micro_auroc"]), 5),
                "how": "the same runs' cube scores (objects.csv, 6 digits), every cube counted: "
                       "`statevad test --border-min-size 0`"}}


def _normal_frame_stats(scores: np.ndarray, labels: np.ndarray, thr: float) -> dict[str, float]:
    """Upper quantiles of the normal frames' scores and the fraction above ``thr``: whether a streaming
    approximation (outputs carried, detector skipped) shifts what a calibrated threshold means. The labels
    only say which frames are normal here; nothing is chosen on them."""
    normal = np.asarray(scores, np.float64)[np.asarray(labels) == 0]
    q = np.percentile(normal, [50, 90, 99])
    return {"p50": round(float(q[0]), 4), "p90": round(float(q[1]), 4), "p99": round(float(q[2]), 4),
            "fraction_above_threshold": round(float((normal > thr).mean()), 5), "frames": int(len(normal))}


def auroc(args: argparse.Namespace, tmp: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """Micro AUROC over the Ped2 test clips: each streaming configuration, and `statevad test`."""
    labels_all = np.load(PED2 / "gt" / "frame_labels_test.npy").astype(np.int64)
    clips = sorted((PED2 / "video" / "testing").glob("*.mkv"))
    lengths = [int(cv2.VideoCapture(str(c)).get(cv2.CAP_PROP_FRAME_COUNT)) for c in clips]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    if starts[-1] != len(labels_all):
        raise SystemExit(f"the test clips have {starts[-1]} frames, the labels {len(labels_all)}")
    chosen = [i for i, c in enumerate(clips) if args.clips is None or c.stem in args.clips]
    labels = np.concatenate([labels_all[starts[i]:starts[i + 1]] for i in chosen])
    out: dict[str, Any] = {}
    doc["auroc"] = out
    doc["complete"] = False
    per: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in args.configs}
    thresholds: dict[str, float] = {}
    test_scores: dict[str, np.ndarray] = {}  # "on": `statevad test`'s frame scores (border rule on)

    def record() -> None:
        for name in args.configs:
            got = per[name]
            row: dict[str, Any] = {"clips_done": len(got), "seconds": round(sum(v["seconds"] for v in
                                                                               got.values()), 1)}
            if len(got) == len(chosen):
                s = np.concatenate([got[i]["scores"] for i in chosen])
                auc = frame_auroc(labels, s)  # None: one class only (a --clips subset)
                row.update(micro_auroc=None if auc is None else round(float(auc), 5), frames=int(len(s)))
                thr = float(got[chosen[0]]["threshold"])
                row["threshold"] = {"value": round(thr, 4), "rule": got[chosen[0]]["threshold_rule"]}
                row["normal_frames"] = _normal_frame_stats(s, labels, thr)
                thresholds[name] = thr
            out[name] = row
        test_frames = test_scores.get("on")
        if test_frames is not None:
            out.setdefault("statevad test", {})["normal_frames at each configuration's threshold"] = {
                name: _normal_frame_stats(test_frames, labels, thr) for name, thr in thresholds.items()}
        test = out.get("statevad test", {}).get("micro_auroc")
        if test is not None:
            for name in args.configs:
                if out[name].get("micro_auroc") is not None:
                    d = 100 * (out[name]["micro_auroc"] - test)
                    out[name]["points_vs_statevad_test"] = round(d, 2)
                    out[name]["within_0.3_points_of_statevad_test"] = bool(abs(d) <= 0.3)
        atomic_write_json(args.out, doc)

    names = [c.stem for c in clips]
    sub = [names[i] for i in chosen] if args.clips else None
    items: list[tuple[str, Any]] = []
    test_parts: dict[int, dict[str, Any]] = {}
    if args.work and args.test_per_clip:
        items += [("test_clip", (args.work, args.model, str(tmp), [names[i]], True, i)) for i in chosen]
    elif args.work:
        items.append(("test", (args.work, args.model, str(tmp), sub)))
    items += [(name, (name, str(clips[i]), args.model, str(tmp), i)) for name in args.configs for i in chosen]
    ctx = multiprocessing.get_context("spawn")
    if args.jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # the workers' torch: one thread each, one process per core
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_init_worker) if args.jobs > 1 \
            else cf.ThreadPoolExecutor(1) as pool:
        futs = {}
        for kind, a in items:
            if kind == "test":
                futs[pool.submit(_test_item, *a)] = (kind, None)
            elif kind == "test_clip":
                futs[pool.submit(_test_item, *a[:5])] = (kind, a[5])
            else:
                futs[pool.submit(_clip_item, *a[:4])] = (kind, a[4])
        for fut in cf.as_completed(futs):
            kind, i = futs[fut]
            res = fut.result()
            if kind == "test":
                out.update(res)
                print(f"statevad test: {res['statevad test']['micro_auroc']} "
                      f"({res['statevad test']['seconds']} s)", file=sys.stderr)
            elif kind == "test_clip":
                test_parts[i] = res
                print(f"statevad test --clips {names[i]}: {res['seconds']} s", file=sys.stderr)
                if len(test_parts) == len(chosen):
                    out.update(_combine_test(test_parts, chosen, labels, lengths, names))
                    test_scores["on"] = np.concatenate([test_parts[i]["on"] for i in chosen])
            else:
                if res["frames"] != lengths[i]:
                    raise SystemExit(f"{kind} {clips[i].name}: {res['frames']} frames scored of {lengths[i]}")
                per[kind][i] = res
                print(f"auroc {kind} {clips[i].name}: {res['frames']} frames, {res['seconds']} s, "
                      f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
            record()
    doc["complete"] = True
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model file written by `statevad train`, or 'untrained' "
                    "(a tiny untrained Ped2-preset network: speed only)")
    ap.add_argument("--video", default=str(PED2 / "video" / "testing" / "01.mkv"))
    ap.add_argument("--size", help="resize the input to WxH first (e.g. 640x360, Avenue's size)")
    ap.add_argument("--frames", type=int, default=60, help="frames per speed run (0: the whole video)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--auroc", action="store_true", help="score all 12 Ped2 test clips (no speed rounds)")
    ap.add_argument("--work", help="with --auroc: a prepared Ped2 work dir for `statevad test`")
    ap.add_argument("--clips", type=lambda v: [c for c in v.split(",") if c], default=None,
                    help="with --auroc: only these test clips (e.g. 01,02; a quick check, not the protocol)")
    ap.add_argument("--jobs", type=int, default=1, help="with --auroc: worker processes (one torch thread "
                    "each); 1 = in this process, with torch's default threads")
    ap.add_argument("--test-per-clip", action="store_true", help="with --auroc --work: `statevad test` as "
                    "one run per clip (spread over the --jobs workers), frame scores combined")
    ap.add_argument("--reference", default="today", help="speed: the configuration the ratios are taken to")
    ap.add_argument("--vs-model", help="speed: a second model file, each configuration run with both in "
                    "every round (its rows named CONFIG@vs; ratio_to_vs_model = --model's rate / its "
                    "rate), e.g. models prepared with other boxes")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    doc: dict[str, Any] = {
        "command": "python benchmarks/realtime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "git_commit": _git_commit(), "model": args.model, "vs_model": args.vs_model,
        "configs": {k: CONFIGS[k] for k in args.configs},
        # the measurement picks nothing: the streaming defaults (score_every 4, detect_every 2) were fixed by
        # the speed rounds before this AUROC was run
        "chosen_on_test_labels": [],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "loadavg_at_start": os.getloadavg()},
    }
    with tempfile.TemporaryDirectory(prefix="realtime.") as td:
        tmp = Path(td)
        if args.model == "untrained":
            args.model = untrained_model(tmp / "untrained.pt")
        if args.auroc:
            auroc(args, tmp, doc)
        else:
            video = args.video
            if args.size:
                w, h = (int(v) for v in args.size.lower().split("x"))
                video = str(resized_copy(Path(video), (w, h), args.frames, tmp))
            doc["input"] = {"video": args.video, "size": args.size or "native", "frames": args.frames}
            doc["speed"] = speed(args, video, tmp)
    doc["machine"]["loadavg_at_end"] = os.getloadavg()
    atomic_write_json(args.out, doc)
    print(doc.get("speed", {}).get("summary") or doc.get("auroc"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
