import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import T, make_work, tiny_preset

from statevad import training
from statevad.checkpoint import MODEL_FORMAT, load_checkpoint, resume_path, save_model_only
from statevad.cli import main
from statevad.config import BoxConfig, override
from statevad.errors import UserError
from statevad.evaluation import run_test
from statevad.settings import preset_for_work
from statevad.tensors import flow_error, per_cube_sse, to_flow_target, to_model_input
from statevad.training import epoch_batches, select_cubes, train
from statevad.workdir import FORMAT, open_split


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_work(tmp_path_factory.mktemp("work"))


@pytest.fixture(scope="module")
def trained(work) -> Path:
    return train(work, tiny_preset(), out=work / "model.pt", progress=False)


def test_sampler_is_seeded_complete_and_sorted():
    idx = select_cubes(100, 30, seed=1)
    assert len(idx) == 30 and np.all(np.diff(idx) > 0) and np.array_equal(idx, select_cubes(100, 30, 1))
    assert not np.array_equal(idx, select_cubes(100, 30, 2))
    assert np.array_equal(select_cubes(10, None, 0), np.arange(10))
    b = epoch_batches(idx, 8, seed=0, epoch=3)
    assert [len(x) for x in b] == [8, 8, 8, 6]  # last partial batch kept
    assert np.array_equal(np.sort(np.concatenate(b)), idx)
    assert all(np.all(np.diff(x) > 0) for x in b)
    assert all(np.array_equal(u, v) for u, v in zip(b, epoch_batches(idx, 8, seed=0, epoch=3), strict=True))
    assert not np.array_equal(np.concatenate(b), np.concatenate(epoch_batches(idx, 8, seed=0, epoch=4)))
    shares = [epoch_batches(idx, 8, seed=0, epoch=3, rank=r, world=2) for r in range(2)]
    assert np.array_equal(np.sort(np.concatenate([shares[0][0], shares[1][0]])), b[0])
    with pytest.raises(UserError):
        select_cubes(100, 1, 0)


def test_preset_from_manifest(work):
    p = preset_for_work(work)
    assert p.name == "ped2" and p.cube.length == 1
    assert preset_for_work(work, "avenue").name == "avenue"


def test_checkpoint_roundtrip_and_statistics(work, trained):
    raw = torch.load(trained, weights_only=True)  # no pickled code needed
    assert raw["format"] == MODEL_FORMAT and set(raw["stats"]) >= set(
        ["raw_mean", "raw_std", "flow_mean", "flow_std"])
    assert raw["work_manifest"]["format"] == FORMAT
    model, ck = load_checkpoint(trained)
    assert not model.training and ck.preset.model.frames == T and ck.preset.cube.length == 1
    # stats = mean / population std of unperturbed per-cube errors over the training cubes (spec 6.4: SSEs;
    # the flow branch's by the preset's flow term, statevad.tensors.flow_error)
    # Checked against float64. The 16 toy cubes' SSEs are nearly equal (std ~1e-4 of the mean), so the std
    # is compared to a tolerance set by float32 rounding of the SSEs themselves, ~1e-5 of the mean.
    tr = open_split(work, "train")
    with torch.no_grad():
        x, y = to_model_input(np.asarray(tr.raw), torch.device("cpu")), to_flow_target(
            np.asarray(tr.flow), torch.device("cpu"))
        r, f = model.double()(x.double())
        e_raw = per_cube_sse(x.double(), r).numpy()
        e_flow = flow_error(y.double(), f, ck.preset.score.flow_term).numpy()
    assert ck.preset.score.flow_term == ck.preset.train.flow_term
    assert ck.stats["raw_mean"] == pytest.approx(e_raw.mean(), rel=1e-5)
    assert ck.stats["flow_mean"] == pytest.approx(e_flow.mean(), rel=1e-5)
    assert ck.stats["raw_std"] == pytest.approx(e_raw.std(ddof=0), abs=1e-5 * e_raw.mean())
    assert ck.stats["flow_std"] == pytest.approx(e_flow.std(ddof=0), abs=1e-5 * np.abs(e_flow).mean() + 1e-6)
    speed = np.linalg.norm(np.asarray(tr.flow, np.float64), axis=-1).mean(axis=(1, 2, 3))  # motion term
    assert ck.stats["motion_mean"] == pytest.approx(speed.mean(), rel=1e-6)
    assert ck.stats["motion_std"] == pytest.approx(speed.std(ddof=0), rel=1e-4, abs=1e-6)
    assert not resume_path(trained).exists()  # the per-epoch state is removed on success


