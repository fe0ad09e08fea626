"""The exact fast kernels of the STATE network: same function as PyTorch's own layers, several times faster.

* :meth:`BatchNorm2d.relu` -- training-mode batch norm fused with its ReLU for channels_last float32 CPU
  tensors, as precise as PyTorch's NCHW kernel without its layout copies (:class:`_RowBatchNormReLU`);
* :func:`upsample_conv` -- the decoder's ConvTranspose2d and the 3x3 conv after it (linear, nothing in
  between) run as one transposed conv with their composed 5x5 kernel: 6.25 instead of 13.5 multiply-adds per
  output pixel and (input, output) channel pair, and one weight gradient instead of two. For frozen weights
  (scoring) the composed terms are made once (:class:`ComposedTerms`) instead of at every call.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --------------------------------------------------------------------------------------- batch norm
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
            rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # (N, C, H, W) -> (N*H*W, C), a view: x is NHWC
            out, mean, var = _RowBatchNormReLU.apply(rows, self.weight, self.bias, self.eps)
            update_running_stats(self, mean, var, rows.shape[0])
            return out.view(n, h, w, c).permute(0, 3, 1, 2)  # (N*H*W, C) -> (N, C, H, W) channels_last
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


# ----------------------------------------------------------------------------- composed upsampling
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


def composable(up: nn.ConvTranspose2d, conv: nn.Conv2d) -> bool:
    """Whether ``conv(up(x))`` is the decoder's pair that :func:`upsample_conv` composes: ConvTranspose2d(k3,
    s2, p1, op1) then a 3x3 conv with padding 1, both dense and undilated."""
    return (up.stride, up.padding, up.output_padding, up.kernel_size, up.groups, up.dilation) == (
        (2, 2), (1, 1), (1, 1), (3, 3), 1, (1, 1)) and (
        conv.stride, conv.padding, conv.kernel_size, conv.groups, conv.dilation) == (
        (1, 1), (1, 1), (3, 3), 1, (1, 1))


def _requires_grad(up: nn.ConvTranspose2d, conv: nn.Conv2d) -> bool:
    return any(t is not None and t.requires_grad for t in (up.weight, up.bias, conv.weight, conv.bias))


class ComposedTerms:
    """The composed kernel and bias of one frozen (ConvTranspose2d, Conv2d) pair, made once from the weights
    as they are now (scoring's inference copy, whose weights never change), and the border bias difference
    per map size, made on the first use of that size.

    Recomputing them at every call would cost a small scoring batch as much as its cubes. They are plain
    tensors, not buffers: checkpoints and exports do not see them. They are made outside inference mode, so
    that they serve ``torch.inference_mode()`` forwards and the input-gradient passes of scoring alike.
    """

    def __init__(self, up: nn.ConvTranspose2d, conv: nn.Conv2d) -> None:
        with _plain_no_grad(), _autocast_off(up.weight.device.type):
            wt, wc, bt, bc = _full_precision(up, conv)
            self.u, self.inner = _composed_kernel(wt, wc, bt, bc)
        self._borders: dict[tuple[int, int, torch.device, torch.dtype], Tensor] = {}

    def fits(self, up: nn.ConvTranspose2d) -> bool:
        """Whether the terms are on the weights' device and in their full precision (``.to()`` or
        ``.double()`` on a frozen model moves the weights, not these terms)."""
        wt = up.weight
        return self.u.device == wt.device and self.u.dtype == torch.promote_types(wt.dtype, torch.float32)

    def border(self, up: nn.ConvTranspose2d, conv: nn.Conv2d, h: int, w: int) -> Tensor:
        """The bias difference on the border of the (2h, 2w) output (zero inside it)."""
        key = (h, w, self.u.device, self.u.dtype)
        d = self._borders.get(key)
        if d is None:
            with _plain_no_grad(), _autocast_off(up.weight.device.type):
                _, wc, bt, bc = _full_precision(up, conv)
                d = self._borders[key] = _border_difference(wc, bt, bc, self.inner, h, w)
        return d


@contextlib.contextmanager
def _plain_no_grad() -> Any:
    """No autograd graph, and ordinary tensors even when called under ``torch.inference_mode()``: inference
    tensors could not be saved for a later backward through them."""
    with torch.inference_mode(False), torch.no_grad():
        yield


def upsample_conv(x: Tensor, up: nn.ConvTranspose2d, conv: nn.Conv2d,
                  frozen: ComposedTerms | None = None) -> Tensor:
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

    ``frozen``: the pair's precomputed :class:`ComposedTerms`, used only while no weight requires gradients;
    otherwise (training) the composed terms are recomputed at every call, so that gradients reach the weights.
    """
    if not composable(up, conv):
        return conv(up(x))
    wt, wc = up.weight, conv.weight
    _, _, h, w = x.shape
    if frozen is None or _requires_grad(up, conv):
        u, inner, d = _composed_terms(up, conv, h, w)
    else:
        u, inner, d = frozen.u, frozen.inner, frozen.border(up, conv, h, w)
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
    with _autocast_off(up.weight.device.type):
        wt, wc, bt, bc = _full_precision(up, conv)
        u, inner = _composed_kernel(wt, wc, bt, bc)
        d = _border_difference(wc, bt, bc, inner, h, w)
    return u, inner, d


def _full_precision(up: nn.ConvTranspose2d, conv: nn.Conv2d) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(wt, wc, bt, bc) in at least float32 (bf16 weights would round the composition), zero for no bias."""
    wt, wc = up.weight, conv.weight
    bt = up.bias if up.bias is not None else wt.new_zeros(wt.shape[1])
    bc = conv.bias if conv.bias is not None else wc.new_zeros(wc.shape[0])
    full = torch.promote_types(wt.dtype, torch.float32)
    wt, wc, bt, bc = (t.to(full) for t in (wt, wc, bt, bc))
    return wt, wc, bt, bc


def _composed_kernel(wt: Tensor, wc: Tensor, bt: Tensor, bc: Tensor) -> tuple[Tensor, Tensor]:
    # u[c, p, q] = sum_{o, k - m = q - 2} wt[c, o, k] wc[p, o, m]: wt's 3x3 maps as a batch, transposed-
    # convolved with the flipped wc (81 products per (c, p, o) and no zero padding)
    u = F.conv_transpose2d(wt, wc.flip(2, 3).transpose(0, 1))  # (cin, cout, 5, 5)
    inner = bc + wc.sum((2, 3)) @ bt  # the composed bias away from the border: (cout,)
    return u, inner


def _border_difference(wc: Tensor, bt: Tensor, bc: Tensor, inner: Tensor, h: int, w: int) -> Tensor:
    bias_map = bt.view(1, -1, 1, 1).expand(1, -1, 2 * h, 2 * w)  # (cin,) -> (1, cin, 2h, 2w), no copy
    return F.conv2d(bias_map, wc, bc, padding=1) - inner.view(1, -1, 1, 1)  # zero inside the border
