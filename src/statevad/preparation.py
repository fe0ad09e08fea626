"""The work directory (docs/ARCHITECTURE.md): boxes -> flow -> cubes per clip, cached, then merged arrays.

Each clip is processed independently (possibly in parallel) into ``W/<split>/clips/<clip>.npz`` together
with a fingerprint of everything that determines its content (the clip's file, the options, the library
versions, the detector or reference boxes). A rerun recomputes only clips whose cache is missing,
unreadable or stale, then concatenates the caches into memory-mappable ``.npy`` arrays, and writes
``manifest.json`` last: a work directory without a manifest entry for a split is never read as complete.

Scale-out: ``shard=(i, n)`` computes only the caches of clips whose index within their split is
``i (mod n)`` (a Slurm array task or a Kubernetes indexed job each), and ``merge=True`` then builds the
merged arrays and the manifest from the caches alone, refusing (with the list) while any is missing. The
result is byte-identical to an unsharded run. Every cache carries a sha256 of its arrays; a cache that
fails it, or does not load, is recomputed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import hashlib
import json
import multiprocessing
import os
import platform
import re
import sys
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import statevad
from statevad.boxes import N_CLASSES
from statevad.config import BoxConfig, CubeConfig, FlowConfig, Preset, get_preset, override
from statevad.errors import UserError
from statevad.files import (
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_with,
    remove_stale_temps,
    sha256_file,
)
from statevad.settings import resolve
from statevad.workdir import ARRAYS, FORMAT, OPTIONAL_ARRAYS, SPLITS, read_manifest

CACHE_FORMAT = "statevad-clip/3"  # /2: arrays carry a sha256; /3: detector boxes carry classes


# ------------------------------------------------------------------------------------------ options
@dataclass
class PrepareOptions:
    """Everything that determines the cubes; serialised into the manifest and every clip fingerprint."""

    preset: str
    box: BoxConfig
    flow: FlowConfig
    cube: CubeConfig
    box_source: str  # resolved: reference | detector | motion | detector+motion
    box_source_reason: str = ""
    detector_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("box_source_reason")
        return d


# Options added after caches and models were written with them absent: at these values they change nothing,
# so they are left out of the identity and the older work directories and models stay valid.
LATER_DEFAULTS: dict[str, dict[str, Any]] = {"box": {"detector_grid": 1}}


def options_identity(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the cubes depend on, from ``PrepareOptions.to_dict()``: the detector by its content (sha256),
    not by the path it was read from, so that a moved or re-installed copy of the same model keeps every
    cache valid; options of :data:`LATER_DEFAULTS` at their default are left out."""
    if not options:
        return options
    d = copy.deepcopy(options)
    if d.get("detector_sha256") and isinstance(d.get("box"), dict):
        d["box"]["detector_path"] = None
    for section, defaults in LATER_DEFAULTS.items():
        part = d.get(section)
        if isinstance(part, dict):
            for name, value in defaults.items():
                if part.get(name, value) == value:
                    part.pop(name, None)
    return d


def resolve_options(preset: Preset, *, box_source: str | None = None, flow_method: str | None = None,
                    length: int | None = None, detector_path: str | None = None,
                    motion_wrap: bool | None = None, sets: list[str] | None = None,
                    config: str | os.PathLike[str] | None = None) -> PrepareOptions:
    """Preset + config file + ``--set`` + flags (:func:`statevad.settings.resolve`) -> concrete options;
    checks the detector file early (one clear error, not N workers)."""
    from statevad.boxes import Detector, default_detector_path, resolve_source
    from statevad.flow import FlowEstimator

    preset = resolve(preset, "prepare", config=config, sets=sets, flags={
        "box": {"source": box_source, "detector_path": detector_path, "motion_wrap": motion_wrap},
        "flow": {"method": flow_method}, "cube": {"length": length}})
    box, flow, cube = preset.box, preset.flow, preset.cube
    if cube.length < 1:
        raise UserError(f"--length must be >= 1, got {cube.length}")
    resolved = resolve_source(box)
    det_sha = None
    if "detector" in resolved.source:
        path = Path(box.detector_path) if box.detector_path else default_detector_path()
        Detector(path)  # validates: missing file / not a NanoDet -> UserError
        box = override(box, detector_path=str(path.resolve()))
        det_sha = sha256_file(path)
    FlowEstimator(flow)  # validates the method (and cv2.optflow availability)
    return PrepareOptions(preset.name, box, flow, cube, resolved.source, resolved.reason, det_sha)


