"""statevad — STATE video anomaly detection, re-implemented for modern CPUs and GPUs."""

import os as _os

# FFmpeg (inside OpenCV) prints its own lines for broken files ("moov atom not found"), which would break the
# one-line error rule; OpenCV reads this only when cv2 is first imported, so it must be set before any stage.
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
