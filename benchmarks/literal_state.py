"""A literal transcription of the STATE network (spec section 5) with the original module names.

This is the test oracle and the speed baseline, not the product path (that is ``statevad.model``). It keeps
everything the original does, including what it does slowly or never uses: the template encoder layer and
the per-head feed-forward convs (so that ``state_dict()`` has the original's 442 keys for n_l = 3), the
materialised ``(b, T, T, 2d, H, W)`` pair tensor fed to the pair-logit conv, and the original call signature
``forward(x (b, 3T, P, P), y (b, 2T, P, P)) -> (of_outputs, raw_outputs, of_targets, raw_targets)``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn


# ------------------------------------------------------------------------ Spatial_Encoder / Decoder
class double_conv(nn.Module):  # noqa: N801 - original names
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class inconv(nn.Module):  # noqa: N801
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = double_conv(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class down(nn.Module):  # noqa: N801
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), double_conv(in_ch, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return self.mpconv(x)


class up(nn.Module):  # noqa: N801
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch, 3, stride=2, padding=1, output_padding=1)
        self.conv = double_conv(in_ch, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up(x))


class outconv(nn.Module):  # noqa: N801
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Spatial_Encoder(nn.Module):  # noqa: N801
    def __init__(self, nums_hidden: list[int], channel_num: int) -> None:
        super().__init__()
        self.inc = inconv(channel_num, nums_hidden[0])
        self.down1 = down(nums_hidden[0], nums_hidden[1])
        self.down2 = down(nums_hidden[1], nums_hidden[2])

    def forward(self, x: Tensor) -> Tensor:
        return self.down2(self.down1(self.inc(x)))


class Spatial_Decoder(nn.Module):  # noqa: N801
    def __init__(self, nums_hidden: list[int], channel_num: int) -> None:
        super().__init__()
        self.up2 = up(nums_hidden[2], nums_hidden[1])
        self.up3 = up(nums_hidden[1], nums_hidden[0])
        self.out = outconv(nums_hidden[0], channel_num)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.up3(self.up2(x)))


# --------------------------------------------------------------------------- conv transformer
class _Conv0(nn.Module):
    """conv3x3 + LeakyReLU(0.2) named ``conv0`` (QNet, KVNet, AttentionNet, FeedForwardNet)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.LeakyReLU(0.2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv0(x)


class ConvTransformerEncoderLayerOneHead(nn.Module):  # noqa: N801
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q_featuremap = _Conv0(d, d)
        self.k_v_featuremap = _Conv0(d, d)
        self.attentionmap = _Conv0(2 * d, 1)
        self.feedforward = _Conv0(d, d)  # never used in forward

    def forward(self, z: Tensor, pos: Tensor) -> Tensor:
        b, t, d, h, w = z.shape
        flat = z.reshape(b * t, d, h, w)
        q = self.q_featuremap(flat).view(b, t, d, h, w) + pos.view(1, t, d, 1, 1)
        kv = self.k_v_featuremap(flat).view(b, t, d, h, w)
        k = kv + pos.view(1, t, d, 1, 1)
        v = kv
        # the pair tensor [Q_i ; K_j] for every ordered pair (i, j): (b, T, T, 2d, H, W)
        qi = q.unsqueeze(2).repeat(1, 1, t, 1, 1, 1)
        kj = k.unsqueeze(1).repeat(1, t, 1, 1, 1, 1)
        pair = torch.cat([qi, kj], dim=3).view(b * t * t, 2 * d, h, w)
        logits = self.attentionmap(pair).view(b, t, t, 1, h, w)
        attn = torch.softmax(logits, dim=2)  # over key frames j, per pixel
        return (attn * v.unsqueeze(1)).sum(dim=2)


class ConvTransformerEncoderLayer(nn.Module):  # noqa: N801
    def __init__(self, num_hidden: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head = ConvTransformerEncoderLayerOneHead(num_hidden // num_heads)
        self.attention_heads = nn.ModuleList([copy.deepcopy(head) for _ in range(num_heads)])
        self.feedforward = _Conv0(num_hidden, num_hidden)
        self.GN1 = nn.GroupNorm(4, num_hidden)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        b, t, c, h, w = x.shape
        chunks = torch.chunk(x, self.num_heads, dim=2)
        heads = torch.cat([hd(z, pos) for hd, z in zip(self.attention_heads, chunks, strict=True)], dim=2)
        a = heads + x
        a = a.reshape(b * t, c, h, w)
        y = self.feedforward(a) + a
        return self.GN1(y).view(b, t, c, h, w)


class PositionNet(nn.Module):
    def __init__(self, d: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.d = d
        if kind == "learned":
            self.positional_embedding = nn.Embedding(10, d)

    def forward(self, t: int, device: torch.device) -> Tensor:
        if self.kind == "learned":
            return self.positional_embedding(torch.arange(t, device=device))
        table = torch.zeros(t, self.d, dtype=torch.float64)
        for p in range(t):
            for k in range(self.d):
                table[p, k] = p / math.pow(10000.0, 2 * (k // 2) / self.d)
        table = torch.cat([torch.sin(table[:, 0::2]), torch.cos(table[:, 1::2])], dim=1) * 0.5
        return table.float().to(device)


class ConvTransformerEncoder(nn.Module):  # noqa: N801
    def __init__(self, num_hidden: int, num_layers: int, num_heads: int, pos_kind: str) -> None:
        super().__init__()
        self.encoderlayer = ConvTransformerEncoderLayer(num_hidden, num_heads)  # template, never used
        self.encoder = nn.ModuleList([copy.deepcopy(self.encoderlayer) for _ in range(num_layers)])
        self.positionnet = PositionNet(num_hidden // num_heads, pos_kind)

    def forward(self, x: Tensor) -> Tensor:
        pos = self.positionnet(x.shape[1], x.device)
        for layer in self.encoder:
            x = layer(x, pos)
        return x


class ConvTransformer_recon_correct(nn.Module):  # noqa: N801
    def __init__(self, tot_raw_num: int = 7, nums_hidden: tuple[int, int, int] = (32, 64, 128),
                 num_layers: int = 3, num_heads: int = 4, pos_kind: str = "learned") -> None:
        super().__init__()
        self.T = tot_raw_num
        hidden = list(nums_hidden)
        self.feature_embedding = Spatial_Encoder(hidden, 3)
        self.encoder = ConvTransformerEncoder(hidden[2], num_layers, num_heads, pos_kind)
        self.prediction = Spatial_Decoder(hidden, 3)
        self.feature_embedding_of = Spatial_Encoder(hidden, 3)
        self.encoder_of = ConvTransformerEncoder(hidden[2], num_layers, num_heads, pos_kind)
        self.prediction_of = Spatial_Decoder(hidden, 2)

    def _branch(self, frames: Tensor, enc: nn.Module, tr: nn.Module, dec: nn.Module) -> Tensor:
        b, t = frames.shape[:2]
        z = enc(frames.reshape(b * t, *frames.shape[2:]))
        z = tr(z.view(b, t, *z.shape[1:]))
        out = dec(z.reshape(b * t, *z.shape[2:]))
        return out.view(b, t, *out.shape[1:])

    def forward(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        b, _, p, _ = x.shape
        frames = x.view(b, self.T, 3, p, p)  # channel = t * 3 + c
        of_targets = None if y is None else y.view(b, self.T, 2, p, p)
        raw_targets = frames  # not detached (spec 7.1)
        raw_outputs = self._branch(frames, self.feature_embedding, self.encoder, self.prediction)
        of_outputs = self._branch(frames, self.feature_embedding_of, self.encoder_of, self.prediction_of)
        return of_outputs, raw_outputs, of_targets, raw_targets