def versions() -> dict[str, str]:
    out = {"statevad": statevad.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "opencv": cv2.__version__}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover - a dependency, but only needed for detector boxes
        pass
    return out


# ---------------------------------------------------------------------------------------- fingerprints
def _source_identity(source: Any) -> dict[str, Any]:
    """Path, size and mtime of a clip's video file or frame folder: cheap staleness check."""
    p = Path(str(source))
    try:
        st = p.stat()
        ident: dict[str, Any] = {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if p.is_dir():
            ident["entries"] = sorted(e.name for e in p.iterdir())[:100000]
        return ident
    except OSError:
        return {"path": str(source)}


def clip_fingerprint(clip: Any, options: PrepareOptions, ref_boxes: list[np.ndarray] | None) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "clip": {"name": clip.name, "n_frames": int(clip.n_frames), "size": list(clip.size),
                 "source": _source_identity(clip.source)},
        "options": options_identity(options.to_dict()),
        "versions": versions(),
    }
    h = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    if ref_boxes is not None:
        for b in ref_boxes:
            h.update(np.int64(len(b)).tobytes())
            h.update(np.ascontiguousarray(b, np.float32).tobytes())
    return h.hexdigest()


def cache_name(clip_name: str) -> str:
    """A file-safe name for a clip (names may hold separators, e.g. 'Testing/01')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(clip_name)).strip("._") or "clip"


def cache_checksum(raw: np.ndarray, flow: np.ndarray, frame: np.ndarray, box: np.ndarray,
                   classes: np.ndarray | None = None) -> str:
    """sha256 over dtype, shape and bytes of a cache's arrays: a flipped bit is caught, not trained on."""
    h = hashlib.sha256()
    for a in (raw, flow, frame, box) + (() if classes is None else (classes,)):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_cache(path: Path, fingerprint: str, cfg: CubeConfig) -> dict[str, Any] | None:
    """The cached arrays if ``path`` is a complete, intact cache with this fingerprint; ``None``: redo."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint:
                return None
            data = {k: z[k] for k in ("raw", "flow", "frame", "box", "n_dropped")}
            data["classes"] = z["classes"] if "classes" in z.files else None
            checksum = str(z["checksum"])
    except Exception:  # missing, truncated or foreign file: any failure means "recompute"
        return None
    if cache_checksum(data["raw"], data["flow"], data["frame"], data["box"], data["classes"]) != checksum:
        return None
    n = len(data["frame"])
    t, p = cfg.frames, cfg.patch
    if (data["raw"].shape != (n, t, p, p, 3) or data["flow"].shape != (n, t, p, p, 2)
            or data["box"].shape != (n, 4) or data["raw"].dtype != np.uint8
            or data["flow"].dtype != np.float16):
        return None
    if data["classes"] is not None and (data["classes"].shape != (n, N_CLASSES)
                                        or data["classes"].dtype != np.float16):
        return None
    return data


# ---------------------------------------------------------------------------------------- per-clip work
_WORKER_STATE: dict[str, Any] = {}


def _worker_init(single_thread: bool) -> None:
    if single_thread:
        cv2.setNumThreads(1)


def _stages(options: PrepareOptions):  # -> (BoxExtractor | None, FlowEstimator)
    """One box extractor and flow estimator per process (the ONNX session loads once, not per clip)."""
    from statevad.boxes import BoxExtractor
    from statevad.flow import FlowEstimator

    key = json.dumps(options.to_dict(), sort_keys=True, default=str)
    if _WORKER_STATE.get("key") != key:
        ext = None if options.box_source == "reference" else BoxExtractor(options.box, options.box_source)
        _WORKER_STATE.update(key=key, stages=(ext, FlowEstimator(options.flow)))
    return _WORKER_STATE["stages"]


@dataclass
class ClipResult:
    index: int
    n_cubes: int
    n_dropped: int
    n_frames: int
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None


def process_clip(index: int, clip: Any, options: PrepareOptions, fingerprint: str, dest: Path,
                 ref_boxes: list[np.ndarray] | None, progress: bool = False) -> ClipResult:
    """Boxes, flow and cubes of one clip, written atomically to ``dest`` (its cache)."""
    from statevad.boxes import clip_boxes_and_classes
    from statevad.cubes import ClipTooShort, clip_cubes, elastic_window
    from statevad.flow import clip_flow

    sec: dict[str, float] = {}
    try:
        elastic_window(0, clip.n_frames, options.cube.length)
    except ClipTooShort as exc:
        return ClipResult(index, 0, 0, clip.n_frames, sec, skipped=str(exc))
    extractor, estimator = _stages(options)
    t0 = time.perf_counter()
    frames = clip.read()
    t1 = time.perf_counter()
    classes = None  # class descriptions come with detector boxes (the same detector pass)
    if ref_boxes is None:
        boxes, classes = clip_boxes_and_classes(frames, extractor, progress=progress,
                                                desc=f"boxes {clip.name}")
        if not extractor.describes:
            classes = None
    else:
        boxes = ref_boxes
    t2 = time.perf_counter()
    flows = clip_flow(frames, estimator, progress=progress, desc=f"flow {clip.name}")
    _check_finite_flow(flows, clip.name)
    t3 = time.perf_counter()
    cubes = clip_cubes(frames, flows, boxes, options.cube, progress=progress, desc=f"cubes {clip.name}",
                       classes_per_frame=classes)
    t4 = time.perf_counter()
    sec = {"read": t1 - t0, "boxes": t2 - t1, "flow": t3 - t2, "cubes": t4 - t3}
    n_boxes = np.array([len(b) for b in boxes], np.int64)
    checksum = cache_checksum(cubes.raw, cubes.flow, cubes.frame, cubes.box, cubes.classes)
    extra = {} if cubes.classes is None else {"classes": cubes.classes}
    atomic_write_with(dest, lambda tmp: np.savez(
        tmp, fingerprint=np.array(fingerprint), raw=cubes.raw, flow=cubes.flow, frame=cubes.frame,
        box=cubes.box, n_dropped=np.int64(cubes.n_dropped), n_boxes=n_boxes, checksum=np.array(checksum),
        **extra))
    return ClipResult(index, len(cubes), cubes.n_dropped, clip.n_frames, sec)


def _check_finite_flow(flows: Any, name: str) -> None:
    """NaN/inf flow is refused, not zeroed: it means a broken flow backend or input, and zeroing it
    would silently make moving objects look still (and feed NaN into training otherwise)."""
    for t, f in enumerate(flows):
        if not np.isfinite(f).all():
            raise UserError(f"clip {name}: the optical flow of frame {t} contains NaN or inf values; "
                            "check the frames or use another --flow method")


# --------------------------------------------------------------------------------------------- prepare
def prepare(root: str | os.PathLike[str] | Any, work: str | os.PathLike[str], *, split: str = "both",
            preset: str | None = None, box_source: str | None = None, flow_method: str | None = None,
            length: int | None = None, jobs: int = 1, progress: bool = True, detector_path: str | None = None,
            motion_wrap: bool | None = None, shard: tuple[int, int] | None = None,
            merge: bool = False, sets: list[str] | None = None,
            config: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Write (or complete) the work directory and return its manifest.

    Settings: the preset (``preset``, else the dataset's) ← ``config`` (a TOML file) ← ``sets``
    (``SECTION.FIELD=VALUE``) ← the keyword flags (see :mod:`statevad.settings`). ``shard=(i, n)`` only
    fills the clip caches of shard ``i`` of ``n`` and returns a shard report (no manifest); ``merge=True``
    computes nothing and builds the arrays + manifest from complete caches.
    """
    splits = _parse_split(split)
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    if shard is not None and merge:
        raise UserError("--shard and --merge are separate steps: run every shard, then --merge once")
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise UserError(f"--shard {shard[0]}/{shard[1]}: expected I/N with 0 <= I < N")
    if hasattr(root, "clips"):  # an already loaded Dataset is accepted as is
        ds = root
    else:
        from statevad.datasets import load_dataset

        ds = load_dataset(root)
    preset_obj = get_preset(preset or getattr(ds, "name", None) or "generic")
    options = resolve_options(preset_obj, box_source=box_source, flow_method=flow_method, length=length,
                              detector_path=detector_path, motion_wrap=motion_wrap, sets=sets,
                              config=config)
    work = Path(work)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the work directory {work}: {exc.strerror or exc}") from None
    # Shard runs share the directory with each other by design (they only write their own clip caches,
    # never merge, clean or write the manifest); every other run holds it exclusively.
    with contextlib.nullcontext() if shard is not None else work_lock(work):
        return _prepare_locked(ds, root, work, splits, options, jobs, progress, shard, merge)


