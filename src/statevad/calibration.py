"""What a model knows about its training footage, and alarms calibrated in false alarms per hour.

* **Model card** (:func:`build_card`): the training footage's resolution, colour or grey, frame rate, box /
  flow / cube settings, frame and clip counts, date and statevad version, stored in the model file;
  ``statevad info model.pt`` prints it (:func:`format_card`) and ``statevad score`` compares every input
  with it (:func:`check_input`).
* **Score distribution** (:func:`score_distribution`): quantiles of the frame scores of normal footage and
  the number of *events* (runs of frames above a threshold, merged and filtered exactly as
  :class:`statevad.events.EventTracker` does in ``score``) for a grid of thresholds. ``train`` stores it for
  the training footage, ``statevad calibrate`` for footage of the camera; :func:`threshold_for_rate` turns
  "R false alarms per hour" into a threshold. Plain lists of floats: the model file stays pickle-free.
* **Border rule** (:func:`border_keep`): a box that touches the frame border and is smaller than
  ``border_min_px`` on its short side is an object cut by the border (a pedestrian entering the view); its
  cube shows a fragment the network never saw whole, so it is skipped (not scored) until it is big enough.

Frame scores always come from :mod:`statevad.scoring` (the functions ``score`` uses); nothing here
re-implements the fusion.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from statevad.errors import UserError
from statevad.events import events
from statevad.scoring import EMPTY_FRAME_SCORE

# Events as `statevad score` forms them: runs closer than MIN_GAP_S merge, runs shorter than MIN_LEN_S drop.
EVENT_MIN_GAP_S = 0.5
EVENT_MIN_LEN_S = 0.2
# `score --false-alarms-per-hour` default: one false alarm an hour on footage like the calibration footage.
DEFAULT_FALSE_ALARMS_PER_HOUR = 1.0
# Border rule: skip boxes touching the border (within BORDER_MARGIN_PX) whose short side is under this.
# 16 px = half the 32-px cube patch: below it a fragment is blown up more than 2x. Measured in
# benchmarks/README.md ("Calibrated alarms"): it removes the demo clip's border alarms (frames 0-2).
BORDER_MIN_PX = 16.0
BORDER_MARGIN_PX = 1.0
# Score settings that do not change a frame score (so a distribution stays valid when they differ).
# ``overlap`` and ``detect_ahead`` only reorder the work (the network pass of one batch, the detector of the
# next frame, run beside the other stages);
# ``max_score_every`` acts only behind a live source the scorer cannot keep up with (live.CarryGovernor).
# ``score_every`` / ``detect_every`` are streaming approximations (outputs carried along tracks, boxes moved
# by the flow): the training distribution scores every cube with the prepared boxes, and the streamed frame
# scores of normal footage keep its upper quantiles (measured: benchmarks/README.md "Real-time scoring").
_NEUTRAL_SCORE_FIELDS = frozenset({"device", "batch_size", "bf16", "overlap", "max_score_every",
                                   "score_every", "detect_every", "detect_ahead"})
QUANTILE_LEVELS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)
TAIL_EVENTS = 10  # the tail fit uses the events above the lowest threshold that leaves at most this many
# Grey: fewer than 1% of the pixels have channels more than 12 levels apart. Lossy codecs shift grey
# footage's channels by a level or two everywhere (MJPEG: B 58, G 60, R 60), colour differs by tens.
GREY_SPREAD, GREY_FRACTION = 12, 0.01
MAX_DISTRIBUTION_CUBES = 40_000  # training scores: whole clips, in order, up to this many cubes


# ------------------------------------------------------------------------------------------ the card
def is_grey(pixels: np.ndarray) -> bool:
    """Whether BGR pixels (..., 3) are grey: their channels are equal up to lossy-coding noise."""
    p = np.asarray(pixels)
    if p.size == 0 or p.shape[-1] != 3:
        return True
    p = p.reshape(-1, 3).astype(np.int16)
    return float(((p.max(1) - p.min(1)) > GREY_SPREAD).mean()) < GREY_FRACTION


def probe_source(source: str, root: str | None) -> tuple[tuple[int, int] | None, float | None]:
    """(H, W) and fps of a clip source from its header (no decoding); (None, None) when it is not here."""
    from statevad.io import open_source, valid_fps

    candidates = [Path(source)] + ([Path(root) / Path(source).name] if root else [])
    for path in candidates:
        if not path.exists():
            continue
        try:
            src = open_source(path, strict=False)
        except (UserError, OSError):
            continue
        try:
            return getattr(src, "size", None), valid_fps(getattr(src, "fps", None))
        finally:
            src.close()
    return None, None


def _training_date() -> str:
    """Now, in UTC; or SOURCE_DATE_EPOCH (the reproducible-builds convention) when set, so that two seeded
    trainings can still write byte-identical model files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.UTC) if epoch.isdigit()
            else datetime.datetime.now(datetime.UTC))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_card(manifest: dict[str, Any] | None, clips: Sequence[dict[str, Any]], raw: np.ndarray,
               n_frames: int, n_cubes_used: int) -> dict[str, Any]:
    """The model card of a training run: what the training footage and its cubes were.

    Resolution and fps come from the clips' headers (None when the footage is not on this machine); colour
    vs grey from the training cubes themselves (a sample of 256), so it is known even without the footage.
    """
    from statevad import __version__

    manifest = manifest if isinstance(manifest, dict) else {}
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    options = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
    sizes, rates = set(), set()
    for c in clips:
        size, fps = probe_source(str(c.get("source", "")), dataset.get("root"))
        if size:
            sizes.add((int(size[0]), int(size[1])))
        if fps:
            rates.add(round(float(fps), 3))
    sample = raw[np.linspace(0, len(raw) - 1, min(256, len(raw))).astype(np.int64)] if len(raw) else raw
    return {
        "date": _training_date(),
        "statevad": str(__version__),
        "dataset": {k: dataset.get(k) for k in ("name", "layout", "root")},
        "resolution": [f"{w}x{h}" for h, w in sorted(sizes)],
        "colour": "grey" if is_grey(sample) else "colour",
        "fps": sorted(rates),
        "clips": len(clips),
        "frames": int(n_frames),
        "cubes": int(len(raw)),
        "cubes_trained_on": int(n_cubes_used),
        "box_source": options.get("box_source"),
        "box": options.get("box"),
        "flow": options.get("flow"),
        "cube": options.get("cube"),
    }


