"""The ``statevad`` command. Each subcommand has one ``_add_<name>`` (arguments) and one ``_run_<name>``
(handler) function; handlers import their stage lazily so that ``statevad --help`` stays fast.

Bad input surfaces as :class:`statevad.errors.UserError`: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence

from statevad import __version__
from statevad.config import FLOW_METHODS
from statevad.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _not_implemented(name: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        print(f"statevad {name}: not implemented yet", file=sys.stderr)
        return 2

    return run


# --------------------------------------------------------------------------------------------- info
def _add_info(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("info", help="describe a model file, a dataset root, a video, a frame folder or a "
                       "stream URL")
    p.add_argument("path", help="model file (its model card: the training footage, settings and alarm "
                   "calibration), dataset root, video file, frame folder, or stream URL (opened, one frame "
                   "decoded: size, fps, frame count if known)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    return _run_info


def _run_info(args: argparse.Namespace) -> int:
    from statevad.datasets import describe

    if _is_model_file(args.path):
        return _model_info(args.path, args.json)
    return describe(args.path, as_json=args.json)


def _is_model_file(path: str) -> bool:
    """A ``.pt``/``.pth`` file or a zip archive (what ``torch.save`` writes; no video container is one)."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return p.suffix.lower() in (".pt", ".pth")  # a missing model file: say so as a model file
    if p.suffix.lower() in (".pt", ".pth"):
        return True
    try:
        with p.open("rb") as fh:
            return fh.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _model_info(path: str, as_json: bool) -> int:
    import json
    from pathlib import Path

    from statevad.calibration import format_card
    from statevad.checkpoint import load_checkpoint

    _, ckpt = load_checkpoint(path)
    doc = format_card(Path(path), ckpt)
    if as_json:
        print(json.dumps({**doc, "card": ckpt.card}))
        return 0
    for key, value in doc.items():
        words = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        print(f"{key}: {words}")
    return 0


