"""statevad — STATE video anomaly detection, re-implemented for modern CPUs and GPUs.

The Python API (see :mod:`statevad.api` and the README): :func:`prepare`, :func:`train`,
:func:`evaluate`, :func:`score`, :func:`load_model`. Each imports its stage on first call, so that
``import statevad`` (and ``statevad --help``) stays fast.
"""

import os as _os

# FFmpeg (inside OpenCV) prints its own lines for broken files ("moov atom not found"), which would break the
# one-line error rule; OpenCV reads this only when cv2 is first imported, so it must be set before any stage.
# -8 = AV_LOG_QUIET; set OPENCV_FFMPEG_LOGLEVEL yourself to see FFmpeg's messages again.
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"

from statevad.api import evaluate, load_model, prepare, score, train  # noqa: E402

__all__ = ["evaluate", "load_model", "prepare", "score", "train"]
