"""`statevad demo` end to end on the synthetic scene (the bundled Ped2 sample takes minutes, not seconds)."""

import json

import cv2
import numpy as np
import pytest

from statevad import demo
from statevad.events import label_intervals


def test_bundled_sample_is_complete():
    root = demo.sample_root()
    assert demo._has_sample(root)
    assert len(list((root / "train").glob("*.mp4"))) == 4 and (root / "test" / "02.mp4").is_file()
    assert "Mahadevan" in (root / "README.md").read_text()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 5_000_000
    cap = cv2.VideoCapture(str(root / "test" / "02.mp4"))
    ok, f = cap.read()
    assert ok and f.shape == (240, 360, 3)


@pytest.mark.slow
def test_demo_synthetic_end_to_end(tmp_path, capsys):
    small = demo.DemoSettings(epochs=2, max_cubes=None, batch_size=32, box_source="motion")
    res = demo.run_demo(tmp_path / "d", demo.DemoOptions(synthetic=True, device="cpu", progress=False,
                                                         settings=small))
    out = capsys.readouterr().out
    assert "AUROC" in out and "report.html" in out
    rep = tmp_path / "d" / "report"
    for name in ("scores.csv", "objects.jsonl", "events.json", "annotated.mp4", "score_curve.png",
                 "report.html"):
        assert (rep / name).is_file(), name
    assert res.auroc is not None and res.auroc >= 0.8, res.auroc
    # every labelled anomaly overlaps a detected event
    _spec, labels, _name = demo.test_clip(tmp_path / "d" / "synthetic")
    found = json.loads((rep / "events.json").read_text())["events"]
    for a, b in label_intervals(labels):
        assert any(e["start"] <= b and e["end"] >= a for e in found), (a, b, found)
    summary = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert summary["sample"] == "synthetic scene" and np.isfinite(summary["minutes"])


def test_real_demo_prepares_whole_frame_boxes(tmp_path, monkeypatch):
    """The bundled Ped2 sample takes the ped2 preset with the whole-frame boxes (the generic preset's), not
    the detector grid: five detector calls a frame would make the README's first command 1.6x as long."""
    import statevad.api as api
    from statevad.config import get_preset
    from statevad.settings import resolve

    class Stop(Exception):
        pass

    seen = {}

    def fake_prepare(root, work, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(api, "prepare", fake_prepare)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path / "d", demo.DemoOptions(progress=False))
    assert seen["preset"] == "ped2"
    box = resolve(get_preset("ped2"), "prepare", sets=seen["sets"]).box
    assert box == get_preset("generic").box and box.detector_grid == 1
    assert get_preset("ped2").box.detector_grid == 2  # the benchmark preset keeps its grid


def test_real_demo_trains_without_the_moving_average(tmp_path, monkeypatch):
    """The ped2 preset averages the weights over the last epoch of a converged run (docs/ANALYSIS.md 19); the
    demo's two short epochs are not one, so it trains the last step's weights (docs/ANALYSIS.md 18)."""
    import statevad.api as api
    from statevad.config import get_preset
    from statevad.settings import resolve

    class Stop(Exception):
        pass

    seen = {}

    def fake_train(work, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(api, "prepare", lambda root, work, **kw: None)
    monkeypatch.setattr(api, "train", fake_train)
    with pytest.raises(Stop):
        demo.run_demo(tmp_path / "d", demo.DemoOptions(progress=False))
    assert get_preset("ped2").train.ema_epochs == 1.0
    assert resolve(get_preset("ped2"), "train", sets=seen["sets"]).train.ema_epochs == 0.0
