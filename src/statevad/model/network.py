"""The STATE network (spec section 5), laid out for speed.

Two branches read the same raw cube: ``raw`` reconstructs it, ``flow`` predicts its optical flow. Each is a
per-frame CNN encoder, a convolutional-attention transformer over time, and a per-frame CNN decoder.

Axes: B cubes of T frames, each frame (C, H, W); the per-frame CNNs see the frames of all cubes as one batch
of B*T, frame-major within a cube. D = widths[2] is the transformer's depth, split into ``heads`` heads of
depth d = D / heads. Activations are channels_last throughout: oneDNN's convolutions are much faster in NHWC
on CPU, and the transformer's head arithmetic reads the conv outputs as (..., H, W, heads, d) without copies.

The arithmetic is the published network's (checked against ``benchmarks/literal_state.py`` to 1e-5), but
it is laid out differently so that it runs several times faster:

* the heads' Q and shared K/V convolutions are one grouped convolution (``qkv``);
* the pair-logit convolution over ``[Q_i ; K_j]`` is linear before its LeakyReLU, so it splits into a
  convolution of ``Q_i`` plus a convolution of ``K_j`` (one grouped convolution for all heads), and the
  ``T x T`` logits are a broadcast add: T convolutions instead of T^2, and no ``(B, T, T, 2d, H, W)`` tensor;
* the softmax-weighted sum over key frames is one batched matmul;
* each decoder stage's ConvTranspose2d and the 3x3 conv after it run as one transposed conv with their
  composed kernel (:func:`~statevad.model.kernels.upsample_conv`), and training-mode BatchNorm is fused with
  its ReLU (:class:`~statevad.model.kernels.BatchNorm2d`).

The original's unused modules (the template encoder layer and the per-head feed-forward convs) are not
built (see :mod:`statevad.model.original` and ``docs/DEVIATIONS.md``, "model/speed").
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from statevad.config import GN_GROUPS, PE_SLOTS, ModelConfig
from statevad.model.kernels import BatchNorm2d, ComposedTerms, composable, upsample_conv

LEAK = 0.2


# ------------------------------------------------------------------------------------------ blocks
class DoubleConv(nn.Module):
    """conv3x3 -> BN -> ReLU, twice (the original's ``double_conv``).

    Every norm slot provides ``relu(x) = ReLU(norm(x))``: our :class:`BatchNorm2d` (fused in training), the
    SyncBatchNorm of distributed training, or the :class:`FoldedNorm` left by :func:`inference_copy`."""

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
        return self.bn2.relu(self.conv2(self.bn1.relu(h)))


class FoldedNorm(nn.Identity):
    """The slot of a BatchNorm folded into the conv before it (:func:`inference_copy`): nothing left but the
    ReLU."""

    def relu(self, x: Tensor) -> Tensor:
        return F.relu(self(x), inplace=True)


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

    The transposed conv and the double conv's first conv run as one (:func:`upsample_conv`). Their composed
    terms are recomputed at every call (training), unless :meth:`freeze` made them once for frozen weights."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin, 3, stride=2, padding=1, output_padding=1)
        self.conv = DoubleConv(cin, cout)
        self.frozen: ComposedTerms | None = None  # not state: made from the weights by freeze()

    def freeze(self) -> None:
        """Precompute the composed terms from the current weights, which must not change afterwards (call it
        again if they do). Used while no weight requires gradients; scoring's :func:`inference_copy`."""
        up, conv = self.up, self.conv.conv1
        self.frozen = ComposedTerms(up, conv) if composable(up, conv) else None

    def forward(self, x: Tensor) -> Tensor:
        if self.frozen is not None and not self.frozen.fits(self.up):
            self.freeze()  # the frozen model was moved or cast after freezing: remake from the moved weights
        return self.conv.tail(upsample_conv(x, self.up, self.conv.conv1, self.frozen))


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


# ------------------------------------------------------------------------------------- transformer
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

        Everything between the convolutions works on the channels-last view ``(B, T, H, W, heads, ...)``, so
        that the conv outputs are used without copies and the heads never have to be split or repeated.
        """
        bt, depth, h, w = flat.shape
        b, heads = bt // t, self.heads
        d = depth // heads
        qkv = F.leaky_relu(self.qkv(flat), LEAK)
        # (B*T, 2D, H, W) -> (B, T, H, W, heads, [Q, KV], d): group k of the conv is head k's [Q_k ; KV_k]
        qkv = qkv.permute(0, 2, 3, 1).reshape(b, t, h, w, heads, 2, d)
        v = qkv[..., 1, :]  # (B, T, H, W, heads, d); V has no positional term
        # Q and K get the frame's position; (B, T, H, W, heads, 2, d) -> (B*T, 2D, H, W), channels_last view
        qk = (qkv + pos.view(1, t, 1, 1, 1, 1, d)).view(bt, h, w, 2 * depth).permute(0, 3, 1, 2)
        # (B*T, 2*heads, H, W) -> (B, T, H, W, heads, [Q, K]): each frame's half of the pair logit
        logits = self.logit(qk).permute(0, 2, 3, 1).reshape(b, t, h, w, heads, 2)
        lq = logits[..., 0] + self.logit_bias  # (B, T, H, W, heads)
        # logit(i, j) = LeakyReLU(Q-half of frame i + K-half of frame j): a broadcast, not T^2 convolutions
        a = F.leaky_relu(lq[:, :, None] + logits[:, None, :, ..., 1], LEAK)  # (B, Ti, Tj, H, W, heads)
        attn = torch.softmax(a, dim=2)  # over the key frames j
        # out_i = sum_j A_ij V_j as one batched matmul over (B, H, W, heads): (Ti x Tj) @ (Tj x d)
        attn_m = attn.permute(0, 3, 4, 5, 1, 2).reshape(b * h * w * heads, t, t)  # -> (B*H*W*heads, Ti, Tj)
        v_m = v.permute(0, 2, 3, 4, 1, 5).reshape(b * h * w * heads, t, d)  # -> (B*H*W*heads, Tj, d)
        out = torch.bmm(attn_m, v_m.to(attn_m.dtype))  # (B*H*W*heads, Ti, d)
        # (B*H*W*heads, Ti, d) -> (B, Ti, H, W, heads, d)
        out = out.view(b, h, w, heads, t, d).permute(0, 4, 1, 2, 3, 5)
        # (B, T, H, W, heads, d) -> (B*T, D, H, W), channels_last
        out = out.reshape(bt, h, w, depth).permute(0, 3, 1, 2)
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
        """(T, d): one positional vector per frame, shared by the heads."""
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


# ---------------------------------------------------------------------------------------- network
def validate_config(cfg: ModelConfig) -> None:
    """Reject configurations the network cannot represent, naming the field to change
    (:meth:`statevad.config.ModelConfig.validate`)."""
    cfg.validate()


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
        # (B, T, 3, P, P) -> (B*T, 3, P, P): the CNNs are per frame
        flat = x.reshape(b * t, *x.shape[2:]).contiguous(memory_format=torch.channels_last)
        raw = self.raw(flat, t)
        flow = self.flow(flat, t)
        # (B*T, C, P, P) -> (B, T, C, P, P)
        return raw.reshape(b, t, *raw.shape[1:]), flow.reshape(b, t, *flow.shape[1:])


def build_model(cfg: ModelConfig) -> STATE:
    """A freshly initialised network for ``cfg`` (with the original's identical-init quirk)."""
    return STATE(cfg)


@torch.no_grad()
def _tie_initial_weights(tr: Transformer, heads: int) -> None:
    """Copy head 0 into every head and layer 0 into every layer, as the original's deep copies do."""
    first = tr.layers[0]
    for p in (first.qkv.weight, first.qkv.bias, first.logit.weight, first.logit_bias):
        groups = p.view(heads, -1)  # (heads * per_head, ...) -> (heads, per_head * ...)
        groups.copy_(groups[:1].expand_as(groups))
    for layer in tr.layers[1:]:
        layer.load_state_dict(first.state_dict())


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters; for the paper size this equals the original's parameters that receive
    gradients (2,568,061), since the unused modules are not built."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with frozen weights and every BatchNorm folded into the convolution
    before it.

    In eval mode a BatchNorm is a fixed per-channel affine map, so ``conv -> BN`` is one convolution with
    scaled weights and a shifted bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``): the same function up to
    float rounding, for the outputs and for the input gradient of perturbed scoring, with one pass over the
    activations fewer per BatchNorm, forward and backward. The decoder's composed upsampling terms are made
    once (:meth:`Up.freeze`) instead of at every call. Scoring and the training statistics use it; the
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
                setattr(dc, bn_name, FoldedNorm())
    for p in out.parameters():
        p.requires_grad_(False)  # scoring differentiates with respect to the input only
    for up in out.modules():
        if isinstance(up, Up):
            up.freeze()  # after the folding: the terms are made from the weights the copy runs with
    return out
