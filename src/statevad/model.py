"""The STATE network (spec section 5), written for speed, plus import/export of the original weights.

Two branches read the same raw cube: ``raw`` reconstructs it, ``flow`` predicts its optical flow. Each is a
per-frame CNN encoder, a convolutional-attention transformer over time, and a per-frame CNN decoder.

The arithmetic is the published network's (checked against ``benchmarks/literal_state.py`` to 1e-5), but
it is laid out differently so that it runs several times faster:

* the heads' Q and shared K/V convolutions are one grouped convolution (``qkv``);
* the pair-logit convolution over ``[Q_i ; K_j]`` is linear before its LeakyReLU, so it splits into a
  convolution of ``Q_i`` plus a convolution of ``K_j`` (one grouped convolution for all heads), and the
  ``T x T`` logits are a broadcast add: T convolutions instead of T^2, and no ``(B, T, T, 2d, H, W)`` tensor;
* the softmax-weighted sum over key frames is one batched matmul;
* each decoder stage's ConvTranspose2d and the 3x3 conv after it (linear, nothing in between) run as one
  transposed conv with their composed 5x5 kernel (:func:`upsample_conv`): 6.25 instead of 13.5
  multiply-adds per output pixel and (input, output) channel pair, and one weight gradient instead of two.

The original's unused modules (the template encoder layer and the per-head feed-forward convs) are not
built; :func:`import_original` drops their weights and :func:`export_original` writes fresh copies so that an
exported dict has exactly the original's keys. See ``docs/DEVIATIONS.md`` ("model/speed").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from statevad.config import ModelConfig
from statevad.errors import UserError, atomic_write_bytes

MODEL_FORMAT = "statevad-model/1"
PE_SLOTS = 10  # the original's nn.Embedding(10, d): T <= 10 with learned positions
GN_GROUPS = 4  # GroupNorm(4, D) after every encoder layer, independent of the number of heads
LEAK = 0.2


# ------------------------------------------------------------------------------------------ blocks
class _RowBatchNormReLU(torch.autograd.Function):
    """ReLU(training-mode batch norm) of an (M, C) float32 matrix, the (N*H*W, C) view of a channels_last
    tensor.

    PyTorch's CPU channels_last batch-norm kernel is about 20x less precise in float32 (1.4e-6 vs 6e-8
    relative), which alone would break the 1e-5 agreement with the literal network; its NCHW kernel is precise
    but needs two layout copies each way, and an in-place ReLU on the permuted result makes autograd copy
    again. Here the statistics are two-pass column means (mean, then mean of squared deviations), the ReLU is
    fused, and the backward is the closed form dx = w * rstd * (g' - mean(g') - xhat * mean(g' * xhat)) with
    g' the gradient masked by the ReLU: about 1e-7 relative to float64, like the NCHW kernel.
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor, weight: Tensor, bias: Tensor,
                eps: float) -> tuple[Tensor, Tensor, Tensor]:
        mean = rows.mean(0)
        xhat = rows - mean
        var = xhat.square().mean(0)
        rstd = torch.rsqrt(var + eps)
        xhat.mul_(rstd)
        out = torch.addcmul(bias, xhat, weight).clamp_min_(0)
        ctx.save_for_backward(xhat, out, weight, rstd)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _gm: Tensor, _gv: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        xhat, out, weight, rstd = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad, out, 0)  # grad where out > 0: ReLU's own kernel, one pass
        m = g.shape[0]
        sum_g = g.sum(0)
        sum_gx = (g * xhat).sum(0)
        scale = weight * rstd  # dx = scale * g - scale * mean(g) - xhat * scale * mean(g * xhat): two passes
        dx = torch.addcmul(scale * sum_g / -m, g, scale).addcmul_(xhat, scale * sum_gx / -m)
        return dx, sum_gx, sum_g, None


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d with a precise, fast float32 training path for channels_last CPU tensors (:meth:`relu`)."""

    def relu(self, x: Tensor) -> Tensor:
        """ReLU(self(x)). In float32 CPU training on a channels_last tensor it runs :class:`_RowBatchNormReLU`
        (same numbers as the NCHW kernel, no layout copies); eval mode (running statistics, an affine map) and
        bf16 activations (under autocast, where bf16 rounding dwarfs the layout's difference) use PyTorch's
        kernel in channels_last."""
        if (self.training and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4
                and self.affine and self.track_running_stats and self.momentum is not None
                and x.is_contiguous(memory_format=torch.channels_last) and x.numel() > x.shape[1]):
            n, c, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view: x is channels_last contiguous
            out, mean, var = _RowBatchNormReLU.apply(rows, self.weight, self.bias, self.eps)
            update_running_stats(self, mean, var, rows.shape[0])
            return out.view(n, h, w, c).permute(0, 3, 1, 2)
        return F.relu(self(x), inplace=True)


@torch.no_grad()
def update_running_stats(bn: nn.BatchNorm2d, mean: Tensor, var: Tensor, count: float) -> None:
    """BatchNorm's running-statistics update for batch statistics computed outside its kernel: momentum
    average (default 0.1), unbiased variance over ``count`` values per channel."""
    if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
        return
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    m = bn.momentum if bn.momentum is not None else 0.1
    unbiased = var * (count / max(count - 1.0, 1.0))
    bn.running_mean.mul_(1 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
    bn.running_var.mul_(1 - m).add_(unbiased.to(bn.running_var.dtype), alpha=m)


class DoubleConv(nn.Module):
    """conv3x3 -> BN -> ReLU, twice (the original's ``double_conv``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.conv1(x))

    def tail(self, h: Tensor) -> Tensor:
        """Everything after ``conv1``, for callers that compute ``conv1(x)`` their own way (:class:`Up`)."""
        return _bn_relu(self.bn2, self.conv2(_bn_relu(self.bn1, h)))


def _bn_relu(bn: nn.Module, x: Tensor) -> Tensor:
    """ReLU(bn(x)); our BatchNorm2d has a fused path, others (e.g. the SyncBatchNorm of DDP) do not."""
    return bn.relu(x) if isinstance(bn, BatchNorm2d) else F.relu(bn(x), inplace=True)


class Encoder(nn.Module):
    """Spatial_Encoder (spec 5.2): P x P -> P/4 x P/4 with widths[2] channels, per frame."""

    def __init__(self, widths: tuple[int, int, int], cin: int = 3) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.inc = DoubleConv(cin, w0)
        self.down1 = DoubleConv(w0, w1)
        self.down2 = DoubleConv(w1, w2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inc(x)
        x = self.down1(F.max_pool2d(x, 2))
        return self.down2(F.max_pool2d(x, 2))


class Up(nn.Module):
    """ConvTranspose2d (k3, s2, p1, op1; keeps channels, doubles size) then a double conv.

    The transposed conv and the double conv's first conv are run as one (:func:`upsample_conv`)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin, 3, stride=2, padding=1, output_padding=1)
        self.conv = DoubleConv(cin, cout)
        self._composed: dict[str, Any] = {}  # upsample_conv's cache for frozen weights; not state

    def forward(self, x: Tensor) -> Tensor:
        return self.conv.tail(upsample_conv(x, self.up, self.conv.conv1, self._composed))


class _AddBorders(torch.autograd.Function):
    """``out`` with ``top``/``bottom`` added to its first/last row and ``left``/``right`` to its first/last
    column, in place. The gradient of ``out`` passes through uncopied (autograd's own in-place slicing would
    copy the whole gradient once per slice); the border terms get their slices, summed to their shapes."""

    @staticmethod
    def forward(ctx: Any, out: Tensor, top: Tensor, bottom: Tensor, left: Tensor, right: Tensor) -> Tensor:
        ctx.meta = [(t.shape, t.dtype) for t in (top, bottom, left, right)]
        out[:, :, :1].add_(top)
        out[:, :, -1:].add_(bottom)
        out[..., :1].add_(left)
        out[..., -1:].add_(right)
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, ...]:
        parts = (g[:, :, :1], g[:, :, -1:], g[..., :1], g[..., -1:])
        sums = (p.sum_to_size(shape).to(dtype) for p, (shape, dtype) in zip(parts, ctx.meta, strict=True))
        return (g, *sums)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def upsample_conv(x: Tensor, up: nn.ConvTranspose2d, conv: nn.Conv2d,
                  cache: dict[str, Any] | None = None) -> Tensor:
    """``conv(up(x))`` for the decoder's ConvTranspose2d(k3, s2, p1, op1) and the 3x3 (pad 1) conv after it,
    computed as one transposed convolution with their composed 5x5 kernel.

    Why: nothing non-linear sits between the two, and the pair was the most expensive part of the network on
    CPU (about 40 % of a paper-size fp32 training step): the transposed conv spends 9 multiply-adds per input
    pixel and channel pair at the full hidden width, and the conv after it 9 per output pixel. The composition
    needs 25 per input pixel = 6.25 per output pixel, at the conv's output width, and one weight gradient
    instead of two. It is the same function up to float rounding (checked against the literal network):

    * kernel: ``u[c, p] = sum_o wt[c, o] (full correlation) wc[p, o]``, itself a small transposed conv;
    * bias: the conv of the transposed conv's (constant) bias map is constant away from the border; that
      constant is the transposed conv's bias, and the border rows/columns get the difference;
    * border: the conv's zero padding excludes the intermediate row and column -1, which the transposed conv
      would produce from input row/column 0 (its kernel's first row/column) and the composition includes;
      their contribution to output row/column 0 is computed separately (thin convolutions) and subtracted.

    The composed terms are recomputed at every call while the weights require gradients (training), and kept
    in ``cache`` (checked against the weights' identity and version) while they do not (scoring's frozen
    copy), where recomputing them would cost a small batch as much as its cubes.
    """
    if (up.stride, up.padding, up.output_padding, up.kernel_size, up.groups, up.dilation) != (
            (2, 2), (1, 1), (1, 1), (3, 3), 1, (1, 1)) or (
            conv.stride, conv.padding, conv.kernel_size, conv.groups, conv.dilation) != (
            (1, 1), (1, 1), (3, 3), 1, (1, 1)):
        return conv(up(x))
    wt, wc = up.weight, conv.weight
    _, _, h, w = x.shape
    tensors = [t for t in (wt, up.bias, wc, conv.bias) if t is not None]
    if cache is None or torch.is_inference_mode_enabled() or any(t.requires_grad for t in tensors):
        # (terms made under inference_mode could not be saved for a later backward, so they are not kept)
        u, inner, d = _composed_terms(up, conv, h, w)
    else:
        key = (h, w, x.device, *((id(t), t._version, t.data_ptr(), t.dtype) for t in tensors))
        if cache.get("key") != key:
            cache.clear()
            with torch.no_grad():
                cache.update(key=key, terms=_composed_terms(up, conv, h, w))
        u, inner, d = cache["terms"]
    out = F.conv_transpose2d(x, u, inner, stride=2, padding=2, output_padding=1)
    # intermediate row -1 (columns -1 .. 2w), and its conv with the kernel's first row -> output row 0
    row = F.conv_transpose2d(x[:, :, :1], wt[:, :, :1], None, stride=(1, 2))
    row = F.conv2d(F.pad(row, (0, 1)), wc[:, :, :1])
    # intermediate column -1 (rows 0 .. 2h; row -1 is in `row`) -> output column 0
    col = F.conv_transpose2d(x[..., :1], wt[..., :1], None, stride=(2, 1))
    col = F.conv2d(F.pad(col[:, :, 1:], (0, 0, 1, 1)), wc[..., :1])
    side = (0, 0, 1, 1)  # the corners' bias difference is in the top and bottom rows
    return _AddBorders.apply(out, d[:, :, :1] - row, d[:, :, -1:], F.pad(d[:, :, 1:-1, :1], side) - col,
                             F.pad(d[:, :, 1:-1, -1:], side))


def _composed_terms(up: nn.ConvTranspose2d, conv: nn.Conv2d, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """(composed 5x5 transposed-conv weight, its bias, the bias difference on the (2h, 2w) output's border),
    in full precision even under autocast."""
    wt, wc = up.weight, conv.weight
    bt = up.bias if up.bias is not None else wt.new_zeros(wt.shape[1])
    bc = conv.bias if conv.bias is not None else wc.new_zeros(wc.shape[0])
    with _autocast_off(wt.device.type):
        full = torch.promote_types(wt.dtype, torch.float32)
        wt, wc, bt, bc = (t.to(full) for t in (wt, wc, bt, bc))
        # u[c, p, q] = sum_{o, k - m = q - 2} wt[c, o, k] wc[p, o, m]: wt's 3x3 maps as a batch, transposed-
        # convolved with the flipped wc (81 products per (c, p, o) and no zero padding)
        u = F.conv_transpose2d(wt, wc.flip(2, 3).transpose(0, 1))  # (cin, cout, 5, 5)
        inner = bc + wc.sum((2, 3)) @ bt
        bias_map = bt.view(1, -1, 1, 1).expand(1, -1, 2 * h, 2 * w)
        d = F.conv2d(bias_map, wc, bc, padding=1) - inner.view(1, -1, 1, 1)  # zero inside the border
    return u, inner, d


class Decoder(nn.Module):
    """Spatial_Decoder (spec 5.3), no skips, linear 1x1 output."""

    def __init__(self, widths: tuple[int, int, int], cout: int) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.up2 = Up(w2, w1)
        self.up3 = Up(w1, w0)
        self.out = nn.Conv2d(w0, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.up3(self.up2(x)))


def sine_table(frames: int, depth: int) -> Tensor:
    """The original's sine encoding: [sin of even columns, cos of odd columns] concatenated, times 0.5."""
    pos = torch.arange(frames, dtype=torch.float64)[:, None]
    k = torch.arange(depth, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(k, 2, rounding_mode="floor") / depth)
    table = torch.cat([torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])], dim=1) * 0.5
    return table.float()


class EncoderLayer(nn.Module):
    """One conv-transformer layer (spec 5.5-5.6) with all heads fused.

    ``qkv`` is a grouped conv (groups = heads) whose group k maps head k's channel slice to
    ``[Q_k ; KV_k]``; ``logit`` is a grouped conv (groups = 2 * heads) mapping ``Q_k`` and ``K_k`` to one
    channel each, i.e. the two halves of the original pair-logit conv, whose bias is ``logit_bias``.
    """

    def __init__(self, depth: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(depth, 2 * depth, 3, padding=1, groups=heads)
        self.logit = nn.Conv2d(2 * depth, 2 * heads, 3, padding=1, groups=2 * heads, bias=False)
        self.logit_bias = nn.Parameter(torch.empty(heads))
        self.ffn = nn.Conv2d(depth, depth, 3, padding=1)
        self.norm = nn.GroupNorm(GN_GROUPS, depth)
        bound = 1 / math.sqrt(2 * depth // heads * 9)  # PyTorch's default bias init of the original conv
        nn.init.uniform_(self.logit_bias, -bound, bound)

    def forward(self, flat: Tensor, t: int, pos: Tensor) -> Tensor:
        """flat: (B*T, D, H, W), ideally channels_last; pos: (T, d). Returns the same layout.

        Everything between the convolutions works on the channels-last view ``(B, T, H, W, heads, ...)`` so
        that the conv outputs are used without copies and the heads never have to be split or repeated.
        """
        bt, dd, h, w = flat.shape
        b, nh = bt // t, self.heads
        d = dd // nh
        qkv = F.leaky_relu(self.qkv(flat), LEAK).permute(0, 2, 3, 1).reshape(b, t, h, w, nh, 2, d)
        v = qkv[..., 1, :]  # (B, T, H, W, nh, d); V has no positional term
        qk = (qkv + pos.view(1, t, 1, 1, 1, 1, d)).view(bt, h, w, 2 * dd).permute(0, 3, 1, 2)
        logits = self.logit(qk).permute(0, 2, 3, 1).reshape(b, t, h, w, nh, 2)
        lq = logits[..., 0] + self.logit_bias
        a = F.leaky_relu(lq[:, :, None] + logits[:, None, :, ..., 1], LEAK)  # (B, Ti, Tj, H, W, nh)
        attn = torch.softmax(a, dim=2)
        # out_i = sum_j A_ij V_j as one batched matmul over (B, H, W, heads): (Ti x Tj) @ (Tj x d)
        attn_m = attn.permute(0, 3, 4, 5, 1, 2).reshape(b * h * w * nh, t, t)
        v_m = v.permute(0, 2, 3, 4, 1, 5).reshape(b * h * w * nh, t, d)
        out = torch.bmm(attn_m, v_m.to(attn_m.dtype)).view(b, h, w, nh, t, d).permute(0, 4, 1, 2, 3, 5)
        out = out.reshape(bt, h, w, dd).permute(0, 3, 1, 2)  # channels_last (B*T, D, H, W)
        a1 = out + flat
        y = F.leaky_relu(self.ffn(a1), LEAK) + a1
        return self.norm(y)


class Transformer(nn.Module):
    """ConvTransformerEncoder (spec 5.4): positional table computed once per forward, shared by all layers."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        depth = cfg.widths[2]
        d = depth // cfg.n_heads
        self.frames = cfg.frames
        self.pos_kind = cfg.pos
        self.layers = nn.ModuleList(EncoderLayer(depth, cfg.n_heads) for _ in range(cfg.n_layers))
        if cfg.pos == "learned":
            self.pos = nn.Embedding(PE_SLOTS, d)
        else:
            self.register_buffer("sine", sine_table(cfg.frames, d), persistent=False)

    def table(self, t: int) -> Tensor:
        if self.pos_kind == "learned":
            return self.pos.weight[:t]
        return self.sine[:t]

    def forward(self, flat: Tensor, t: int) -> Tensor:
        """flat: (B*T, D, H, W) frames of B cubes of T frames each, frame-major within a cube."""
        pos = self.table(t)
        for layer in self.layers:
            flat = layer(flat, t, pos)
        return flat


class Branch(nn.Module):
    def __init__(self, cfg: ModelConfig, cout: int) -> None:
        super().__init__()
        self.encoder = Encoder(cfg.widths)
        self.transformer = Transformer(cfg)
        self.decoder = Decoder(cfg.widths, cout)

    def forward(self, flat: Tensor, t: int) -> Tensor:
        """flat: (B*T, 3, P, P) channels_last; returns (B*T, C, P, P) channels_last."""
        return self.decoder(self.transformer(self.encoder(flat), t))


def validate_config(cfg: ModelConfig) -> None:
    """Reject configurations the network cannot represent, naming the field to change."""
    if len(cfg.widths) != 3 or min(cfg.widths) < 1:
        raise UserError(f"model widths {cfg.widths}: give three positive channel counts, e.g. 32 64 128")
    if cfg.n_heads < 1 or cfg.widths[2] % cfg.n_heads:
        raise UserError(f"model widths[2]={cfg.widths[2]} is not divisible by n_heads={cfg.n_heads}")
    if cfg.widths[2] % GN_GROUPS:
        raise UserError(
            f"model widths[2]={cfg.widths[2]} must be divisible by {GN_GROUPS} (GroupNorm groups)")
    if cfg.n_layers < 1:
        raise UserError(f"model n_layers={cfg.n_layers}: need at least 1 layer")
    if cfg.pos not in ("learned", "sine"):
        raise UserError(f"model pos={cfg.pos!r}: choose 'learned' or 'sine'")
    if cfg.frames < 1 or (cfg.pos == "learned" and cfg.frames > PE_SLOTS):
        raise UserError(
            f"model frames={cfg.frames}: learned positions allow 1..{PE_SLOTS} frames (cube length <= 4); "
            "use pos='sine' for longer cubes"
        )
    if cfg.pos == "sine" and (cfg.widths[2] // cfg.n_heads) % 2:
        raise UserError("sine positions need an even head depth widths[2] / n_heads")


class STATE(nn.Module):
    """The two-branch STATE network. ``forward(x)`` with x (B, T, 3, P, P) in [0, 1] returns
    ``(raw_out (B, T, 3, P, P), flow_out (B, T, 2, P, P))``, both linear (no output activation).

    ``identical_init=True`` reproduces the original's initialisation quirk (spec 5.8): all heads of a layer
    and all layers of a branch start from the same weights.
    """

    def __init__(self, cfg: ModelConfig, identical_init: bool = True) -> None:
        super().__init__()
        validate_config(cfg)
        self.cfg = dataclasses.replace(cfg, widths=tuple(int(w) for w in cfg.widths))
        self.raw = Branch(self.cfg, 3)
        self.flow = Branch(self.cfg, 2)
        if identical_init:
            for branch in (self.raw, self.flow):
                _tie_initial_weights(branch.transformer, self.cfg.n_heads)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 5 or x.shape[2] != 3:
            raise ValueError(f"STATE expects x of shape (B, T, 3, P, P), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        # channels_last: oneDNN's convolutions (forward and backward) are much faster in NHWC on CPU
        flat = x.reshape(b * t, *x.shape[2:]).contiguous(memory_format=torch.channels_last)
        raw = self.raw(flat, t)
        flow = self.flow(flat, t)
        return raw.reshape(b, t, *raw.shape[1:]), flow.reshape(b, t, *flow.shape[1:])


@torch.no_grad()
def _tie_initial_weights(tr: Transformer, heads: int) -> None:
    """Copy head 0 into every head and layer 0 into every layer, as the original's deep copies do."""
    first = tr.layers[0]
    for p in (first.qkv.weight, first.qkv.bias, first.logit.weight, first.logit_bias):
        groups = p.view(heads, -1)
        groups.copy_(groups[:1].expand_as(groups))
    for layer in tr.layers[1:]:
        layer.load_state_dict(first.state_dict())


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; for the paper size this equals the original's parameters that receive
    gradients (2,568,061), since the unused modules are not built."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is a fixed per-channel affine map, so ``conv -> BN`` is one convolution with
    scaled weights and a shifted bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same function up to
    float rounding, for the outputs and for the input gradient of perturbed scoring, with one pass over the
    activations fewer per BatchNorm, forward and backward. Scoring and the training statistics use it; the
    original model (and its training-mode batch statistics) is untouched. Models other than STATE come back
    as a plain eval-mode copy.
    """
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out = copy.deepcopy(model).eval()
    for dc in out.modules():
        if not isinstance(dc, DoubleConv):
            continue
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
            bn = getattr(dc, bn_name)
            if isinstance(bn, _BatchNorm) and bn.running_mean is not None and bn.running_var is not None:
                setattr(dc, conv_name, fuse_conv_bn_eval(getattr(dc, conv_name), bn))
                setattr(dc, bn_name, nn.Identity())
    for p in out.parameters():
        p.requires_grad_(False)  # scoring differentiates with respect to the input only
    return out


def autocast_context(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU or CUDA when asked (an opt-in approximation), otherwise a no-op context."""
    if not bf16:
        return contextlib.nullcontext()
    dev = torch.device(device)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


# ----------------------------------------------------------------------------- original key names
_BRANCHES = (("raw", ""), ("flow", "_of"))
_DC = (("conv1", "0"), ("bn1", "1"), ("conv2", "3"), ("bn2", "4"))
_BN_BUF = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _plain_renames(n_layers: int) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """(our module path, original module path, tensor names) for everything that is a pure rename."""
    for ours, sfx in _BRANCHES:
        for blk, orig in (("inc", "inc.conv.conv"), ("down1", "down1.mpconv.1.conv"),
                          ("down2", "down2.mpconv.1.conv")):
            for m, i in _DC:
                names = _BN_BUF if m.startswith("bn") else ("weight", "bias")
                yield f"{ours}.encoder.{blk}.{m}", f"feature_embedding{sfx}.{orig}.{i}", names
        for up in ("up2", "up3"):
            yield f"{ours}.decoder.{up}.up", f"prediction{sfx}.{up}.up", ("weight", "bias")
            for m, i in _DC:
                names = _BN_BUF if m.startswith("bn") else ("weight", "bias")
                yield f"{ours}.decoder.{up}.conv.{m}", f"prediction{sfx}.{up}.conv.conv.{i}", names
        yield f"{ours}.decoder.out", f"prediction{sfx}.out.conv", ("weight", "bias")
        for layer in range(n_layers):
            src, dst = f"{ours}.transformer.layers.{layer}", f"encoder{sfx}.encoder.{layer}"
            yield f"{src}.ffn", f"{dst}.feedforward.conv0.0", ("weight", "bias")
            yield f"{src}.norm", f"{dst}.GN1", ("weight", "bias")


def export_original(model: STATE, prefix: str = "") -> dict[str, Tensor]:
    """Our weights under the original key names (442 keys for n_l = 3), e.g. to run them in the authors' code.

    The original also stores modules it never uses (the template layer ``encoder.encoderlayer`` and the
    per-head ``feedforward`` convs); they get copies of layer 0's weights and of slices of its FFN, so that
    the dict has the original's keys and shapes; their values do not affect any output.
    """
    cfg = model.cfg
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}
    nh = cfg.n_heads
    d = cfg.widths[2] // nh
    plain = {o: (s, names) for s, o, names in _plain_renames(cfg.n_layers)}
    for ours, sfx in _BRANCHES:
        out.update(_plain_subset(sd, plain, sfx))
        for layer in range(cfg.n_layers):
            out.update(_export_layer(sd, f"{ours}.transformer.layers.{layer}",
                                     f"encoder{sfx}.encoder.{layer}", nh, d))
        template = _export_layer(sd, f"{ours}.transformer.layers.0", f"encoder{sfx}.encoderlayer", nh, d)
        template.update({
            f"encoder{sfx}.encoderlayer.feedforward.conv0.0.{n}": sd[f"{ours}.transformer.layers.0.ffn.{n}"]
            for n in ("weight", "bias")})
        template.update({
            f"encoder{sfx}.encoderlayer.GN1.{n}": sd[f"{ours}.transformer.layers.0.norm.{n}"]
            for n in ("weight", "bias")})
        out.update(template)
        if cfg.pos == "learned":
            pe = sd[f"{ours}.transformer.pos.weight"]
            out[f"encoder{sfx}.positionnet.positional_embedding.weight"] = pe
    ordered = {k: out[k].clone() for k in original_keys(cfg) if k in out}
    return {prefix + k: v for k, v in ordered.items()}


def _plain_subset(sd: Mapping[str, Tensor], plain: Mapping[str, tuple[str, tuple[str, ...]]],
                  sfx: str) -> dict[str, Tensor]:
    out = {}
    for orig, (ours, names) in plain.items():
        branch_sfx = "_of" if ours.startswith("flow.") else ""
        if branch_sfx != sfx:
            continue
        for n in names:
            out[f"{orig}.{n}"] = sd[f"{ours}.{n}"]
    return out


def _export_layer(sd: Mapping[str, Tensor], src: str, dst: str, nh: int, d: int) -> dict[str, Tensor]:
    """Split the fused qkv / pair-logit convs of one layer into the original's per-head tensors."""
    out = {}
    qkv_w = sd[f"{src}.qkv.weight"].view(nh, 2, d, d, 3, 3)
    qkv_b = sd[f"{src}.qkv.bias"].view(nh, 2, d)
    lg_w = sd[f"{src}.logit.weight"].view(nh, 2, 1, d, 3, 3)
    lg_b = sd[f"{src}.logit_bias"]
    ffn_w = sd[f"{src}.ffn.weight"]
    ffn_b = sd[f"{src}.ffn.bias"]
    for k in range(nh):
        h = f"{dst}.attention_heads.{k}"
        out[f"{h}.q_featuremap.conv0.0.weight"] = qkv_w[k, 0]
        out[f"{h}.q_featuremap.conv0.0.bias"] = qkv_b[k, 0]
        out[f"{h}.k_v_featuremap.conv0.0.weight"] = qkv_w[k, 1]
        out[f"{h}.k_v_featuremap.conv0.0.bias"] = qkv_b[k, 1]
        out[f"{h}.attentionmap.conv0.0.weight"] = torch.cat([lg_w[k, 0], lg_w[k, 1]], dim=1)
        out[f"{h}.attentionmap.conv0.0.bias"] = lg_b[k].reshape(1)
        # never used by the original's forward: filler with the right shape
        out[f"{h}.feedforward.conv0.0.weight"] = ffn_w[:d, :d]
        out[f"{h}.feedforward.conv0.0.bias"] = ffn_b[:d]
    return out


def original_keys(cfg: ModelConfig) -> list[str]:
    """Every state_dict key of the original two-branch network for ``cfg``, in the original's order."""
    nh = cfg.n_heads
    keys: list[str] = []

    def dc(base: str) -> None:
        for _, i in _DC:
            names = _BN_BUF if i in ("1", "4") else ("weight", "bias")
            keys.extend(f"{base}.{i}.{n}" for n in names)

    def layer(base: str) -> None:
        for k in range(nh):
            for m in ("q_featuremap", "k_v_featuremap", "attentionmap", "feedforward"):
                keys.extend(f"{base}.attention_heads.{k}.{m}.conv0.0.{n}" for n in ("weight", "bias"))
        keys.extend(f"{base}.feedforward.conv0.0.{n}" for n in ("weight", "bias"))
        keys.extend(f"{base}.GN1.{n}" for n in ("weight", "bias"))

    for _, sfx in _BRANCHES:
        dc(f"feature_embedding{sfx}.inc.conv.conv")
        dc(f"feature_embedding{sfx}.down1.mpconv.1.conv")
        dc(f"feature_embedding{sfx}.down2.mpconv.1.conv")
        layer(f"encoder{sfx}.encoderlayer")
        for i in range(cfg.n_layers):
            layer(f"encoder{sfx}.encoder.{i}")
        if cfg.pos == "learned":
            keys.append(f"encoder{sfx}.positionnet.positional_embedding.weight")
        for up in ("up2", "up3"):
            keys.extend(f"prediction{sfx}.{up}.up.{n}" for n in ("weight", "bias"))
            dc(f"prediction{sfx}.{up}.conv.conv")
        keys.extend(f"prediction{sfx}.out.conv.{n}" for n in ("weight", "bias"))
    return keys


# ----------------------------------------------------------------------------------------- import
def _unwrap(obj: Any, source: str) -> dict[str, Tensor]:
    """Find the state_dict in what the original code saved: a dict, possibly nested in lists ([h][w][0])."""
    while isinstance(obj, list | tuple):
        if len(obj) != 1:
            raise UserError(
                f"{source}: found a list of {len(obj)} entries; expected one state_dict (one block, "
                "h_block = w_block = 1), possibly nested in single-entry lists"
            )
        obj = obj[0]
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise UserError(f"{source}: not a state_dict (got {type(obj).__name__}); give a checkpoint of the "
                        "original STATE code")
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            raise UserError(f"{source}: entry {k!r} is a {type(v).__name__}, not a tensor")
        sd[k.removeprefix("module.")] = v
    return sd


def infer_config(sd: Mapping[str, Tensor], frames: int = 7, source: str = "checkpoint") -> ModelConfig:
    """Widths, layers, heads and the positional kind from the original key names and shapes.

    The number of frames T is not stored in the weights (the network is per-frame except for the positional
    lookup), so it is a parameter (default 7 = the published cube length).
    """
    try:
        w0 = sd["feature_embedding.inc.conv.conv.0.weight"].shape[0]
        w1 = sd["feature_embedding.down1.mpconv.1.conv.0.weight"].shape[0]
        w2 = sd["feature_embedding.down2.mpconv.1.conv.0.weight"].shape[0]
    except KeyError as exc:
        raise UserError(f"{source}: missing key {exc.args[0]!r}; this is not a checkpoint of the original "
                        "STATE network (ConvTransformer_recon_correct)") from None
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.encoder\.(\d+)\.", k))}
    head_re = re.compile(r"encoder\.encoder\.0\.attention_heads\.(\d+)\.")
    heads = {int(m.group(1)) for k in sd if (m := head_re.match(k))}
    if not layers or not heads:
        raise UserError(f"{source}: no conv-transformer layers (encoder.encoder.N.attention_heads.K.*) found")
    pos = "learned" if "encoder.positionnet.positional_embedding.weight" in sd else "sine"
    return ModelConfig(frames=frames, widths=(int(w0), int(w1), int(w2)), n_layers=max(layers) + 1,
                       n_heads=max(heads) + 1, pos=pos)


def _few(keys: list[str] | set[str], n: int = 4) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def import_original(state_dict: Any, cfg: ModelConfig | None = None, source: str = "checkpoint") -> STATE:
    """Build our model from an original state_dict (keys with or without ``module.``, possibly list-nested).

    The unused template layer and per-head FFNs are checked for shape and dropped. Missing, unexpected or
    mis-shaped keys raise :class:`UserError` naming a few of them.
    """
    sd = _unwrap(state_dict, source)
    if cfg is None:
        cfg = infer_config(sd, source=source)
    else:
        inferred = infer_config(sd, frames=cfg.frames, source=source)
        cfg = dataclasses.replace(inferred, frames=cfg.frames)
    model = STATE(cfg, identical_init=False)
    template = export_original(model)
    missing = set(template) - set(sd)
    unexpected = set(sd) - set(template)
    if missing:
        raise UserError(f"{source}: missing {len(missing)} key(s): {_few(missing)}")
    if unexpected:
        raise UserError(f"{source}: {len(unexpected)} unexpected key(s): {_few(unexpected)} "
                        f"(expected the keys of the original network with {cfg.n_layers} layers, "
                        f"{cfg.n_heads} heads, pos {cfg.pos})")
    bad = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in template.items()
           if sd[k].shape != v.shape]
    if bad:
        raise UserError(f"{source}: {len(bad)} mis-shaped tensor(s): {_few(bad, 3)}")
    if cfg.pos == "learned" and cfg.frames > sd["encoder.positionnet.positional_embedding.weight"].shape[0]:
        raise UserError(f"{source}: {cfg.frames} frames exceed the positional table's "
                        f"{sd['encoder.positionnet.positional_embedding.weight'].shape[0]} slots")
    model.load_state_dict(_to_ours(sd, model), strict=True)
    return model


def _to_ours(sd: Mapping[str, Tensor], model: STATE) -> dict[str, Tensor]:
    """Inverse of :func:`export_original`: rename, and stack per-head tensors into the fused convs."""
    cfg = model.cfg
    nh = cfg.n_heads
    ours: dict[str, Tensor] = {}
    for s, o, names in _plain_renames(cfg.n_layers):
        for n in names:
            ours[f"{s}.{n}"] = sd[f"{o}.{n}"]
    for br, sfx in _BRANCHES:
        for layer in range(cfg.n_layers):
            src, dst = f"encoder{sfx}.encoder.{layer}", f"{br}.transformer.layers.{layer}"
            heads = [f"{src}.attention_heads.{k}" for k in range(nh)]
            ours[f"{dst}.qkv.weight"] = torch.cat(
                [sd[f"{h}.{m}.conv0.0.weight"] for h in heads for m in ("q_featuremap", "k_v_featuremap")])
            ours[f"{dst}.qkv.bias"] = torch.cat(
                [sd[f"{h}.{m}.conv0.0.bias"] for h in heads for m in ("q_featuremap", "k_v_featuremap")])
            # (1, 2d, 3, 3) over [Q ; K] -> two (1, d, 3, 3) groups per head
            ours[f"{dst}.logit.weight"] = torch.cat(
                [w for h in heads for w in sd[f"{h}.attentionmap.conv0.0.weight"].chunk(2, dim=1)])
            ours[f"{dst}.logit_bias"] = torch.cat([sd[f"{h}.attentionmap.conv0.0.bias"] for h in heads])
        if cfg.pos == "learned":
            ours[f"{br}.transformer.pos.weight"] = sd[f"encoder{sfx}.positionnet.positional_embedding.weight"]
    return {k: v.detach().clone().contiguous() for k, v in ours.items()}


def _torch_load(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give the path of a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise UserError(f"{path}: cannot be read as a tensor-only torch checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]}); re-save it as a plain state_dict") from None


def load_original_checkpoint(path: str | Path, frames: int = 7) -> STATE:
    """Read an original checkpoint without executing pickled code; convert it with :func:`import_original`."""
    obj = _torch_load(path)
    sd = _unwrap(obj, str(path))
    return import_original(sd, infer_config(sd, frames=frames, source=str(path)), source=str(path))


def save_model_only(path: str | Path, model: STATE, cfg: ModelConfig | None = None) -> None:
    """Weights + model config only, atomically, loadable with ``torch.load(weights_only=True)``.

    The training checkpoint (training.py) adds training statistics and the preprocessing manifest on top of
    the same ``state_dict`` and ``model_config`` entries.
    """
    cfg = model.cfg if cfg is None else cfg
    obj = {
        "format": MODEL_FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": dataclasses.asdict(cfg),
    }
    atomic_torch_save(obj, path)


def atomic_torch_save(payload: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` through memory, then temp + rename.

    Saving to a file names the zip's inner folder after the file -- here a random temporary name --
    so equal payloads gave different bytes; a buffer always uses ``archive/``: equal runs, equal files.
    """
    buf = io.BytesIO()
    torch.save(dict(payload), buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model_only(path: str | Path) -> STATE:
    """Read a file written by :func:`save_model_only` (or any dict with ``state_dict`` + ``model_config``)."""
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or "state_dict" not in obj or "model_config" not in obj:
        raise UserError(f"{path}: not a statevad model file (no state_dict / model_config); "
                        "for an original checkpoint use `statevad import-original`")
    data = dict(obj["model_config"])
    data["widths"] = tuple(int(w) for w in data.get("widths", (32, 64, 128)))
    model = STATE(ModelConfig(**data), identical_init=False)
    try:
        model.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{path}: weights do not match its model_config ({first})") from None
    return model


__all__ = [
    "STATE", "count_parameters", "export_original", "import_original", "load_original_checkpoint",
    "save_model_only", "load_model_only", "autocast_context", "original_keys", "infer_config", "sine_table",
    "MODEL_FORMAT",
]