def work_lock(work: Path) -> contextlib.AbstractContextManager[None]:
    """An exclusive, non-blocking ``flock`` on ``WORK/.lock`` for the duration of an unsharded prepare: a
    second run fails at once naming the first one's pid, instead of both writing the same files."""
    import fcntl

    @contextlib.contextmanager
    def held() -> Any:
        path = work / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise UserError(f"work directory {work} is in use by another `statevad prepare` (pid {pid}); "
                                "wait for it to finish or use another --work") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock; the file stays (removing it would race a waiting run)

    return held()


def _prepare_locked(ds: Any, root: Any, work: Path, splits: tuple[str, ...], options: PrepareOptions,
                    jobs: int, progress: bool, shard: tuple[int, int] | None, merge: bool) -> dict[str, Any]:
    old = read_manifest(work)
    manifest = _new_manifest(ds, options)
    others = {k: v for k, v in ((old or {}).get("splits") or {}).items() if k not in splits}
    if shard is not None:
        pass  # a shard writes no manifest: nothing is kept or dropped
    elif (old and options_identity(old.get("options")) == options_identity(manifest["options"])
            and old.get("versions") == manifest["versions"]):
        manifest["splits"].update(others)
        kept = {k: v for k, v in (old.get("dropped_splits") or {}).items() if k not in splits}
        if kept:
            manifest["dropped_splits"] = kept
    elif others:
        names = " and ".join(sorted(others))
        why = ("its box/flow/cube options differ" if options_identity(old.get("options"))
               != options_identity(manifest["options"]) else "it was prepared with other library versions")
        manifest["dropped_splits"] = {k: f"`statevad prepare --split {'/'.join(splits)}` ran with other "
                                         f"settings ({why}); prepare it again" for k in others}
        warnings.warn(f"the {names} split of {work} was dropped from the manifest because {why} from this "
                      f"run's; prepare it again with these settings", stacklevel=3)
    _log(progress, f"boxes: {options.box_source} ({options.box_source_reason}); flow: {options.flow.method}; "
                   f"cube length {options.cube.frames}; preset {options.preset}")
    report: dict[str, Any] = {"format": FORMAT + "#shard", "shard": list(shard or ()), "splits": {}}
    for sp in splits:
        clips = list(ds.clips(sp))
        if not clips:
            warnings.warn(f"dataset {root} has no {sp} clips; skipping that split", stacklevel=2)
            continue
        if shard is not None:
            report["splits"][sp] = _prepare_shard(ds, sp, clips, options, work, jobs, progress, shard)
            continue
        # Not done by shard runs, which may share the work directory with shards writing right now.
        remove_stale_temps(work / sp)
        remove_stale_temps(work / sp / "clips")
        manifest["splits"][sp] = _prepare_split(ds, sp, clips, options, work, jobs, progress,
                                                ((old or {}).get("splits") or {}).get(sp), merge_only=merge)
        atomic_write_json(work / "manifest.json", manifest)
    return report if shard is not None else manifest


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N); a Slurm array task passes ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UserError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
    return int(m.group(1)), int(m.group(2))