def format_card(path: Path, ckpt: Any) -> dict[str, Any]:
    """``statevad info MODEL``: the card, the network and the alarm calibration as one flat document."""
    card = ckpt.card or {}
    p = ckpt.preset
    doc: dict[str, Any] = {"model file": str(path), "format": ckpt.format, "sha256": ckpt.sha256,
                           "preset": p.name,
                           "network": f"{p.model.n_layers} layer{'s' if p.model.n_layers != 1 else ''}, "
                                      f"widths {list(p.model.widths)}, {p.model.frames}-frame cubes"}
    if not card:
        doc["model card"] = "none (written before statevad stored one, or imported weights)"
    else:
        ds = card.get("dataset") or {}
        doc.update({
            "trained": f"{card.get('date')} with statevad {card.get('statevad')}",
            "training footage": f"{ds.get('name') or '?'} ({ds.get('layout') or '?'}), {card.get('clips')} "
                                f"clips, {card.get('frames')} frames, {card.get('cubes')} cubes "
                                f"({card.get('cubes_trained_on')} trained on)",
            "resolution": ", ".join(card.get("resolution") or []) or "unknown",
            "colour": card.get("colour"),
            "fps": ", ".join(f"{f:g}" for f in card.get("fps") or []) or "unknown",
            "boxes": f"{card.get('box_source')} ({_settings_words(card.get('box'))})",
            "flow": _settings_words(card.get("flow")), "cube": _settings_words(card.get("cube")),
        })
    if ckpt.stats:
        doc["training statistics"] = {k: round(v, 6) for k, v in ckpt.stats.items()}
    sc = p.score
    flow_term = "excess speed" if sc.flow_term.lower() == "excess" else "SSE"
    doc["scoring"] = (f"eps {sc.epsilon:g}, weights raw {sc.w_raw:g} / flow ({flow_term}) {sc.w_flow:g} / "
                      f"motion {sc.w_motion:g} / appearance {sc.w_appearance:g}"
                      + (f" (label-free selection at training, {ckpt.selection.get('weight_rule', 'grid')} "
                         "rule)" if ckpt.selection else ""))
    app = getattr(ckpt, "appearance", None)
    doc["appearance term"] = (f"kNN (k {app.k}) over {len(app.bank)} training boxes' detector class "
                              f"descriptions, z-scored on {app.n_reference} held-out cubes" if app is not None
                              else "none (trained without the detector's class descriptions)")
    for key, dist in (("training scores", ckpt.score_distribution), ("calibration", ckpt.calibration)):
        if dist:
            doc[key] = describe_distribution(dist)
    if ckpt.calibration:
        doc["calibrated threshold"] = (f"{ckpt.calibration['threshold']:.4f} "
                                       f"({ckpt.calibration['false_alarms_per_hour']:g} false alarms/hour)")
    doc["score's default threshold"] = _default_threshold(ckpt)
    return doc


