"""``statevad score``: streaming scoring of a video, frame folder or live source.

* :mod:`~statevad.stream.engine` — the frame-by-frame engine (window logic, batching, the overlapped network
  pass, every-k-th-frame scoring of tracked objects; no files, no model);
* :mod:`~statevad.stream.tracking` — IoU tracking of each frame's boxes;
* :mod:`~statevad.stream.live` — the live-source policy (a reader thread; explicit, even, recorded drops);
* :mod:`~statevad.stream.stages` — the box / flow / network callables built from a model file;
* :mod:`~statevad.stream.outputs` — the output folder (CSV, JSONL, annotated video, events, report);
* :mod:`~statevad.stream.driver` — :func:`score`, the command's driver, and :func:`build_scorer` (a model
  file made ready to score; ``statevad serve`` builds its cameras with it).
"""

from statevad.stream.driver import ScoreOptions, Scorer, ScoreResult, build_scorer, format_summary, score
from statevad.stream.engine import FrameResult, StreamScorer

__all__ = ["FrameResult", "ScoreOptions", "ScoreResult", "Scorer", "StreamScorer", "build_scorer",
           "format_summary", "score"]
