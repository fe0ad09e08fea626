"""Import / export of the original checkpoint format (spec 6.4, 12) and the import-original command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from statevad.checkpoint import MODEL_FORMAT, load_checkpoint, load_original_checkpoint, save_model_only
from statevad.cli import main
from statevad.config import ModelConfig
from statevad.errors import UserError
from statevad.model import STATE, export_original, import_original, infer_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from literal_state import ConvTransformer_recon_correct  # noqa: E402

TINY = ModelConfig(widths=(8, 16, 32), n_layers=2, n_heads=2)


def _same(a: STATE, b: STATE) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_round_trip_unchanged() -> None:
    model = STATE(ModelConfig(), identical_init=False)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.num_batches_tracked.fill_(17)
    back = import_original(export_original(model))
    _same(model, back)
    assert back.cfg == model.cfg


def test_import_accepts_module_prefix_and_list_nesting() -> None:
    oracle = ConvTransformer_recon_correct(7, TINY.widths, TINY.n_layers, TINY.n_heads)
    sd = {"module." + k: v for k, v in oracle.state_dict().items()}
    a = import_original(sd)
    b = import_original([[[sd]]])
    _same(a, b)
    assert a.cfg == TINY


def test_infer_config_from_keys() -> None:
    oracle = ConvTransformer_recon_correct(5, (8, 16, 32), 3, 4, "sine")
    cfg = infer_config(oracle.state_dict(), frames=5)
    assert cfg == ModelConfig(frames=5, widths=(8, 16, 32), n_layers=3, n_heads=4, pos="sine")


def test_import_rejects_missing_misshaped_unexpected() -> None:
    sd = export_original(STATE(TINY))
    missing = dict(sd)
    del missing["encoder.encoder.1.GN1.bias"]
    with pytest.raises(UserError, match=r"missing 1 key.*GN1\.bias"):
        import_original(missing)
    bad = dict(sd)
    bad["prediction.out.conv.weight"] = torch.zeros(4, 8, 1, 1)
    with pytest.raises(UserError, match=r"mis-shaped.*prediction\.out\.conv\.weight"):
        import_original(bad)
    extra = dict(sd)
    extra["encoder.encoder.0.attention_heads.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError, match="unexpected"):
        import_original(extra)
    with pytest.raises(UserError, match="not a checkpoint"):
        import_original({"foo": torch.zeros(1)})
    with pytest.raises(UserError, match="list of 2"):
        import_original([sd, sd])


def test_cli_import_original(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    oracle = ConvTransformer_recon_correct(7, TINY.widths, TINY.n_layers, TINY.n_heads)
    ckpt = tmp_path / "orig.npy"  # the original saves with torch.save under a .npy name
    torch.save([[[{"module." + k: v for k, v in oracle.state_dict().items()}]]], ckpt)
    out = tmp_path / "model.pt"
    assert main(["import-original", str(ckpt), "--out", str(out)]) == 0
    obj = torch.load(out, weights_only=True)
    assert obj["format"] == MODEL_FORMAT and obj["model_config"]["n_layers"] == 2
    _same(load_checkpoint(out)[0], load_original_checkpoint(ckpt))
    assert main(["import-original", str(tmp_path / "nope.pt"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_save_model_only_is_weights_only_loadable(tmp_path: Path) -> None:
    model = STATE(TINY)
    save_model_only(tmp_path / "m.pt", model)
    _same(model, load_checkpoint(tmp_path / "m.pt")[0])
    assert not list(tmp_path.glob(".*tmp*"))


def test_model_files_are_byte_reproducible(tmp_path: Path) -> None:
    """Equal weights give equal files (torch.save to a path would name the zip folder after the temp file)."""
    model = STATE(TINY)
    save_model_only(tmp_path / "a.pt", model)
    save_model_only(tmp_path / "b.pt", model)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