def _settings_words(section: object) -> str:
    """``key value, ...`` of a settings section (a Python dict repr is no reading for a user)."""
    if not isinstance(section, dict):
        return str(section)
    return ", ".join(f"{k} {v}" for k, v in section.items())


def _default_threshold(ckpt: Any) -> str:
    """What ``statevad score --model THIS`` alarms above when given no threshold flag, and why: the user
    should not have to run a clip to learn it."""
    from statevad.settings import resolve

    try:
        thr, rule, notes = choose_threshold(ckpt, resolve(ckpt.preset, "score").score, BORDER_MIN_PX, None,
                                            None)
    except (UserError, KeyError, TypeError, ValueError) as exc:  # an odd stored distribution: say so
        return f"not known ({exc})"
    return f"{thr:.4f}: {rule}" + "".join(f" [{n}]" for n in notes)


def describe_distribution(dist: dict[str, Any]) -> str:
    q = dict(zip(dist["quantiles"]["levels"], dist["quantiles"]["values"], strict=True))
    return (f"{dist['footage']}: {dist['n_frames']} frames ({dist['hours'] * 60:.1f} min at {dist['fps']:g} "
            f"fps); frame score median {q.get(0.5, math.nan):.3f}, 99% {q.get(0.99, math.nan):.3f}, max "
            f"{q.get(1.0, math.nan):.3f}")


# --------------------------------------------------------------------------------- input vs the card
def check_input(card: dict[str, Any] | None, frame: np.ndarray, fps: float, spec: str, *,
                allow: bool = False, fps_known: bool = True) -> list[str]:
    """Warnings for an input unlike the training footage; a :class:`UserError` where scores would be
    meaningless (unless ``allow``, which turns those into warnings too).

    Refused: colour footage on a model trained on grey footage (the raw branch never saw chroma: every
    object is "anomalous"), and a frame rate more than 2x off the training rate (the flow branch and the
    motion features are per frame: every moving object moves 2x "too fast" or "too slow"). Warned: another
    resolution (objects have other sizes in pixels), grey footage on a colour model, an fps off by > 10%, and
    any fps difference when the input carries no rate (``fps_known`` False: ``fps`` is only assumed).
    """
    if not card:
        return []
    warn, refuse = [], []
    h, w = frame.shape[:2]
    res = card.get("resolution") or []
    if res and f"{w}x{h}" not in res:
        warn.append(f"{spec} is {w}x{h} but the model was trained on {', '.join(res)} footage: objects "
                    "have other sizes in pixels than in training, so scores may shift")
    grey = is_grey(frame)
    if card.get("colour") == "grey" and not grey:
        refuse.append(f"{spec} is in colour but the model was trained on grey footage (its raw branch never "
                      "saw colour, so every object would look anomalous): convert the input to grey (e.g. "
                      "`ffmpeg -i in.mp4 -vf format=gray out.mp4`) or train on colour footage")
    elif card.get("colour") == "colour" and grey:
        warn.append(f"{spec} is grey but the model was trained on colour footage: scores may shift")
    rates = card.get("fps") or []
    if rates:
        ratio = max(fps, rates[0]) / min(fps, rates[0])
        line = (f"{spec} runs at {fps:g} fps but the model was trained on {rates[0]:g} fps footage (the flow "
                "and motion features are per frame)")
        if not fps_known and ratio > 1.1:
            warn.append(f"{spec} carries no frame rate, so {fps:g} fps was assumed, but the model was "
                        f"trained on {rates[0]:g} fps footage: give --fps {rates[0]:g} if that is its rate")
        elif ratio > 2.0:
            refuse.append(f"{line}: objects would move {ratio:.1f}x faster or slower than in training; "
                          "resample the input to the training rate (e.g. `ffmpeg -i in.mp4 -r "
                          f"{rates[0]:g} out.mp4`), give its true rate with --fps, or train on footage at "
                          "this rate")
        elif ratio > 1.1:
            warn.append(f"{line}: scores may shift")
    if refuse and not allow:
        raise UserError(refuse[0] + " (--allow-mismatch scores it anyway)")
    return warn + refuse


