"""`statevad serve` end to end: two looped sample videos and an MJPEG stream on 127.0.0.1, the dashboard
driven in a real headless browser (Debian's chromium through Playwright), a restart; screenshots saved."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
from helpers import tiny_model
from serve_fixtures import CHROMIUM, Served, free_port, serve_mjpeg, stop_mjpeg

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is absent: apt-get install chromium (Playwright must not download a browser)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


def _config(tmp: Path, videos: list[Path], stream: str, model: Path, port: int) -> Path:
    common = (f'model = "{model}"\nboxes = "motion"\nperturb = false\nthreshold = 0.0\nqueue = 4\n'
              'clip_s = 2.0\n')
    cams = [f'[[camera]]\nname = "video{i}"\nsource = "{v}"\nloop = true\n{common}' for i, v in
            enumerate(videos, 1)]
    cams.append(f'[[camera]]\nname = "mjpeg"\nsource = "{stream}"\nfps = 8.0\n{common}')
    cfg = tmp / "cameras.toml"
    cfg.write_text(f'[serve]\nport = {port}\ndata = "{tmp / "data"}"\n\n' + "\n".join(cams))
    return cfg


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_serve_dashboard_end_to_end(tmp_path, synthetic_video_root, chromium_browser):
    # the session's browser (tests/browser.py): a second sync_playwright() in one process is refused
    from statevad.io import read_frames

    model = tiny_model(tmp_path / "tiny.pt")
    videos = sorted((synthetic_video_root / "test").iterdir())[:2]
    mjpeg = serve_mjpeg(list(read_frames(sorted((synthetic_video_root / "train").iterdir())[0])), fps=8)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    port = free_port()
    cfg = _config(tmp_path, videos, f"http://127.0.0.1:{mjpeg.server_address[1]}/cam.mjpg", model, port)
    served = Served(cfg, port, tmp_path / "serve.log")
    try:
        served.wait_ready()
        # the page forbids eval (CSP); the test's own probes need it
        page = chromium_browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
        page.goto(served.url + "/")
        page.wait_for_function("document.querySelectorAll('.tile').length === 3", timeout=30_000)
        # live scores update: each camera's newest scored frame moves on, through the SSE stream
        for cam in ("video1", "video2", "mjpeg"):
            sel = f".tile[data-camera='{cam}']"
            page.wait_for_function(f"Number(document.querySelector(\"{sel}\").dataset.frames) > 0",
                                   timeout=90_000)
            first = int(page.get_attribute(sel, "data-frames"))
            page.wait_for_function(
                f"Number(document.querySelector(\"{sel}\").dataset.frames) > {first}", timeout=60_000)
        page.wait_for_function("document.querySelector('.tile img.live').naturalWidth > 0",
                               timeout=30_000)
        # an event appears, with its thumbnail
        page.wait_for_function("[...document.querySelectorAll('#events tr.event img.thumb')]"
                               ".some(i => i.complete && i.naturalWidth > 0)", timeout=120_000)
        page.screenshot(path=str(shots / "dashboard.png"), full_page=True)
        event_id = int(page.locator("#events tr.event").first.get_attribute("data-id"))
        row = page.locator(f"#events tr.event[data-id='{event_id}']")  # the list grows while we look
        # its clip plays in the browser, its crops load
        row.locator("img.thumb").click()
        page.wait_for_function("(() => { const v = document.getElementById('clip');"
                               " return v.readyState >= 2 && v.duration > 0 && !v.error; })()",
                               timeout=30_000)
        page.wait_for_function("[...document.querySelectorAll('#crops img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)
        page.screenshot(path=str(shots / "event.png"), full_page=True)
        # acknowledge it
        row.locator("button.ack").click()
        page.wait_for_selector(f"#events tr.event.acked[data-id='{event_id}']", timeout=15_000)
        ev = _get(f"{served.url}/api/events/{event_id}")
        assert ev["acked"] and ev["acked_by"] == "operator" and ev["peak_frame"] >= ev["start_frame"]
        # restart: SIGTERM flushes and exits 0; the new process finds the event, still acknowledged
        assert served.stop() == 0, served.log.read_text()
        served = Served(cfg, port, tmp_path / "serve.log")
        served.wait_ready()
        page.goto(served.url + "/")
        page.wait_for_selector(f"#events tr.event.acked[data-id='{event_id}'] img.thumb", timeout=30_000)
        page.screenshot(path=str(shots / "after_restart.png"), full_page=True)
        page.close()
        again = _get(f"{served.url}/api/events/{event_id}")
        assert again == ev
    finally:
        code = served.stop()
        stop_mjpeg(mjpeg)
        keep = os.environ.get("STATEVAD_SCREENSHOTS")  # a folder to keep the screenshots in (CI artefacts)
        if keep:
            shutil.copytree(shots, keep, dirs_exist_ok=True)
    assert code == 0
    log = served.log.read_text()
    assert "Traceback" not in log, log
    assert {p.name for p in shots.iterdir()} == {"dashboard.png", "event.png", "after_restart.png"}