# ------------------------------------------------------------------------------------------ prepare
def _add_prepare(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("prepare", help="boxes, optical flow and cubes into a work directory")
    p.add_argument("--root", required=True, help="dataset root (layout detected automatically)")
    p.add_argument("--work", required=True, help="work directory to write (resumable)")
    p.add_argument("--split", default="both", choices=["train", "test", "both"])
    p.add_argument("--preset", default=None, help="ped2 | avenue | shanghaitech | generic "
                   "(default: guessed from the dataset)")
    p.add_argument("--boxes", default=None,
                   choices=["reference", "detector", "motion", "detector+motion", "auto"],
                   help="object box source (default: auto = detector+motion if the detector exists, "
                   "else motion)")
    p.add_argument("--detector", default=None, metavar="PATH",
                   help="NanoDet-m ONNX (default: $STATEVAD_DETECTOR or ../shared/models/nanodet-m-416.onnx)")
    p.add_argument("--flow", default=None, choices=list(FLOW_METHODS),
                   help="optical flow method (default: dis)")
    p.add_argument("--length", type=int, default=None, help="cube half-length l: 2l+1 frames (default 3)")
    p.add_argument("--jobs", type=int, default=1, help="clips processed in parallel (default 1)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="settings file: [section] tables with the fields of --set (see README, 'Settings'); "
                   "--set and the flags override it")
    p.add_argument("--motion-wrap", action="store_true", default=None,
                   help="reproduce the original's uint8 wrap-around in the motion-box difference sum")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="sets",
                   help="override any preset field, e.g. --set box.score_thr=0.3 --set box.detector_tiles=2 "
                   "--set flow.dis_preset=fast (sections: box, flow, cube; repeatable)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--shard", metavar="I/N", default=None,
                       help="compute only the clip caches of shard I of N (clip index %% N == I); run every "
                       "shard (e.g. a Slurm array), then once with --merge")
    scale.add_argument("--merge", action="store_true",
                       help="build the merged arrays and manifest from the clip caches of all shards "
                       "(computes nothing; lists the clips still missing)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(_parser=p)
    return _run_prepare


def _run_prepare(args: argparse.Namespace) -> int:
    import json

    from statevad.api import prepare
    from statevad.preparation import parse_shard, summary

    shard = parse_shard(args.shard) if args.shard is not None else None
    with _one_line_warnings("prepare"), _disk_errors():
        manifest = prepare(args.root, args.work, split=args.split, preset=args.preset, config=args.config,
                           sets=args.sets, boxes=args.boxes, flow=args.flow, length=args.length,
                           detector=args.detector, motion_wrap=args.motion_wrap, jobs=args.jobs, shard=shard,
                           merge=args.merge, progress=not args.quiet)
    print(json.dumps(manifest) if shard is not None else summary(manifest))
    return 0


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """An OSError of a writer or reader (disk full, read-only folder, permission, I/O error) as one line:
    the file it concerns and why. Every writer publishes through a temporary sibling and a rename, so the
    failed file is never left under its real name."""
    try:
        yield
    except OSError as exc:
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        why = exc.strerror or str(exc) or type(exc).__name__
        raise UserError(f"cannot write or read{where}: {why}".replace("\n", " ")) from None
    except MemoryError:
        raise UserError("out of memory") from None


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Warnings (a skipped short clip, mixed frame sizes) as one ``statevad CMD: warning: ...`` line each,
    instead of Python's two-line form quoting a source line the user never wrote."""
    import warnings

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        print(f"statevad {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# -------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> Handler:
    from statevad.config import LR_SCHEDULES, MODEL_SIZES, PRESETS

    p = sub.add_parser("train", help="train the STATE network on the prepared training cubes")
    p.add_argument("--work", required=True, help="work directory written by `statevad prepare`")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="hyper-parameters (default: the preset prepare recorded, else the dataset's)")
    p.add_argument("--model-size", choices=list(MODEL_SIZES),
                   help="network size: paper (published, 2.57M parameters), fast, tiny (default: the "
                   "preset's: paper; generic: tiny)")
    p.add_argument("--epochs", type=int, help="default: the preset's (20, spec 6.3; generic: 9)")
    p.add_argument("--batch-size", type=int, help="cubes per step, default 128")
    p.add_argument("--lr", type=float, help="Adam learning rate, default 1e-3")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant (default, published) or cosine decay to 0 over the run (opt-in)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="sets",
                   help="override any preset field, e.g. --set model.n_layers=2 --set train.adam_eps=1e-8 "
                   "(sections: model, train; repeatable)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="settings file: [section] tables with the fields of --set (see README, 'Settings'); "
                   "--set and the flags override it")
    p.add_argument("--max-cubes", type=int, help="train on a seeded random subsample of N cubes")
    p.add_argument("--seed", type=int, help="seed for weights, sampler and subsample (default 0)")
    p.add_argument("--device", help="auto (default: cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (faster, approximate)")
    p.add_argument("--resume", action="store_true", help="continue from the last finished epoch")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels (torch.use_deterministic_algorithms, cuDNN): bit-identical "
                   "GPU reruns, somewhat slower; CPU runs are reproducible without it")
    p.add_argument("--out", help="model file to write (default: WORK/model.pt)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.epilog = ("Distributed: torchrun --nproc_per_node N -m statevad train ... (DDP; gloo on CPU, NCCL on "
                "GPU; the global --batch-size is split over the ranks). See README, 'Scaling out'.")
    return _run_train


def _run_train(args: argparse.Namespace) -> int:
    import json
    import time

    from statevad.api import train
    from statevad.distributed import env_world

    t0 = time.perf_counter()
    with _disk_errors():
        out = train(args.work, out=args.out, preset=args.preset, model_size=args.model_size,
                    config=args.config, sets=args.sets, epochs=args.epochs, batch_size=args.batch_size,
                    lr=args.lr, lr_schedule=args.lr_schedule, max_cubes=args.max_cubes, seed=args.seed,
                    device=args.device, bf16=args.bf16, resume=args.resume, deterministic=args.deterministic,
                    progress=not args.quiet)
    rank, world, _ = env_world() or (0, 1, 0)
    if rank == 0:
        from statevad.checkpoint import load_checkpoint

        _, ckpt = load_checkpoint(out)
        print(json.dumps({"model": str(out), "preset": ckpt.preset.name, "epochs": ckpt.preset.train.epochs,
                          "ranks": world, "minutes": round((time.perf_counter() - t0) / 60, 2)}))
    return 0


# --------------------------------------------------------------------------------------------- test
def _add_test(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("test", help="score the prepared test cubes and evaluate (AUROC)")
    p.add_argument("--work", required=True, help="work directory written by `statevad prepare`")
    p.add_argument("--model", help="model file (default: WORK/model.pt)")
    p.add_argument("--epsilon", type=float, help="perturbation step (spec 7.1); 0 = no perturbation")
    p.add_argument("--w-raw", type=float, help="weight of the raw branch z-score; 0 = flow only")
    p.add_argument("--w-flow", type=float, help="weight of the flow branch z-score; 0 = raw only")
    p.add_argument("--w-motion", type=float, help="weight of the z-scored flow speed of each object "
                   "(our addition; 0 = STATE as published; default: the model's preset)")
    p.add_argument("--smooth-sigma", type=float, help="Gaussian smoothing of frame scores (default 0 = off)")
    p.add_argument("--batch-size", type=int, help="cubes per scoring step (default 256)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (faster, approximate)")
    p.add_argument("--stats", help="training statistics for a model file without them (imported weights): "
                                   "'train' computes them on WORK's training cubes, or a JSON file")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="settings file: [section] tables with the fields of --set (see README, 'Settings'); "
                   "--set and the flags override it")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="sets",
                   help="override any scoring field, e.g. --set score.batch_size=512 (section: score)")
    p.add_argument("--clips", help="comma-separated test clip names: score only these (quick check)")
    p.add_argument("--border-min-size", type=float, default=None, metavar="PX",
                   help="border rule, as in score: objects touching the frame border with a short side under "
                   "PX pixels do not count in the frame scores (default 16; 0 = score every object)")
    p.add_argument("--fps", type=float, default=None,
                   help="frame rate of test footage that carries none (frame folders): the track mean's "
                   "window in seconds (generic preset) needs it (default: the training footage's, else 25)")
    p.add_argument("--out", help="results folder (default: WORK/results/<model name>/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return _run_test


def _run_test(args: argparse.Namespace) -> int:
    import json

    from statevad.api import evaluate

    with _disk_errors():
        res = evaluate(args.work, args.model, out=args.out, config=args.config, sets=args.sets,
                       epsilon=args.epsilon, w_raw=args.w_raw, w_flow=args.w_flow, w_motion=args.w_motion,
                       smooth_sigma=args.smooth_sigma, batch_size=args.batch_size, device=args.device,
                       bf16=args.bf16, stats=args.stats,
                       clips=[c for c in args.clips.split(",") if c] if args.clips else None,
                       progress=not args.quiet, border_min_px=args.border_min_size, fps=args.fps)
    keys = ("micro_auroc", "macro_auroc", "eer", "per_clip_auroc", "chosen_on_test_labels")
    print(json.dumps({**{k: res[k] for k in keys},
                      "parts_micro_auroc": {k: v["micro_auroc"] for k, v in res["parts"].items()}}))
    return 0


# -------------------------------------------------------------------------------------------- score
def _add_score(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("score", help="score a video, frame folder or live stream with a trained model")
    p.add_argument("input", help="video file, frame folder, camera index (0) or stream URL")
    p.add_argument("--model", required=True, help="model file written by `statevad train`")
    p.add_argument("--out", required=True, help="output folder (scores.csv, objects.jsonl, events.json, "
                   "annotated.mp4, score_curve.png, report.html)")
    p.add_argument("--threshold", type=float, default=None, metavar="Z",
                   help="frame threshold on the fused z-score (default: from --false-alarms-per-hour, see "
                   "README 'Calibrated alarms')")
    p.add_argument("--false-alarms-per-hour", type=float, default=None, metavar="R",
                   help="set the threshold for about R false alarms (events) per hour on footage like the "
                   "model's calibration or training footage (default: the rate `statevad calibrate` set, "
                   "else 1)")
    p.add_argument("--border-min-size", type=float, default=None, metavar="PX",
                   help="skip objects that touch the frame border while their short side is under PX pixels "
                   "(default 16; 0 = score every object)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="score an input that is unlike the training footage (colour on a grey model, a frame "
                   "rate more than 2x off) instead of refusing it")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="per-frame 0/1 labels (.npy, .txt, .json): shaded on the curve, AUROC printed")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--no-perturb", action="store_true",
                   help="skip the test-time perturbation (epsilon 0): about 2-3x faster, less accurate")
    p.add_argument("--fast", action="store_true",
                   help="the fast settings for large frames or small CPUs (docs/REALTIME.md): no "
                   "perturbation, flow on frames at most 320 px wide, fewer network and detector passes; "
                   "--set overrides any of them, --no-video saves the annotated video's encoding too")
    p.add_argument("--boxes", default=None, metavar="SOURCE",
                   help="auto | detector | motion | detector+motion, or a reference .npz for this input "
                   "(default: what the model was trained with)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast (faster, approximate)")
    p.add_argument("--w-motion", type=float, default=None, help="weight of the z-scored flow speed of each "
                   "object (our addition; 0 = STATE as published; default: the model's preset)")
    p.add_argument("--config", metavar="FILE.toml", default=None,
                   help="settings file: [section] tables with the fields of --set (see README, 'Settings'); "
                   "--set and the flags override it")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="sets",
                   help="override any scoring field, e.g. --set score.epsilon=0.005 (section: score)")
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument("--batch-frames", type=int, default=4,
                   help="frames whose cubes go through the network together (default 4)")
    p.add_argument("--fps", type=float, default=None, help="frame rate, if the input does not carry one "
                   "(frame folders, MJPEG: 25 is assumed, with a warning)")
    p.add_argument("--max-objects", type=int, default=None, metavar="N",
                   help="score at most N objects per frame, those that move most (default 64; 0 = no cap)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run's outputs in --out (a non-empty --out is refused without it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return _run_score


def _run_score(args: argparse.Namespace) -> int:
    from statevad.api import score
    from statevad.labels import load_labels
    from statevad.stream import format_summary

    labels, pad = load_labels(args.labels) if args.labels else (None, -1)
    from statevad.config import fast_score_sets

    sets = (fast_score_sets() if args.fast else []) + list(args.sets)  # a --set given wins over --fast
    res = score(args.input, args.model, args.out, config=args.config, sets=sets,
                threshold=args.threshold, labels=labels, labels_pad=pad, max_frames=args.max_frames,
                perturb=not args.no_perturb,
                boxes=args.boxes, device=args.device, bf16=args.bf16, w_motion=args.w_motion,
                video=not args.no_video, batch_frames=args.batch_frames, fps=args.fps,
                progress=not args.quiet, overwrite=args.overwrite,
                false_alarms_per_hour=args.false_alarms_per_hour, allow_mismatch=args.allow_mismatch,
                **({} if args.max_objects is None else {"max_objects": args.max_objects}),
                **({} if args.border_min_size is None else {"border_min_px": args.border_min_size}))
    print(format_summary(res))
    if res.exit_code:  # stopped by SIGINT (130) or SIGTERM (143); the outputs are complete for what was read
        print(f"statevad score: {res.end_reason}", file=sys.stderr)
    return res.exit_code


# ---------------------------------------------------------------------------------------- calibrate
def _add_calibrate(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("calibrate", help="set a model's alarm threshold from normal footage of the camera",
                       description="Score normal footage of the camera (no anomalies) exactly as `statevad "
                       "score` would, store its frame-score distribution and event curve in the model file, "
                       "and set the threshold that gives about R false alarms per hour on such footage. "
                       "`score` then uses it by default.")
    p.add_argument("model", help="model file written by `statevad train`")
    p.add_argument("footage", nargs="+", help="normal footage: video files or frame folders (scored like "
                   "`statevad score`), or one work directory of `statevad prepare` (its prepared cubes)")
    p.add_argument("--false-alarms-per-hour", type=float, default=None, metavar="R",
                   help="false alarms (events) per hour to calibrate for (default 1)")
    p.add_argument("--out", default=None, help="model file to write (default: replace MODEL, atomically)")
    p.add_argument("--split", default="train", choices=["train", "test"],
                   help="with a work directory: the split to use (default train)")
    p.add_argument("--clips", default=None, help="with a work directory: comma-separated clip names only")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the footage, if it carries none")
    p.add_argument("--boxes", default=None, metavar="SOURCE",
                   help="box source for video footage, as in score")
    p.add_argument("--border-min-size", type=float, default=None, metavar="PX",
                   help="border rule, as in score (default 16; 0 = off)")
    p.add_argument("--no-perturb", action="store_true", help="calibrate for `score --no-perturb`")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return _run_calibrate


def _run_calibrate(args: argparse.Namespace) -> int:
    import json

    from statevad.calibrate import CalibrateOptions, calibrate

    opts = CalibrateOptions(rate=args.false_alarms_per_hour, out=args.out, split=args.split,
                            clips=[c for c in args.clips.split(",") if c] if args.clips else None,
                            fps=args.fps, boxes=args.boxes, perturb=not args.no_perturb, device=args.device,
                            progress=not args.quiet, **({} if args.border_min_size is None
                                                        else {"border_min_px": args.border_min_size}))
    with _one_line_warnings("calibrate"), _disk_errors():
        res = calibrate(args.model, args.footage, opts)
    print(res["meaning"])
    keys = ("model", "threshold", "false_alarms_per_hour", "frames", "minutes")
    print(json.dumps({k: res[k] for k in keys}))
    return 0


# --------------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("demo", help="the main job on a bundled sample: train, score, report")
    p.add_argument("--out", default="statevad-demo", help="output folder (default: ./statevad-demo)")
    p.add_argument("--fast", action="store_true", help="fewer frames and epochs (about a minute; for tests)")
    p.add_argument("--synthetic", action="store_true", help="use the synthetic scene instead of the bundled "
                   "Ped2 sample")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return _run_demo


def _run_demo(args: argparse.Namespace) -> int:
    from statevad.demo import DemoOptions, run_demo

    run_demo(args.out, DemoOptions(fast=args.fast, synthetic=args.synthetic, device=args.device,
                                   progress=not args.quiet))
    return 0


# --------------------------------------------------------------------------------------------- serve
def _add_serve(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser("serve", help="watch cameras continuously: events in a database, a browser dashboard")
    p.add_argument("--config", metavar="CAMERAS.toml", default=None,
                   help="[serve] settings and [[camera]] tables (see docs/SERVE.md)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=SOURCE",
                   help="a camera: index, RTSP/HTTP/MJPEG URL or video file (repeatable; needs --model)")
    p.add_argument("--model", default=None, help="model file for the --camera cameras")
    p.add_argument("--loop", action="store_true", help="--camera video files start again at their end")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1; any other needs a "
                   "token)")
    p.add_argument("--port", type=int, default=None, help="port (default 8780)")
    p.add_argument("--data", default=None, help="the service's folder: SQLite file and media (default "
                   "./statevad-serve)")
    p.add_argument("--database", default=None, metavar="URL",
                   help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in --data)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding the API token (else $STATEVAD_TOKEN; required off loopback)")
    p.add_argument("--webhook", default=None, metavar="URL", help="POST a JSON alert on event start and end")
    return _run_serve


def _run_serve(args: argparse.Namespace) -> int:
    from statevad.serve import config
    from statevad.serve.service import run

    cfg = config.load(args.config, args.camera, args.model,
                      {"loop": args.loop, "host": args.host, "port": args.port, "data": args.data,
                       "database": args.database, "webhook": args.webhook, "token_file": args.token_file})
    return run(cfg)


# --------------------------------------------------------------------------------- import-original
def _add_import_original(sub: argparse._SubParsersAction) -> Handler:
    p = sub.add_parser(
        "import-original", help="convert a checkpoint of the original STATE code",
        description="Convert a state_dict saved by the original STATE code (keys with or without 'module.', "
        "possibly nested in lists) into a statevad model file. Layers, heads, widths and the positional kind "
        "are read from the keys. The file holds weights only: `statevad test` also needs the training "
        "statistics (spec 6.4), which come from a statevad training run.",
    )
    p.add_argument("ckpt", help="original checkpoint (torch.save of a state_dict, e.g. *_model_*.npy)")
    p.add_argument("--out", required=True, help="statevad model file to write (e.g. model.pt)")
    p.add_argument("--frames", type=int, default=7,
                   help="cube length T = 2l+1 the weights were trained with (not stored in them; default 7)")
    return _run_import_original


def _run_import_original(args: argparse.Namespace) -> int:
    from statevad.checkpoint import load_original_checkpoint, save_model_only
    from statevad.model import count_parameters

    if not 1 <= args.frames <= 1000:
        raise UserError(f"--frames {args.frames}: expected the cube length 2l+1 of the weights, e.g. 7")
    model = load_original_checkpoint(args.ckpt, frames=args.frames)
    with _disk_errors():
        save_model_only(args.out, model)
    c = model.cfg
    print(f"wrote {args.out}: {c.n_layers} layers, {c.n_heads} heads, widths {list(c.widths)}, pos {c.pos}, "
          f"T {c.frames}, {count_parameters(model):,} parameters")
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], Handler]] = [
    _add_info,
    _add_prepare,
    _add_train,
    _add_test,
    _add_score,
    _add_calibrate,
    _add_demo,
    _add_import_original,
    _add_serve,
]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    parser = argparse.ArgumentParser(
        prog="statevad",
        description="STATE video anomaly detection: prepare -> train -> test, or score footage.",
    )
    parser.add_argument("--version", action="version", version=f"statevad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Handler] = {}
    for add in _COMMANDS:
        before = set(sub.choices)
        handler = add(sub)
        for name in set(sub.choices) - before:
            handlers[name] = handler
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from statevad.allocator import keep_freed_memory

    keep_freed_memory()  # tensors reused instead of re-faulted every step: see statevad.allocator
    try:
        return int(handlers[args.command](args) or 0)
    except UserError as exc:
        print(f"statevad {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"statevad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
