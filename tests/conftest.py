"""Shared fixtures: the synthetic scene (fast suite) and the optional ../shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

# Before anything imports cv2: keep FFmpeg's own log lines out of stderr, as statevad.io does for the CLI.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import pytest  # noqa: E402

from statevad.synthetic import make_scene  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(tmp_path_factory.mktemp("synthetic") / "scene")


@pytest.fixture(scope="session")
def synthetic_video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_scene(tmp_path_factory.mktemp("synthetic_video") / "scene", video=True)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent ({SHARED}): reference data tests need the project's shared folder")
    return SHARED


@pytest.fixture(scope="session")
def ped2_root(shared_dir: Path) -> Path:
    root = shared_dir / "data" / "ped2"
    if not (root / "video").is_dir():
        pytest.skip(f"UCSD Ped2 is absent from {root}")
    return root