def shard_clips(n_clips: int, shard: tuple[int, int]) -> list[int]:
    """Clip indices (within a split) of shard ``i`` of ``n``: ``index % n == i`` (deterministic, and
    interleaved so that long and short clips spread over the shards)."""
    i, n = shard
    return [k for k in range(n_clips) if k % n == i]


def _clip_plan(ds: Any, split: str, clips: list[Any], options: PrepareOptions,
               work: Path) -> tuple[list[Any], list[str], list[Path]]:
    """Reference boxes, fingerprints and cache paths of every clip of a split."""
    n_frames = int(sum(c.n_frames for c in clips))
    ref_all = _reference_boxes(ds, split, n_frames) if options.box_source == "reference" else None
    cache_dir = work / split / "clips"
    cache_dir.mkdir(parents=True, exist_ok=True)
    refs = [ref_all[c.start:c.start + c.n_frames] if ref_all is not None else None for c in clips]
    fps = [clip_fingerprint(c, options, r) for c, r in zip(clips, refs, strict=True)]
    paths = [cache_dir / f"{i:04d}_{cache_name(c.name)}.npz" for i, c in enumerate(clips)]
    return refs, fps, paths


def _too_short(clip: Any, options: PrepareOptions) -> str | None:
    """Why a clip has no cube window (it is skipped, never cached), or None."""
    from statevad.cubes import ClipTooShort, elastic_window

    try:
        elastic_window(0, clip.n_frames, options.cube.length)
    except ClipTooShort as exc:
        return str(exc)
    return None


