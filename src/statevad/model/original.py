"""Interop with the original authors' code (``ConvTransformer_recon_correct``): their state_dict keys, and
conversion of their weights to ours (:func:`import_original`) and back (:func:`export_original`).

Most tensors are pure renames (:func:`_plain_renames`). The exceptions: each layer's per-head Q, K/V and
pair-logit convs are fused into ours (``qkv``, ``logit`` + ``logit_bias``), and the original's unused modules
(the template encoder layer ``encoder.encoderlayer`` and the per-head ``feedforward`` convs) are not built:
:func:`import_original` checks their shapes and drops them, :func:`export_original` writes fresh copies so
that an exported dict has exactly the original's keys. See ``docs/DEVIATIONS.md`` ("model/speed").
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from statevad.config import ModelConfig
from statevad.errors import UserError
from statevad.model.network import STATE

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
    qkv_w = sd[f"{src}.qkv.weight"].view(nh, 2, d, d, 3, 3)  # (2D, d, 3, 3) -> (heads, [Q, KV], d, d, 3, 3)
    qkv_b = sd[f"{src}.qkv.bias"].view(nh, 2, d)  # (2D,) -> (heads, [Q, KV], d)
    # (2*heads, d, 3, 3) -> (heads, [Q, K], 1, d, 3, 3)
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
        # the pair-logit conv over [Q ; K]: two (1, d, 3, 3) halves -> (1, 2d, 3, 3)
        out[f"{h}.attentionmap.conv0.0.weight"] = torch.cat([lg_w[k, 0], lg_w[k, 1]], dim=1)
        out[f"{h}.attentionmap.conv0.0.bias"] = lg_b[k].reshape(1)  # () -> (1,)
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
def unwrap_original(obj: Any, source: str) -> dict[str, Tensor]:
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
    sd = unwrap_original(state_dict, source)
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
