"""The fast STATE network against the literal oracle (benchmarks/literal_state.py): outputs and the input
gradient used for perturbed scoring must agree to 1e-5 in fp32 on the same weights."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from statevad.config import MODEL_SIZES, ModelConfig
from statevad.errors import UserError
from statevad.model import (
    STATE,
    BatchNorm2d,
    count_parameters,
    export_original,
    import_original,
    inference_copy,
    upsample_conv,
)
from statevad.model.kernels import ComposedTerms
from statevad.tensors import autocast_context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from literal_state import ConvTransformer_recon_correct  # noqa: E402

KEYS = Path(__file__).resolve().parents[2] / "shared" / "spec" / "original_state_dict_keys_nl3.txt"


def _oracle(cfg: ModelConfig, seed: int = 0) -> ConvTransformer_recon_correct:
    torch.manual_seed(seed)
    net = ConvTransformer_recon_correct(cfg.frames, cfg.widths, cfg.n_layers, cfg.n_heads, cfg.pos)
    _randomise(net)
    return net


@torch.no_grad()
def _randomise(net: torch.nn.Module) -> None:
    """Break the identical-heads init and give BN non-trivial running stats, so a mix-up would show."""
    for name, p in net.named_parameters():
        p.add_(torch.randn_like(p) * 0.05)
        if name.endswith("bias"):
            p.add_(torch.randn_like(p) * 0.05)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def _perturb_grad(forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """dL/dx of spec 7.1: MSE(x_hat, x) with x NOT detached + MSE(y_hat, y)."""
    x = x.clone().requires_grad_(True)
    raw, flow = forward(x)
    loss = F.mse_loss(raw, x) + F.mse_loss(flow, y)
    (g,) = torch.autograd.grad(loss, x)
    return g


def _pair(cfg: ModelConfig, seed: int = 0) -> tuple[ConvTransformer_recon_correct, STATE]:
    oracle = _oracle(cfg, seed)
    fast = import_original(oracle.state_dict(), cfg)
    return oracle, fast


def _oracle_fn(oracle: ConvTransformer_recon_correct):
    def fwd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        of, raw, _, _ = oracle(x.reshape(b, t * 3, *x.shape[3:]))
        return raw, of

    return fwd


@pytest.mark.skipif(not KEYS.is_file(), reason=f"../shared is absent: original key list not found at {KEYS}")
def test_oracle_keys_equal_original_key_file() -> None:
    keys = KEYS.read_text().split()
    assert len(keys) == 442
    assert list(_oracle(ModelConfig()).state_dict()) == keys
    assert list(export_original(STATE(ModelConfig()))) == keys


def test_parameter_count_and_shapes() -> None:
    model = STATE(ModelConfig())
    assert count_parameters(model) == 2_568_061
    oracle = ConvTransformer_recon_correct()
    assert sum(p.numel() for p in oracle.parameters()) == 3_312_261
    raw, flow = model(torch.rand(2, 7, 3, 32, 32))
    assert raw.shape == (2, 7, 3, 32, 32) and flow.shape == (2, 7, 2, 32, 32)


CONFIGS = [
    ModelConfig(),
    ModelConfig(frames=5, widths=(8, 16, 32), n_layers=2, n_heads=2, pos="sine"),
    ModelConfig(frames=9, widths=(8, 16, 32), n_layers=1, n_heads=4, pos="learned"),
]
IDS = ["paper", "tiny-sine", "tiny-9frames"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_fast_equals_literal_outputs(cfg: ModelConfig) -> None:
    oracle, fast = _pair(cfg)
    torch.manual_seed(1)
    x = torch.rand(1 if cfg == ModelConfig() else 2, cfg.frames, 3, 32, 32)  # B=1 keeps the paper size fast
    for mode in ("eval", "train"):  # train: batch statistics in BN, and the running stats it updates
        oracle.train(mode == "train")
        fast.train(mode == "train")
        with torch.no_grad():
            ro, fo = _oracle_fn(oracle)(x)
            rf, ff = fast(x)
        assert _rel(rf, ro) <= 1e-5, mode
        assert _rel(ff, fo) <= 1e-5, mode
    for (k, a), b in zip(export_original(fast).items(), oracle.state_dict().values(), strict=True):
        if "running" in k:
            assert _rel(a.float(), b.float()) <= 1e-5, k


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=IDS[:2])
def test_fast_equals_literal_input_gradient(cfg: ModelConfig) -> None:
    """The perturbation gradient of spec 7.1. In float64 the two must agree to rounding (the rewrite is
    exact). In float32 the gradient of a ReLU/LeakyReLU network jumps where a pre-activation is within
    rounding of zero: on about half of random inputs the literal network itself then differs from its own
    float64 result by 1e-5..2e-3 (measured), so the float32 check uses a fixed input with no such kink."""
    oracle, fast = _pair(cfg)
    oracle.eval()
    fast.eval()
    torch.manual_seed(102)
    x = torch.rand(2, cfg.frames, 3, 32, 32)
    y = torch.randn(2, cfg.frames, 2, 32, 32)
    g_lit = _perturb_grad(_oracle_fn(oracle), x, y)
    g_fast = _perturb_grad(fast, x, y)
    if cfg == ModelConfig():
        assert _rel(g_fast, g_lit) <= 1e-5
        return  # float64 on the paper size is slow; the tiny config checks exactness in float64
    oracle.double()
    fast.double()
    g_lit64 = _perturb_grad(_oracle_fn(oracle), x.double(), y.double())
    g_fast64 = _perturb_grad(fast, x.double(), y.double())
    assert _rel(g_fast64, g_lit64) <= 1e-12
    # Which fixed input has no float32 kink depends on the CPU's kernels (oneDNN picks them per machine):
    # where the literal network's own float32 gradient is off its float64 one by more than 1e-5, ours must be
    # no farther from float64 than the literal's float32 gradient is.
    kink = _rel(g_lit.double(), g_lit64)
    assert _rel(g_fast, g_lit) <= 1e-5 or _rel(g_fast.double(), g_lit64) <= 2 * kink
    assert _rel(g_fast.double(), g_lit64) <= max(1e-5, 2 * kink)


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=IDS[:2])
def test_folded_inference_copy_equals_literal(cfg: ModelConfig) -> None:
    """Scoring runs a copy with BatchNorm folded into the convolutions. Its outputs must match the literal
    network in float32, and its perturbation gradient in float64, where the folding is exact to rounding (in
    float32 the folding moves rounding, so a pre-activation within 1e-7 of a ReLU kink can flip: the same
    caveat as above, measured at 1e-3 relative with 99.99 % equal signs on the paper size). The model it was
    made from keeps its BatchNorms and its mode."""
    oracle, fast = _pair(cfg)
    oracle.eval()
    fast.train()
    folded = inference_copy(fast)
    assert fast.training and any(isinstance(m, BatchNorm2d) for m in fast.modules())
    assert not folded.training and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.manual_seed(102)
    b = 1 if cfg == ModelConfig() else 2  # B=1 keeps the paper size fast in float64
    x = torch.rand(b, cfg.frames, 3, 32, 32)
    y = torch.randn(b, cfg.frames, 2, 32, 32)
    with torch.no_grad():
        ro, fo = _oracle_fn(oracle)(x)
        rf, ff = folded(x)
    assert _rel(rf, ro) <= 1e-5 and _rel(ff, fo) <= 1e-5
    oracle.double()
    folded64 = inference_copy(fast.double())
    g_lit = _perturb_grad(_oracle_fn(oracle), x.double(), y.double())
    assert _rel(_perturb_grad(folded64, x.double(), y.double()), g_lit) <= 1e-12


def test_parameter_gradients_match_literal_in_train_mode() -> None:
    cfg = ModelConfig(widths=(8, 16, 32), n_layers=2, n_heads=2)
    oracle, fast = _pair(cfg)
    x, y = torch.rand(2, 7, 3, 32, 32), torch.randn(2, 7, 2, 32, 32)
    for net, fwd in ((oracle, _oracle_fn(oracle)), (fast, fast)):
        net.train()
        raw, flow = fwd(x)
        (F.mse_loss(raw, x) + F.mse_loss(flow, y)).backward()
    grads = {k: v.grad for k, v in fast.named_parameters()}
    og = dict(oracle.named_parameters())
    pairs = [("raw.transformer.layers.1.ffn.weight", "encoder.encoder.1.feedforward.conv0.0.weight"),
             ("flow.encoder.inc.conv1.weight", "feature_embedding_of.inc.conv.conv.0.weight"),
             ("raw.transformer.pos.weight", "encoder.positionnet.positional_embedding.weight"),
             # the decoder's transposed conv and the conv after it run composed (upsample_conv)
             ("raw.decoder.up2.up.weight", "prediction.up2.up.weight"),
             ("flow.decoder.up3.up.bias", "prediction_of.up3.up.bias"),
             ("raw.decoder.up3.conv.conv1.weight", "prediction.up3.conv.conv.0.weight"),
             ("flow.decoder.up2.conv.conv1.weight", "prediction_of.up2.conv.conv.0.weight")]
    # The literal network's own float32 gradients, against its float64 ones: where a ReLU kink makes them
    # differ by more than 1e-4 on this CPU's kernels, ours must be no farther from float64 than the literal's.
    oracle64 = copy.deepcopy(oracle).double()
    oracle64.zero_grad(set_to_none=True)
    raw64, flow64 = _oracle_fn(oracle64)(x.double())
    (F.mse_loss(raw64, x.double()) + F.mse_loss(flow64, y.double())).backward()
    og64 = dict(oracle64.named_parameters())

    def close(ours: torch.Tensor, lit: torch.Tensor, lit64: torch.Tensor) -> bool:
        kink = _rel(lit.double(), lit64)
        return _rel(ours, lit) <= 1e-4 or _rel(ours.double(), lit64) <= 2 * kink

    for ours, orig in pairs:
        assert close(grads[ours], og[orig].grad, og64[orig].grad), ours
    lb = grads["raw.transformer.layers.0.logit_bias"]
    head = "encoder.encoder.0.attention_heads.{}.attentionmap.conv0.0.bias"
    ob = torch.cat([og[head.format(k)].grad for k in (0, 1)])
    ob64 = torch.cat([og64[head.format(k)].grad for k in (0, 1)])
    assert close(lb, ob, ob64)


def test_identical_init_quirk() -> None:
    model = STATE(ModelConfig(n_layers=2))
    tr = model.raw.transformer
    w = tr.layers[0].qkv.weight.view(4, -1)
    assert torch.equal(w[0], w[3])
    assert torch.equal(tr.layers[0].logit.weight, tr.layers[1].logit.weight)
    free = STATE(ModelConfig(n_layers=2), identical_init=False).raw.transformer
    assert not torch.equal(free.layers[0].qkv.weight, free.layers[1].qkv.weight)


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_sizes_run_and_are_device_agnostic(size: str) -> None:
    cfg = ModelConfig(**MODEL_SIZES[size])
    model = STATE(cfg).to("meta")
    raw, flow = model(torch.rand(2, 7, 3, 32, 32, device="meta"))
    assert raw.device.type == "meta" and flow.shape == (2, 7, 2, 32, 32)


def test_bad_configs_raise_user_error() -> None:
    with pytest.raises(UserError, match="divisible by n_heads"):
        STATE(ModelConfig(n_heads=3))
    with pytest.raises(UserError, match="frames"):
        STATE(ModelConfig(frames=11))
    with pytest.raises(UserError, match="pos"):
        STATE(ModelConfig(pos="rope"))
    STATE(ModelConfig(frames=11, pos="sine", widths=(8, 16, 32), n_heads=2))


def test_bf16_autocast_is_close() -> None:
    cfg = ModelConfig(widths=(8, 16, 32), n_layers=1, n_heads=2)
    model = STATE(cfg).eval()
    x = torch.rand(2, 7, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)[0]
        with autocast_context("cpu", True):
            low = model(x)[0]
    assert low.dtype == torch.bfloat16
    assert _rel(low.float(), ref) < 0.05
    with autocast_context("cpu", False):
        assert model(x)[0].dtype == torch.float32


@pytest.mark.parametrize("shape", [(3, 5, 4, 6, 2), (2, 4, 3, 1, 1), (1, 6, 2, 3, 7)],
                         ids=["4x6", "1x1", "3x7"])
def test_upsample_conv_is_the_composition(shape: tuple[int, int, int, int, int]) -> None:
    """One transposed conv with the composed kernel, border and bias terms = ConvTranspose2d then Conv2d, to
    float64 rounding on every input shape (the border corrections matter most on tiny maps), with or without
    biases, and with exact gradients for the input and all four weights."""
    n, cin, cout, h, w = shape
    torch.manual_seed(0)
    for bias in (True, False):
        up = torch.nn.ConvTranspose2d(cin, cin, 3, stride=2, padding=1, output_padding=1, bias=bias).double()
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1, bias=bias).double()
        x = torch.randn(n, cin, h, w, dtype=torch.float64, requires_grad=True)
        ref = conv(up(x))
        got = upsample_conv(x, up, conv)
        assert got.shape == ref.shape == (n, cout, 2 * h, 2 * w)
        assert _rel(got, ref) <= 1e-13
        params = [x, *up.parameters(), *conv.parameters()]
        g = torch.randn_like(ref)
        grads = zip(torch.autograd.grad(got, params, g), torch.autograd.grad(ref, params, g), strict=True)
        assert all(_rel(a, b) <= 1e-13 for a, b in grads)
    small = (x[:1, :2].detach().requires_grad_(True),)
    up2 = torch.nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1).double()
    conv2 = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    assert torch.autograd.gradcheck(lambda t: upsample_conv(t, up2, conv2), small)


def test_upsample_conv_under_bf16_and_other_layers() -> None:
    """Under bf16 autocast the kernel is composed in float32 and the convolution runs in bf16; layers with
    other hyper-parameters are run as they are (conv(up(x)))."""
    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
    conv = torch.nn.Conv2d(8, 4, 3, padding=1)
    x = torch.randn(2, 8, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv(up(x))
        with autocast_context("cpu", True):
            low = upsample_conv(x, up, conv)
    assert low.dtype == torch.bfloat16 and _rel(low.float(), ref) < 0.02
    other = torch.nn.Conv2d(8, 4, 5, padding=2)
    with torch.no_grad():
        assert torch.equal(upsample_conv(x, up, other), other(up(x)))


def test_upsample_conv_serves_frozen_terms_only_to_frozen_weights() -> None:
    """Frozen weights (scoring's inference copy): the composed kernel and bias are made once by ComposedTerms,
    the border terms once per map size, outside inference mode, so that they serve inference-mode forwards and
    later input-gradient passes alike. Weights that require gradients (training): never served them."""
    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1).double()
    conv = torch.nn.Conv2d(4, 3, 3, padding=1).double()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    stale = ComposedTerms(up, conv)
    with torch.no_grad():
        conv.weight.mul_(2)  # training moves the weights: terms made earlier must not be used
    xg = x.clone().requires_grad_(True)
    got = upsample_conv(xg, up, conv, stale)
    assert _rel(got, conv(up(x))) <= 1e-13
    params = [xg, *up.parameters(), *conv.parameters()]
    g = torch.randn_like(got)
    ref = conv(up(xg))
    grads = zip(torch.autograd.grad(got, params, g), torch.autograd.grad(ref, params, g), strict=True)
    assert all(_rel(a, b) <= 1e-13 for a, b in grads)  # gradients reach the weights
    for p in (*up.parameters(), *conv.parameters()):
        p.requires_grad_(False)
    with torch.inference_mode():
        frozen = ComposedTerms(up, conv)  # made under inference_mode, still ordinary tensors
        first = upsample_conv(x, up, conv, frozen)
    assert not frozen.u.is_inference() and not frozen.inner.is_inference()
    assert _rel(first, conv(up(x))) <= 1e-13
    kept = frozen.border(up, conv, 5, 6)
    assert not kept.is_inference()  # made on first use, inside inference_mode
    assert torch.equal(upsample_conv(x, up, conv, frozen), first) and frozen.border(up, conv, 5, 6) is kept
    small = x[:, :, :3, :3]
    assert _rel(upsample_conv(small, up, conv, frozen), conv(up(small))) <= 1e-13
    assert frozen.border(up, conv, 5, 6) is kept and frozen.border(up, conv, 3, 3).shape[-2:] == (6, 6)
    xg = small.clone().requires_grad_(True)  # scoring's input gradient through the frozen terms
    (gx,) = torch.autograd.grad(upsample_conv(xg, up, conv, frozen).square().sum(), xg)
    (gr,) = torch.autograd.grad(conv(up(xg)).square().sum(), xg)
    assert _rel(gx, gr) <= 1e-13


def test_inference_copy_freezes_the_decoder_only_in_the_copy() -> None:
    """inference_copy freezes every Up of the copy; the model it was made from keeps recomputing its terms
    (training), and a frozen copy cast after freezing remakes its terms from the cast weights."""
    cfg = ModelConfig(frames=3, widths=(4, 8, 8), n_layers=1, n_heads=2, pos="sine")
    torch.manual_seed(0)
    model = STATE(cfg)
    folded = inference_copy(model)
    ups = [m for m in folded.modules() if type(m).__name__ == "Up"]
    assert len(ups) == 4 and all(isinstance(m.frozen, ComposedTerms) for m in ups)
    assert all(getattr(m, "frozen", None) is None for m in model.modules())
    folded_keys = [k for k in model.state_dict() if ".bn" not in k]  # the folded BatchNorms are gone
    assert list(folded.state_dict()) == folded_keys  # and the frozen terms are not state
    x = torch.rand(2, 3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        got = folded.double()(x)
        assert all(m.frozen.u.dtype == torch.float64 for m in ups)
        for m in ups:
            m.frozen = None  # recompute the terms at every call, as in training
        ref = folded(x)
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))