def _prepare_shard(ds: Any, split: str, clips: list[Any], options: PrepareOptions, work: Path, jobs: int,
                   progress: bool, shard: tuple[int, int]) -> dict[str, Any]:
    """Fill the caches of one shard's clips; the merge step builds arrays and manifest later."""
    refs, fps, paths = _clip_plan(ds, split, clips, options, work)
    mine = shard_clips(len(clips), shard)
    todo = [i for i in mine if read_cache(paths[i], fps[i], options.cube) is None]
    _log(progress, f"{split} shard {shard[0]}/{shard[1]}: {len(mine)} of {len(clips)} clips; "
                   f"{len(mine) - len(todo)} cached, {len(todo)} to compute")
    args = [(i, clips[i], options, fps[i], paths[i], refs[i]) for i in todo]
    skipped = {}
    for res in _run_tasks(args, jobs, progress):
        if res.skipped:
            skipped[res.index] = res.skipped
            warnings.warn(f"{split} clip {clips[res.index].name} skipped (too short): {res.skipped}",
                          stacklevel=2)
    return {"clips": len(mine), "computed": len(todo) - len(skipped),
            "skipped_clips": {str(k): v for k, v in skipped.items()}}


def _parse_split(split: str) -> tuple[str, ...]:
    if split == "both":
        return SPLITS
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: choose train, test or both")
    return (split,)


def _new_manifest(ds: Any, options: PrepareOptions) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "dataset": {"root": str(Path(ds.root).resolve()), "layout": getattr(ds, "layout", None),
                    "name": getattr(ds, "name", None)},
        "options": options.to_dict(),
        "box_source": options.box_source,
        "box_source_reason": options.box_source_reason,
        "versions": versions(),
        "splits": {},
    }


def _reference_boxes(ds: Any, split: str, n_frames: int) -> list[np.ndarray]:
    from statevad.boxes import load_reference_boxes

    ref = (getattr(ds, "reference_boxes", None) or {}).get(split)
    if ref is None:
        raise UserError(f"--boxes reference: dataset {ds.root} has no reference box file for the {split} "
                        "split (boxes_reference_<split>.npz); use --boxes auto")
    return load_reference_boxes(ref, n_frames)


def _prepare_split(ds: Any, split: str, clips: list[Any], options: PrepareOptions, work: Path, jobs: int,
                   progress: bool, old_entry: dict[str, Any] | None,
                   merge_only: bool = False) -> dict[str, Any]:
    from tqdm import tqdm

    n_frames = int(sum(c.n_frames for c in clips))
    refs, fps, paths = _clip_plan(ds, split, clips, options, work)
    todo = [i for i in range(len(clips)) if read_cache(paths[i], fps[i], options.cube) is None]
    if merge_only:
        short = {i: why for i in todo if (why := _too_short(clips[i], options))}
        _require_caches(split, clips, [i for i in todo if i not in short], work)
        for i, why in short.items():
            warnings.warn(f"{split} clip {clips[i].name} skipped (too short): {why}", stacklevel=2)
        todo = []
    else:
        short = {}
    results: dict[int, ClipResult] = {i: ClipResult(i, 0, 0, clips[i].n_frames, skipped=why)
                                      for i, why in short.items()}
    _log(progress, f"{split}: {len(clips)} clips, {n_frames} frames; {len(clips) - len(todo)} cached, "
                   f"{len(todo)} to compute")
    bar_c = tqdm(total=len(todo), desc=f"{split} clips", unit="clip", disable=not progress, file=sys.stderr)
    bar_f = tqdm(total=sum(clips[i].n_frames for i in todo), desc=f"{split} frames", unit="frame",
                 disable=not progress, file=sys.stderr)
    args = [(i, clips[i], options, fps[i], paths[i], refs[i]) for i in todo]
    for res in _run_tasks(args, jobs, progress):
        results[res.index] = res
        if res.skipped:
            warnings.warn(f"{split} clip {clips[res.index].name} skipped (too short): {res.skipped}",
                          stacklevel=2)
        bar_c.update(1)
        bar_f.update(res.n_frames)
    bar_c.close()
    bar_f.close()
    skipped = {i: r.skipped for i, r in results.items() if r.skipped}  # never cached: re-checked each run
    reuse = None if todo else old_entry  # any recomputed clip: merge again
    entry = _merge_split(split, clips, paths, fps, options, work, skipped, reuse, progress)
    entry["n_clips_computed"] = len(todo) - len([i for i in todo if i in skipped])
    entry["seconds"] = {k: round(sum(r.seconds.get(k, 0.0) for r in results.values()), 3)
                        for k in ("read", "boxes", "flow", "cubes")}
    _write_frames_labels(ds, split, clips, work)
    return entry