# --------------------------------------------------------------------------------------- border rule
def touches_border(boxes: np.ndarray, size_hw: tuple[int, int],
                   margin: float = BORDER_MARGIN_PX) -> np.ndarray:
    """Mask of the boxes (x1, y1, x2, y2) that lie within ``margin`` pixels of the frame's edge."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = size_hw
    return (b[:, 0] <= margin) | (b[:, 1] <= margin) | (b[:, 2] >= w - margin) | (b[:, 3] >= h - margin)


def border_keep(boxes: np.ndarray, size_hw: tuple[int, int], min_px: float,
                margin: float = BORDER_MARGIN_PX) -> np.ndarray:
    """Mask of the boxes (x1, y1, x2, y2) to score: all but those touching the border (within ``margin``
    pixels) whose shorter side is under ``min_px``. ``min_px`` 0 keeps every box."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if min_px <= 0 or not len(b):
        return np.ones(len(b), bool)
    small = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) < min_px
    return ~(touches_border(b, size_hw, margin) & small)


def check_border_min_px(value: object) -> float:
    """``--border-min-size`` as a float, or a one-line :class:`UserError` (``score``, ``test``)."""
    try:
        border = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        border = math.nan
    if not (math.isfinite(border) and 0 <= border <= 1e4):
        raise UserError(f"--border-min-size must be a size in pixels >= 0 (0 = off), got {value!r}")
    return border