def test_tampered_or_foreign_files_are_refused(trained, tmp_path):
    data = torch.load(trained, weights_only=True)
    key = next(k for k, v in data["state_dict"].items() if v.is_floating_point())
    data["state_dict"][key] = data["state_dict"][key] + 1e-3
    torch.save(data, tmp_path / "tampered.pt")
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(tmp_path / "tampered.pt")
    del data["sha256"]
    torch.save(data, tmp_path / "nosha.pt")
    with pytest.raises(UserError, match="checksum"):
        load_checkpoint(tmp_path / "nosha.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    with pytest.raises(UserError, match="not a statevad model"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "other", "state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="format"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_matches_uninterrupted_run(work, trained, tmp_path, monkeypatch):
    out = tmp_path / "resumed.pt"
    real_step, calls = training.train_step, {"n": 0}

    def crash_in_second_epoch(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # 2 steps per epoch (16 cubes / 8): dies in epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    monkeypatch.setattr(training, "train_step", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(work, tiny_preset(), out=out, progress=False)
    assert resume_path(out).exists() and not out.exists()
    monkeypatch.setattr(training, "train_step", real_step)
    with pytest.raises(UserError, match="other training settings"):
        train(work, tiny_preset(lr=1e-2), out=out, resume=True, progress=False)
    train(work, tiny_preset(), out=out, resume=True, progress=False)
    a, b = torch.load(trained, weights_only=True), torch.load(out, weights_only=True)
    assert a["sha256"] == b["sha256"]
    assert a["stats"] == b["stats"]


def test_cosine_schedule_values_and_resume(work, tmp_path, monkeypatch):
    cfg = override(tiny_preset().train, lr=1e-3, lr_schedule="cosine")
    assert training.scheduled_lr(cfg, 0, 10) == pytest.approx(1e-3)
    assert training.scheduled_lr(cfg, 5, 10) == pytest.approx(5e-4)
    assert training.scheduled_lr(cfg, 9, 10) == pytest.approx(1e-3 * 0.5 * (1 + np.cos(0.9 * np.pi)))
    assert training.scheduled_lr(override(cfg, lr_schedule="constant"), 9, 10) == 1e-3
    with pytest.raises(UserError, match="lr_schedule"):
        training.make_optimizer(torch.nn.Linear(1, 1), override(cfg, lr_schedule="step"))
    # the learning rate each step sees, and a run killed in epoch 2 resumes onto the same curve and weights
    seen: list[float] = []
    real_step = training.train_step

    def record(model, optimizer, *args, **kw):
        seen.append(optimizer.param_groups[0]["lr"])
        return real_step(model, optimizer, *args, **kw)

    monkeypatch.setattr(training, "train_step", record)
    full = train(work, tiny_preset(lr_schedule="cosine"), out=tmp_path / "full.pt", progress=False)
    assert seen == pytest.approx([3e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)])

    def crash_in_second_epoch(model, optimizer, *args, **kw):
        if len(seen) == 6:  # 4 steps of the full run + 2 of this one: dies on the first step of epoch 2
            raise KeyboardInterrupt
        return record(model, optimizer, *args, **kw)

    monkeypatch.setattr(training, "train_step", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(work, tiny_preset(lr_schedule="cosine"), out=tmp_path / "resumed.pt", progress=False)
    monkeypatch.setattr(training, "train_step", record)
    with pytest.raises(UserError, match="other training settings"):  # a cosine curve is tied to its epochs
        train(work, tiny_preset(epochs=3, lr_schedule="cosine"), out=tmp_path / "resumed.pt", resume=True,
              progress=False)
    train(work, tiny_preset(lr_schedule="cosine"), out=tmp_path / "resumed.pt", resume=True, progress=False)
    assert seen[4:] == pytest.approx(seen[:4])
    a, b = torch.load(full, weights_only=True), torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a["sha256"] == b["sha256"]


def test_train_cli_set_and_lr_schedule(work, tmp_path, capsys):
    out = tmp_path / "m.pt"
    base = ["train", "--work", str(work), "--epochs", "1", "--model-size", "tiny", "--batch-size", "8",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert main([*base, "--set", "model.bogus=1"]) == 2
    assert "model has no field 'bogus'" in capsys.readouterr().err and not out.exists()
    sets = ["--set", "model.n_layers=2", "--set", "train.adam_eps=1e-8"]
    assert main([*base, *sets, "--lr-schedule", "cosine"]) == 0
    _, ck = load_checkpoint(out)
    assert ck.preset.model.n_layers == 2 and ck.preset.train.adam_eps == 1e-8
    assert ck.preset.train.lr_schedule == "cosine"


def test_model_only_file_needs_stats_for_test(work, trained, tmp_path):
    model, _ = load_checkpoint(trained)
    save_model_only(tmp_path / "weights.pt", model)
    m2, ck = load_checkpoint(tmp_path / "weights.pt")
    assert ck.stats is None
    with pytest.raises(UserError, match="--stats"):
        run_test(work, tmp_path / "weights.pt", out=tmp_path / "r", progress=False)
    res = run_test(work, tmp_path / "weights.pt", out=tmp_path / "r", stats="train", progress=False)
    ref = run_test(work, trained, out=tmp_path / "r2", progress=False)
    assert res["micro_auroc"] == pytest.approx(ref["micro_auroc"])
    assert ref["micro_auroc"] >= 0.9  # fast bright blobs outrank slow dim ones after brief training


def test_cli_train_and_test(work, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    rc = main(["train", "--work", str(work), "--model-size", "tiny", "--epochs", "1", "--batch-size", "8",
               "--max-cubes", "12", "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0 and out.exists()
    ck = torch.load(out, weights_only=True)
    assert ck["preset"]["train"]["max_cubes"] == 12 and ck["stats"]["n_cubes"] == 12
    capsys.readouterr()
    res_dir = tmp_path / "res"
    rc = main(["test", "--work", str(work), "--model", str(out), "--epsilon", "0", "--w-flow", "0",
               "--out", str(res_dir), "--quiet"])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"micro_auroc", "macro_auroc", "eer", "per_clip_auroc", "chosen_on_test_labels",
                         "parts_micro_auroc"}
    assert {"state_only", "box_speed_no_learning"} <= set(last["parts_micro_auroc"])
    for name in ("scores.csv", "objects.csv", "roc.png", "metrics.json"):
        assert (res_dir / name).stat().st_size > 0
    metrics = json.loads((res_dir / "metrics.json").read_text())
    assert metrics["score"]["epsilon"] == 0 and metrics["score"]["w_flow"] == 0
    assert metrics["chosen_on_test_labels"] == last["chosen_on_test_labels"]
    assert "score.epsilon" not in last["chosen_on_test_labels"]  # set by the user, not the preset's 0.002
    lines = (res_dir / "scores.csv").read_text().splitlines()
    assert lines[0] == "clip,frame,score,label" and len(lines) == 1 + 8
    assert (res_dir / "objects.csv").read_text().splitlines()[0].startswith("clip,frame,x1,y1,x2,y2,e_raw")
    # a subset of test clips: frames re-indexed, only that clip evaluated
    sub = tmp_path / "sub"
    assert main(["test", "--work", str(work), "--model", str(out), "--epsilon", "0", "--clips", "01",
                 "--out", str(sub), "--quiet"]) == 0
    assert list(json.loads((sub / "metrics.json").read_text())["per_clip_auroc"]) == ["01"]
    assert len((sub / "scores.csv").read_text().splitlines()) == 1 + 4
    assert main(["test", "--work", str(work), "--model", str(out), "--clips", "nope", "--quiet"]) == 2
    # default model path missing -> one clear error, exit 2
    assert main(["test", "--work", str(tmp_path / "nowork"), "--quiet"]) == 2
    assert main(["train", "--work", str(tmp_path / "nowork"), "--quiet"]) == 2


def test_moving_average_belongs_to_the_label_free_presets():
    """One epoch's average in the ped2 and generic presets (docs/ANALYSIS.md 19's rule); the reproduction
    presets train the last step's weights, as published."""
    from statevad.config import get_preset

    for name in ("ped2", "generic"):
        assert get_preset(name).train.ema_epochs == 1.0, name
    for name in ("avenue", "shanghaitech"):
        assert get_preset(name).train.ema_epochs == 0.0, name


def test_the_generic_preset_trains_the_measured_recipe():
    """A user's footage gets the recipe measured without labels (the tiny network, nine epochs;
    docs/ANALYSIS.md 19, 22), the dataset presets the published one (the paper network, 20 epochs), each one
    flag away."""
    from statevad.config import MODEL_SIZES, get_preset, with_model_size

    generic = get_preset("generic")
    assert with_model_size(generic.model, "tiny") == generic.model and generic.train.epochs == 9
    for name in ("ped2", "avenue", "shanghaitech"):
        p = get_preset(name)
        assert p.model.widths == MODEL_SIZES["paper"]["widths"] and p.train.epochs == 20, name
    assert with_model_size(generic.model, "paper") == get_preset("ped2").model


def test_weight_average_is_the_moving_average_of_the_steps_and_resumes(work, tmp_path, monkeypatch):
    # the horizon is set in epochs: 1 / (1 - decay) steps
    assert training.ema_decay(1.0, 200) == pytest.approx(0.995)
    assert training.ema_decay(0.5, 200) == pytest.approx(0.99)
    assert training.ema_decay(0.1, 2) == 0.0  # under one step: the last step's weights
    with pytest.raises(UserError, match="ema_epochs"):
        tiny_preset(ema_epochs=-1.0).train.validate()
    # what the model file holds = the moving average, by hand, of the weights after every step (2 steps an
    # epoch, a horizon of 1 epoch: decay 0.5), BatchNorm's running statistics included
    after: list[dict[str, torch.Tensor]] = []
    real_step = training.train_step

    def record(model, *args, **kw):
        loss = real_step(model, *args, **kw)
        after.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return loss

    monkeypatch.setattr(training, "train_step", record)
    full = train(work, tiny_preset(ema_epochs=1.0), out=tmp_path / "full.pt", progress=False)
    assert len(after) == 4
    expected = dict(after[0])
    for state in after[1:]:
        expected = {k: (0.5 * v + 0.5 * state[k]) if v.is_floating_point() else v
                    for k, v in expected.items()}
    stored = torch.load(full, weights_only=True)["state_dict"]
    floats = [k for k, v in expected.items() if v.is_floating_point()]
    assert any("running_var" in k for k in floats)
    for k in floats:
        torch.testing.assert_close(stored[k], expected[k], rtol=1e-6, atol=1e-7, msg=k)
    assert not torch.equal(stored[floats[0]], after[-1][floats[0]])  # not the last step's weights
    assert load_checkpoint(full)[1].preset.train.ema_epochs == 1.0

    # killed in epoch 2, resumed: the average continues from the state it had, so the file is the same
    def crash_in_second_epoch(model, *args, **kw):
        if len(after) == 6:
            raise KeyboardInterrupt
        return record(model, *args, **kw)

    monkeypatch.setattr(training, "train_step", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(work, tiny_preset(ema_epochs=1.0), out=tmp_path / "resumed.pt", progress=False)
    monkeypatch.setattr(training, "train_step", real_step)
    with pytest.raises(UserError, match="other training settings"):  # another horizon is another run
        train(work, tiny_preset(ema_epochs=2.0), out=tmp_path / "resumed.pt", resume=True, progress=False)
    train(work, tiny_preset(ema_epochs=1.0), out=tmp_path / "resumed.pt", resume=True, progress=False)
    a, b = torch.load(full, weights_only=True), torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a["sha256"] == b["sha256"]
    assert a["stats"] == b["stats"]


def test_model_records_the_stages_its_cubes_were_prepared_with(work, trained):
    # the caller's preset says ped2's boxes; the work directory was prepared with others (its manifest's):
    # the model file says what the cubes were made with, as `statevad score` will build them
    manifest = json.loads((work / "manifest.json").read_text())
    _, ckpt = load_checkpoint(trained)
    assert tiny_preset().box != ckpt.preset.box == BoxConfig()  # the fake manifest records {}: the defaults
    for stage in ("box", "flow", "cube"):
        recorded = manifest["options"][stage]
        stored = getattr(ckpt.preset, stage)
        assert all(getattr(stored, k) == v for k, v in recorded.items()), stage