def _require_caches(split: str, clips: list[Any], missing: list[int], work: Path) -> None:
    """The merge step needs every (long enough) clip's valid cache: name the missing ones."""
    if not missing:
        return
    names = ", ".join(clips[i].name for i in missing[:10]) + (f" (+{len(missing) - 10} more)"
                                                              if len(missing) > 10 else "")
    raise UserError(f"cannot merge {work}: {len(missing)} of {len(clips)} {split} clips have no valid cache "
                    f"yet: {names}; run the missing `statevad prepare --shard I/N` tasks first")


def _run_tasks(args: list[tuple], jobs: int, progress: bool) -> Iterable[ClipResult]:
    if jobs == 1 or len(args) <= 1:
        for a in args:
            yield process_clip(*a, progress=progress)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding onnxruntime/OpenCV threads
    with ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=ctx, initializer=_worker_init,
                             initargs=(True,)) as pool:
        # Longest clips first so that the last worker is not left with a long clip alone.
        order = sorted(args, key=lambda a: -a[1].n_frames)
        futures = [pool.submit(process_clip, *a) for a in order]
        for fut in as_completed(futures):
            yield fut.result()


def _merge_split(split: str, clips: list[Any], paths: list[Path], fps: list[str], options: PrepareOptions,
                 work: Path, skipped: dict[int, str], old_entry: dict[str, Any] | None,
                 progress: bool) -> dict[str, Any]:
    """Concatenate the clip caches into memory-mappable arrays (skipped when nothing changed)."""
    from tqdm import tqdm

    out_dir = work / split
    lengths, dropped, described = [], [], []
    for i, p in enumerate(paths):
        if i in skipped:
            lengths.append(0)
            dropped.append(0)
            continue
        with np.load(p, allow_pickle=False) as z:
            lengths.append(len(z["frame"]))
            dropped.append(int(z["n_dropped"]))
            described.append("classes" in z.files)
    n = int(sum(lengths))
    t, pt = options.cube.frames, options.cube.patch
    shapes = {"raw": (n, t, pt, pt, 3), "flow": (n, t, pt, pt, 2), "frame": (n,), "clip": (n,), "box": (n, 4)}
    dtypes = {"raw": np.uint8, "flow": np.float16, "frame": np.int64, "clip": np.int32, "box": np.float32}
    if described and all(described):  # every clip's boxes came with class descriptions
        shapes["classes"], dtypes["classes"] = (n, N_CLASSES), np.float16
    if (old_entry and old_entry.get("clip_fingerprints") == fps and old_entry.get("n_cubes") == n
            and _arrays_match(out_dir, shapes, dtypes)
            and _checksums_match(out_dir, old_entry.get("checksums"))):
        checksums = old_entry["checksums"]
    else:
        with _atomic_arrays(out_dir, shapes, dtypes) as arrs:
            pos = 0
            for i, p in enumerate(tqdm(paths, desc=f"{split} merge", unit="clip", disable=not progress,
                                       leave=False, file=sys.stderr)):
                if lengths[i] == 0:
                    continue
                sl = slice(pos, pos + lengths[i])
                with np.load(p, allow_pickle=False) as z:
                    arrs["raw"][sl] = z["raw"]
                    arrs["flow"][sl] = z["flow"]
                    arrs["frame"][sl] = z["frame"] + clips[i].start
                    arrs["box"][sl] = z["box"]
                    if "classes" in arrs:
                        arrs["classes"][sl] = z["classes"]
                arrs["clip"][sl] = i
                pos += lengths[i]
        checksums = {k: sha256_file(out_dir / f"{k}.npy") for k in shapes}
        for k in OPTIONAL_ARRAYS:
            if k not in shapes:  # a stale optional array must not pass as this merge's
                (out_dir / f"{k}.npy").unlink(missing_ok=True)
    return {
        "clips": len(clips),
        "n_frames": int(sum(c.n_frames for c in clips)),
        "n_cubes": n,
        "n_dropped_by_motion_filter": int(sum(dropped)),
        "shapes": {k: list(v) for k, v in shapes.items()},
        "checksums": checksums,
        "clip_fingerprints": fps,
        "skipped_clips": {str(k): v for k, v in skipped.items()},
    }