def skip_border_boxes(box_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                      min_px: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A box stage that drops what :func:`border_keep` skips (``min_px`` 0: the stage unchanged); the
    engine's ``flow_prev`` / ``index`` keywords reach the wrapped stage when it takes them."""
    if min_px <= 0:
        return box_fn
    from statevad.stream.engine import accepts

    wanted = [k for k in ("flow_prev", "index") if accepts(box_fn, k)]

    def boxes(prev: np.ndarray, cur: np.ndarray, nxt: np.ndarray, flow_prev: np.ndarray | None = None,
              index: int | None = None) -> Any:
        given = {"flow_prev": flow_prev, "index": index}
        got = box_fn(prev, cur, nxt, **{k: given[k] for k in wanted})
        if isinstance(got, tuple):  # (boxes, class descriptions): the descriptions follow their boxes
            keep = border_keep(got[0], cur.shape[:2], min_px)
            return got[0][keep], got[1][keep]
        return got[np.asarray(border_keep(got, cur.shape[:2], min_px))]

    for name in ("prefetch", "close"):  # the detector-ahead hooks of the wrapped stage (the engine's)
        if callable(getattr(box_fn, name, None)):
            setattr(boxes, name, getattr(box_fn, name))
    return boxes


# ------------------------------------------------------------------------------ events and thresholds
def event_frames(fps: float) -> tuple[int, int]:
    """(min_gap, min_len) in frames, as ``statevad score`` derives them from the frame rate."""
    return max(1, round(EVENT_MIN_GAP_S * fps)), max(1, round(EVENT_MIN_LEN_S * fps))


def count_events(series: Sequence[np.ndarray], thresholds: np.ndarray, min_gap: int,
                 min_len: int) -> np.ndarray:
    """Number of events (:func:`statevad.events.events`' rules) above each threshold, summed over clips.

    Vectorised form of the tracker: above-threshold frames whose index gap exceeds ``min_gap`` start a new
    run; a run counts when it spans at least ``min_len`` frames (first to last above frame).
    """
    out = np.zeros(len(thresholds), np.int64)
    for s in series:
        s = np.asarray(s, np.float64)
        for k, thr in enumerate(thresholds):
            idx = np.flatnonzero(s > thr)
            if not len(idx):
                continue
            cut = np.flatnonzero(np.diff(idx) > min_gap)
            first = idx[np.concatenate([[0], cut + 1])]
            last = idx[np.concatenate([cut, [len(idx) - 1]])]
            out[k] += int(((last - first + 1) >= min_len).sum())
    return out


def score_settings(sc: Any, border_min_px: float) -> dict[str, Any]:
    """The settings a frame score depends on: every score field but device/batch size/bf16, and the border
    rule. Read from the dataclass, so fields added to the fusion later are covered automatically."""
    d = {k: v for k, v in dataclasses.asdict(sc).items() if k not in _NEUTRAL_SCORE_FIELDS}
    d["border_min_px"] = float(border_min_px)
    return d


def score_distribution(series: Sequence[np.ndarray], fps: float, settings: dict[str, Any], *, source: str,
                       footage: str) -> dict[str, Any]:
    """Quantiles, the event-count curve and the tail fit of the frame scores of normal footage.

    ``series``: frame scores, one array per clip (events never span two clips). The curve's thresholds are
    201 quantiles of the upper half plus the 200 highest distinct scores, so the tail is exact.
    """
    clips = [np.asarray(s, np.float64) for s in series if len(s)]
    if not clips:
        raise UserError(f"{footage}: no frame was scored, so there is nothing to calibrate on")
    allv = np.concatenate(clips)
    if not np.isfinite(allv).all():
        raise UserError(f"{footage}: frame scores contain NaN or inf; the model or the footage is corrupted")
    real = allv[allv > EMPTY_FRAME_SCORE]  # frames with an object (an empty frame never alarms)
    if not real.size:
        raise UserError(f"{footage}: no object was found in any frame, so there is nothing to calibrate on")
    top = np.unique(real)[-200:]
    thresholds = np.unique(np.concatenate([np.quantile(real, np.linspace(0.5, 1.0, 201)), top]))
    min_gap, min_len = event_frames(fps)
    counts = count_events(clips, thresholds, min_gap, min_len)
    tail = _tail_fit(clips, thresholds, counts, fps)
    return {
        "source": source, "footage": footage, "fps": float(fps), "n_frames": int(allv.size),
        "n_clips": len(clips), "hours": float(allv.size / fps / 3600.0),
        "min_gap_frames": min_gap, "min_len_frames": min_len, "settings": settings,
        "quantiles": {"levels": list(QUANTILE_LEVELS),
                      "values": [float(v) for v in np.quantile(allv, QUANTILE_LEVELS)]},
        "thresholds": [float(v) for v in thresholds], "events": [int(v) for v in counts], "tail": tail,
    }


def _tail_fit(clips: list[np.ndarray], thresholds: np.ndarray, counts: np.ndarray,
              fps: float) -> dict[str, float] | None:
    """Exponential tail of the event peaks: above ``u`` (the lowest threshold leaving <= TAIL_EVENTS
    events, at least one), events with a peak over u + x occur at n_u/hours * exp(-x / beta) per hour,
    beta = the mean excess of those peaks over u (the exponential's maximum-likelihood scale)."""
    # u: where at most TAIL_EVENTS events remain, but not below the 95% frame score (lower down, events
    # merge into long runs whose peaks say little about the tail); at least one event above it
    allv = np.concatenate(clips)
    floor = float(np.quantile(allv[allv > EMPTY_FRAME_SCORE], 0.95))
    ok = np.flatnonzero((counts <= TAIL_EVENTS) & (counts >= 1) & (thresholds >= floor))
    if not len(ok):
        ok = np.flatnonzero(counts >= 1)[-1:]
    if not len(ok):
        return None
    u = float(thresholds[ok[0]])
    min_gap, min_len = event_frames(fps)
    peaks = [e.peak_score for s in clips for e in events(s, u, fps, min_gap, min_len)]
    if not peaks:
        return None
    beta = max(float(np.mean(np.asarray(peaks) - u)), 1e-6)
    return {"u": u, "n": len(peaks), "beta": beta}


def check_rate(rate: object, flag: str = "--false-alarms-per-hour") -> float:
    try:
        r = float(rate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        r = math.nan
    if not (math.isfinite(r) and 0 < r <= 1e6):
        raise UserError(f"{flag} must be a number of false alarms per hour > 0 (e.g. 1 or 0.5), got {rate!r}")
    return r


def threshold_for_rate(dist: dict[str, Any], rate: float) -> tuple[float, str]:
    """The frame threshold that gives about ``rate`` events per hour on the distribution's footage, and
    what it means in words.

    With H hours of footage a rate R can be read off the event curve when R*H >= 1 event: the lowest
    threshold above which the curve never exceeds R*H (counts are not monotonic: two events may merge as the
    threshold drops). Below one event the footage cannot show the rate; the exponential tail of the event
    peaks extrapolates it, and the threshold never sits below the highest frame score seen then.
    """
    rate = check_rate(rate)
    thr = np.asarray(dist["thresholds"], np.float64)
    cnt = np.asarray(dist["events"], np.float64)
    hours = float(dist["hours"])
    target = rate * hours
    envelope = np.maximum.accumulate(cnt[::-1])[::-1]  # max count at this threshold or any higher one
    minutes = hours * 60
    what = f"on footage like the {dist['source']} footage ({dist['footage']}, {minutes:.1f} min)"
    if target >= 1 or dist.get("tail") is None:
        i = int(np.flatnonzero(envelope <= target)[0]) if (envelope <= target).any() else len(thr) - 1
        how = (f"{int(cnt[i])} event(s) above it in those {minutes:.1f} min" if target >= 1 else
               "no event in that footage could be fitted, so it is the highest frame score seen")
        return float(thr[i]), f"about {rate:g} false alarm(s) per hour {what}: {how}"
    tail = dist["tail"]
    fit = tail["u"] + tail["beta"] * math.log(tail["n"] / target)
    floor = float(thr[int(np.flatnonzero(envelope <= 0)[0])]) if (envelope <= 0).any() else float(thr[-1])
    value = max(fit, floor)
    return value, (f"about {rate:g} false alarm(s) per hour {what}: extrapolated (that footage is too short "
                   f"to show {rate:g}/hour: an exponential tail fitted to its {tail['n']} highest event "
                   f"peaks, scale {tail['beta']:.3g})")


def _score_defaults(sc: Any) -> dict[str, Any]:
    """The default value of every field of the score settings' dataclass (those with a plain default)."""
    return {f.name: f.default for f in dataclasses.fields(sc) if f.default is not dataclasses.MISSING}


def choose_threshold(ckpt: Any, sc: Any, border_min_px: float, given: float | None,
                     rate: float | None) -> tuple[float, str, list[str]]:
    """(threshold, rule in words, warnings) for ``statevad score``.

    Order: ``--threshold``; else the model's calibration (``statevad calibrate``) or, without one, its
    training-score distribution, at ``rate`` (default: the calibrated rate, else
    :data:`DEFAULT_FALSE_ALARMS_PER_HOUR`); a distribution made with other scoring settings is not used.
    Model files without a distribution fall back to the automatic rule
    (:func:`statevad.scoring.auto_threshold`).
    """
    from statevad.scoring import AUTO_Z, auto_threshold

    if given is not None:
        if rate is not None:
            raise UserError("give either --threshold or --false-alarms-per-hour, not both")
        return float(given), "given (--threshold)", []
    if rate is not None:
        rate = check_rate(rate)
    warnings: list[str] = []
    wanted = score_settings(sc, border_min_px)
    for dist in (ckpt.calibration, ckpt.score_distribution):
        if not dist:
            continue
        # older files stored the neutral fields too: they never decide whether a distribution applies
        stored = {k: v for k, v in (dist.get("settings") or {}).items() if k not in _NEUTRAL_SCORE_FIELDS}
        # a score field added after the distribution was made (e.g. detect_every) is missing from it: it was
        # made with that field's default, the behaviour before the field existed
        added = {k: v for k, v in _score_defaults(sc).items() if k in wanted and k not in stored}
        stored = {**added, **stored}
        if stored != wanted:
            diff = sorted(k for k in set(wanted) | set(stored) if wanted.get(k) != stored.get(k))
            warnings.append(f"the model's {dist['source']} score distribution was made with other scoring "
                            f"settings ({', '.join(diff)}), so it does not apply; run `statevad calibrate` "
                            "with these settings for a calibrated threshold")
            continue
        r = rate if rate is not None else float(dist.get("false_alarms_per_hour",
                                                         DEFAULT_FALSE_ALARMS_PER_HOUR))
        thr, words = threshold_for_rate(dist, r)
        return thr, words, warnings
    if rate is not None:
        raise UserError("--false-alarms-per-hour needs a score distribution that matches these scoring "
                        "settings, and the model has none: run `statevad calibrate MODEL NORMAL_FOOTAGE` "
                        "first (or give --threshold)")
    terms = ("|w_raw| + |w_flow|" + (" + |w_motion|" if sc.w_motion else "")
             + (" + |w_appearance|" if sc.w_appearance else ""))
    return (auto_threshold(sc.w_raw, sc.w_flow, w_motion=sc.w_motion, w_appearance=sc.w_appearance),
            f"auto: {AUTO_Z:g} x ({terms}) training-z units (no calibrated score distribution in the model)",
            warnings)


# --------------------------------------------------------------------------- frame scores of a split
def split_series(model: Any, split: Any, stats: dict[str, float], sc: Any, border_min_px: float,
                 size_hw: tuple[int, int] | None, *, clips: Sequence[str] | None = None,
                 max_cubes: int | None = None, progress: bool = False,
                 appearance: Any = None, fps: float | None = None) -> list[np.ndarray]:
    """Frame scores, one array per clip, of a prepared split (:func:`statevad.workdir.open_split`), made
    with :mod:`statevad.scoring`'s functions and the border rule, like ``score`` makes them on a stream.

    ``clips`` limits it to those clip names; ``max_cubes`` to whole clips, in order, up to that many cubes;
    ``fps`` is the footage's frame rate (the track mean's window in seconds needs it; None: DEFAULT_FPS).
    """
    from statevad.io import fps_or_default

    chosen = choose_clips(split, clips, max_cubes)
    fused = split_cube_scores(model, split, stats, sc, chosen, progress=progress, appearance=appearance)
    window = sc.track_window(fps_or_default(fps))
    return series_from_cubes(split, fused, chosen, border_min_px, size_hw, window)


def choose_clips(split: Any, clips: Sequence[str] | None = None, max_cubes: int | None = None) -> list[int]:
    """Indices of the split's clips named in ``clips`` (all if None), whole clips up to ``max_cubes``."""
    chosen, total = [], 0
    for i, c in enumerate(split.clips):
        if clips is not None and str(c["name"]) not in clips:
            continue
        n = int(np.count_nonzero(split.clip == i))
        if max_cubes is not None and chosen and total + n > max_cubes:
            break
        chosen.append(i)
        total += n
    if clips is not None:
        missing = sorted(set(clips) - {str(split.clips[i]["name"]) for i in chosen})
        if missing:
            raise UserError(f"clips {', '.join(missing)} are not in the work directory's split "
                            f"(it has {', '.join(str(c['name']) for c in split.clips)})")
    return chosen


def split_cube_scores(model: Any, split: Any, stats: dict[str, float], sc: Any, chosen: Sequence[int], *,
                      progress: bool = False, appearance: Any = None) -> np.ndarray:
    """Fused score of every cube of the ``chosen`` clips (NaN elsewhere), by :mod:`statevad.scoring`;
    ``appearance``: the model's :class:`statevad.appearance.AppearanceModel` (for ``sc.w_appearance``)."""
    from statevad.appearance import appearance_term
    from statevad.scoring import fuse, score_cubes
    from statevad.tensors import cube_motion

    fused = np.full(len(split.clip), np.nan)
    for i in chosen:
        idx = np.flatnonzero(split.clip == i)
        if not len(idx):
            continue
        a, b = int(idx[0]), int(idx[-1]) + 1  # a clip's cubes are contiguous
        e_raw, e_flow = score_cubes(model, split.raw[a:b], split.flow[a:b], sc, progress=progress,
                                    desc=f"clip {split.clips[i]['name']}")
        speed = cube_motion(split.flow[a:b]) if sc.w_motion else None
        classes = None if getattr(split, "classes", None) is None else split.classes[a:b]
        z_app = appearance_term(appearance, classes, sc.w_appearance, "the work directory")
        fused[a:b] = fuse(e_raw, e_flow, stats, sc.w_raw, sc.w_flow, speed, sc.w_motion, z_app,
                          sc.w_appearance)
    return fused


def series_from_cubes(split: Any, fused: np.ndarray, chosen: Sequence[int], border_min_px: float,
                      size_hw: tuple[int, int] | None, track_frames: int = 0) -> list[np.ndarray]:
    """Per-clip frame scores (:func:`statevad.scoring.frame_scores`) from cube scores, the cubes that the
    border rule skips left out (no rule when ``size_hw`` is unknown); with ``track_frames`` > 1 (a window in
    frames, :meth:`statevad.config.ScoreConfig.track_window`) each cube's score is first averaged along its
    object's track (:func:`statevad.tracks.split_track_mean`), as a
    stream scores it."""
    from statevad.scoring import frame_scores
    from statevad.tracks import split_track_mean

    out = []
    for i in chosen:
        c = split.clips[i]
        idx = np.flatnonzero(split.clip == i)
        if len(idx) and size_hw is not None:
            idx = idx[border_keep(split.box[idx], size_hw, border_min_px)]
        start, n = int(c["start"]), int(c["n_frames"])
        score = split_track_mean(fused[idx], np.zeros(len(idx), np.int64), split.frame[idx],
                                 split.box[idx], track_frames)
        out.append(frame_scores(split.frame[idx] - start, score, n))
    return out


def training_record(model: Any, data: Any, stats: dict[str, float], preset: Any, n_used: int, *,
                    progress: bool = False, appearance: Any = None
                    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(model card, training score distribution) of a finished training run, for the model file.

    The distribution scores the training clips (whole clips, up to :data:`MAX_DISTRIBUTION_CUBES` cubes)
    as ``score`` would with the preset's score settings and the default border rule. The network has seen
    these cubes, so real footage of the camera scores somewhat higher: ``statevad calibrate`` on footage it
    has not seen gives the honest rate. None when the footage's frame rate or size is unknown and cannot
    be assumed (no clip header found).
    """
    from statevad.io import DEFAULT_FPS

    card = build_card(getattr(data, "manifest", None), data.clips, data.raw, data.n_frames, n_used)
    sizes = [tuple(int(v) for v in r.split("x"))[::-1] for r in card["resolution"]]
    size_hw = sizes[0] if len(sizes) == 1 else None  # several sizes: the border rule needs each clip's own
    fps = card["fps"][0] if card["fps"] else DEFAULT_FPS
    series = split_series(model, data, stats, preset.score, BORDER_MIN_PX, size_hw,
                          max_cubes=MAX_DISTRIBUTION_CUBES, progress=False, appearance=appearance, fps=fps)
    footage = f"{len(series)} training clip(s)" + ("" if card["fps"] else f", fps unknown: {fps:g} assumed")
    dist = score_distribution(series, fps, score_settings(preset.score, BORDER_MIN_PX if size_hw else 0.0),
                              source="training", footage=footage)
    return card, dist
