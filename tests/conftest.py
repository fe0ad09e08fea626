"""Shared fixtures: the synthetic scene (fast suite), the optional ../shared reference data and a headless
browser (``chromium_browser``, ``chromium_page``: tests/browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from browser import chromium_browser, chromium_page  # noqa: F401 - fixtures for every test module

from statevad.synthetic import make_scene

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """In-process training on one thread: two threads on this shared 2-core machine oversubscribe, and a
    fixed thread count is what makes CPU training bit-reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