def _checksums_match(out_dir: Path, checksums: Any) -> bool:
    """The merged arrays still have the sha256 the manifest recorded (a flipped byte means: merge again from
    the clip caches, which carry their own checksums)."""
    if not isinstance(checksums, dict):
        return False
    try:
        return set(checksums) >= set(ARRAYS) and all(sha256_file(out_dir / f"{k}.npy") == v
                                                     for k, v in checksums.items())
    except OSError:
        return False


def _arrays_match(out_dir: Path, shapes: dict[str, tuple], dtypes: dict[str, Any]) -> bool:
    try:
        for k in shapes:
            a = np.load(out_dir / f"{k}.npy", mmap_mode="r")
            if a.shape != shapes[k] or a.dtype != dtypes[k]:
                return False
    except Exception:
        return False
    return True


class _atomic_arrays:
    """Open one ``.npy`` memmap per array on temporary siblings; publish all of them only on success."""

    def __init__(self, out_dir: Path, shapes: dict[str, tuple], dtypes: dict[str, Any]) -> None:
        self.out_dir, self.shapes, self.dtypes = out_dir, shapes, dtypes
        self._ctx: list[Any] = []

    def __enter__(self) -> dict[str, np.ndarray]:
        arrs: dict[str, np.ndarray] = {}
        self._arrs = arrs
        try:
            for k in self.shapes:
                ctx = atomic_path(self.out_dir / f"{k}.npy")
                tmp = ctx.__enter__()
                self._ctx.append(ctx)
                arrs[k] = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtypes[k],
                                                    shape=self.shapes[k])
                _allocate(tmp)
        except BaseException as exc:  # a full disk while opening: remove the temporaries made so far
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return arrs

    def __exit__(self, *exc: Any) -> None:
        for a in self._arrs.values():
            if hasattr(a, "flush"):
                a.flush()
        self._arrs.clear()
        for ctx in reversed(self._ctx):
            ctx.__exit__(*exc)


def _allocate(path: Path) -> None:
    """Reserve a memory-mapped file's blocks now: a full disk is then one OSError here, not a SIGBUS (a crash
    without a message) at the first page written. File systems without fallocate are left as they are."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _write_frames_labels(ds: Any, split: str, clips: list[Any], work: Path) -> None:
    info = [{"name": c.name, "n_frames": int(c.n_frames), "start": int(c.start), "scene": c.scene,
             "source": str(c.source)} for c in clips]
    atomic_write_json(work / split / "frames.json", info)
    if split == "test":
        n = int(sum(c.n_frames for c in clips))
        lab = ds.labels("test") if hasattr(ds, "labels") else None
        arr = np.full(n, -1, np.int8) if lab is None else np.asarray(lab).astype(np.int8)
        if len(arr) != n:
            raise UserError(f"dataset {ds.root}: {len(arr)} test labels for {n} test frames")
        atomic_save_npy(work / split / "labels.npy", arr)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"statevad prepare: {msg}", file=sys.stderr)


def summary(manifest: dict[str, Any]) -> str:
    """One line per split for the CLI: cubes, motion-filter drops, box source."""
    lines = [f"box source: {manifest['box_source']} ({manifest.get('box_source_reason', '')}); "
             f"flow: {manifest['options']['flow']['method']}; preset: {manifest['options']['preset']}"]
    for sp, e in manifest["splits"].items():
        skipped = f", {len(e['skipped_clips'])} clips skipped (too short)" if e.get("skipped_clips") else ""
        lines.append(f"{sp}: {e['n_cubes']} cubes from {e['clips']} clips / {e['n_frames']} frames; "
                     f"motion filter dropped {e['n_dropped_by_motion_filter']}{skipped}")
    return "\n".join(lines)
