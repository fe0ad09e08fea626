"""Cubes per second of STATE (literal vs fast fp32 vs fast bf16): training step and perturbed scoring.

    python benchmarks/speed.py [--batch 128] [--sizes paper fast tiny] [--steps 3] [--warmup 1]

A training step is forward + the loss of spec 6.3 + backward + Adam (lr 1e-3, eps 1e-7). Perturbed scoring is
spec 7.1: forward, MSE(x_hat, x) (x not detached) + MSE(y_hat, y), gradient w.r.t. x, one signed step,
second forward (eval mode). FLOPs per cube come from ``torch.utils.flop_counter.FlopCounterMode`` on the fast
model (the useful work; the literal one does more); the peak is a measured large ``torch.mm``.
Writes ``benchmarks/results/speed-<host>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from literal_state import ConvTransformer_recon_correct  # noqa: E402

from statevad.config import MODEL_SIZES, ModelConfig  # noqa: E402
from statevad.errors import atomic_write_json  # noqa: E402
from statevad.model import STATE, autocast_context, import_original  # noqa: E402

Fwd = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def literal_fwd(net: ConvTransformer_recon_correct) -> Fwd:
    def fwd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = x.shape[:2]
        of, raw, _, _ = net(x.reshape(b, t * 3, *x.shape[3:]))
        return raw, of

    return fwd


def train_step(net: torch.nn.Module, fwd: Fwd, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               bf16: bool) -> None:
    net.train()
    with autocast_context("cpu", bf16):
        raw, flow = fwd(x)
    loss = F.mse_loss(raw.float(), x) + F.mse_loss(flow.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def score_step(net: torch.nn.Module, fwd: Fwd, x: torch.Tensor, y: torch.Tensor, bf16: bool,
               eps: float = 0.01) -> torch.Tensor:
    net.eval()
    x = x.clone().requires_grad_(True)
    with autocast_context("cpu", bf16):
        raw, flow = fwd(x)
    loss = F.mse_loss(raw.float(), x) + F.mse_loss(flow.float(), y)
    (g,) = torch.autograd.grad(loss, x)
    xp = (x - eps * g.sign()).detach()
    with torch.no_grad(), autocast_context("cpu", bf16):
        raw, flow = fwd(xp)
    return ((xp - raw.float()) ** 2).sum((1, 2, 3, 4)) + ((y - flow.float()) ** 2).sum((1, 2, 3, 4))


def timed(fn: Callable[[], object], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def flops_per_cube(cfg: ModelConfig) -> dict[str, float]:
    net = STATE(cfg)
    x = torch.rand(1, cfg.frames, 3, 32, 32)
    y = torch.randn(1, cfg.frames, 2, 32, 32)
    opt = torch.optim.Adam(net.parameters())
    with FlopCounterMode(display=False) as fc:
        train_step(net, net, opt, x, y, False)
    train = fc.get_total_flops()
    net.eval()
    with FlopCounterMode(display=False) as fc:  # score_step, with .backward() (the counter's hooks need it)
        xg = x.clone().requires_grad_(True)
        raw, flow = net(xg)
        (F.mse_loss(raw, xg) + F.mse_loss(flow, y)).backward()
        net(x - 0.01 * xg.grad.sign())  # (no no_grad here: the counter's module hooks need autograd)
    return {"train": float(train), "score": float(fc.get_total_flops())}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    dt = timed(lambda: torch.mm(a, b), reps, 1)
    return 2 * n**3 / dt / 1e9


def bench_size(name: str, batch: int, steps: int, warmup: int, literal: bool) -> list[dict]:
    cfg = ModelConfig(**MODEL_SIZES[name])
    torch.manual_seed(0)
    lit = ConvTransformer_recon_correct(cfg.frames, cfg.widths, cfg.n_layers, cfg.n_heads, cfg.pos)
    fast = import_original(lit.state_dict(), cfg)
    x = torch.rand(batch, cfg.frames, 3, 32, 32)
    y = torch.randn(batch, cfg.frames, 2, 32, 32)
    flops = flops_per_cube(cfg)
    variants = ([("literal fp32", lit, literal_fwd(lit), False)] if literal else []) + [
        ("fast fp32", fast, fast, False), ("fast bf16", fast, fast, True)]
    rows = []
    for label, net, fwd, bf16 in variants:
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
        t_train = timed(lambda net=net, fwd=fwd, opt=opt, bf16=bf16: train_step(net, fwd, opt, x, y, bf16),
                        steps, warmup)
        t_score = timed(lambda net=net, fwd=fwd, bf16=bf16: score_step(net, fwd, x, y, bf16), steps, warmup)
        row = {"size": name, "variant": label, "batch": batch,
               "train_cubes_s": batch / t_train, "score_cubes_s": batch / t_score,
               "train_gflop_s": flops["train"] * batch / t_train / 1e9,
               "score_gflop_s": flops["score"] * batch / t_score / 1e9,
               "flops_per_cube": flops}
        print(f"{name:5s} {label:13s} train {row['train_cubes_s']:7.2f} cubes/s  "
              f"score {row['score_cubes_s']:7.2f} cubes/s", flush=True)
        rows.append(row)
    return rows


def table(rows: list[dict], peak: dict[str, float]) -> str:
    base = {r["size"]: r for r in rows if r["variant"] == "literal fp32"}
    lines = ["| size | variant | train cubes/s | x literal | score cubes/s | x literal | "
             "train GFLOP/s | % of peak |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = base.get(r["size"])
        sx = f"{r['train_cubes_s'] / b['train_cubes_s']:.1f}" if b else "-"
        sc = f"{r['score_cubes_s'] / b['score_cubes_s']:.1f}" if b else "-"
        pk = peak["bf16"] if "bf16" in r["variant"] else peak["fp32"]
        lines.append(f"| {r['size']} | {r['variant']} | {r['train_cubes_s']:.2f} | {sx} | "
                     f"{r['score_cubes_s']:.2f} | {sc} | {r['train_gflop_s']:.1f} | "
                     f"{100 * r['train_gflop_s'] / pk:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sizes", nargs="+", default=["paper", "fast", "tiny"], choices=sorted(MODEL_SIZES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--literal-sizes", nargs="*", default=["paper"],
                    help="sizes for which the (slow) literal oracle is timed too")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.sizes:
        rows += bench_size(name, args.batch, args.steps, args.warmup, name in args.literal_sizes)
    host = socket.gethostname()
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"speed-{host}.json"
    atomic_write_json(out, {"command": " ".join(sys.argv), "host": host, "cpu": platform.processor(),
                            "torch": torch.__version__, "threads": args.threads, "peak_gflop_s": peak,
                            "rows": rows})
    print(table(rows, peak))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
