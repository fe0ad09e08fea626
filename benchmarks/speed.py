"""Cubes per second of STATE (literal vs fast fp32 vs fast bf16): training step and perturbed scoring.

    python benchmarks/speed.py [--batch 128] [--sizes paper fast tiny] [--steps 3] [--warmup 2]
                               [--variants literal fp32 bf16 compile] [--malloc tuned|default]

A training step is forward + the loss of spec 6.3 + backward + Adam (lr 1e-3, eps 1e-7). Perturbed scoring is
spec 7.1: forward, MSE(x_hat, x) (x not detached) + MSE(y_hat, y), gradient w.r.t. x, one signed step,
second forward (eval mode). FLOPs per cube come from ``torch.utils.flop_counter.FlopCounterMode`` on the fast
model (the useful work; the literal one does more); the peak is a measured large ``torch.mm``.
``--malloc tuned`` (the default) first applies :func:`statevad.allocator.keep_freed_memory`, as every
``statevad`` command does; ``--malloc default`` keeps glibc's defaults, under which large tensors are unmapped
and re-faulted every step (the condition the published code runs in). ``compile`` is the fast fp32 network
under ``torch.compile`` (Inductor; its compilation happens in the warm-up steps and is not timed). Writes
``benchmarks/results/speed-<host>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from literal_state import ConvTransformer_recon_correct  # noqa: E402

from statevad.allocator import keep_freed_memory  # noqa: E402
from statevad.config import MODEL_SIZES, ModelConfig  # noqa: E402
from statevad.files import atomic_write_json  # noqa: E402
from statevad.model import STATE, import_original, inference_copy  # noqa: E402
from statevad.tensors import autocast_context  # noqa: E402

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
    return timed_faults(fn, steps, warmup)[0]


def timed_faults(fn: Callable[[], object], steps: int, warmup: int) -> tuple[float, float]:
    """Seconds per call and minor page faults per call (the allocator's cost, see statevad.allocator)."""
    for _ in range(warmup):
        fn()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    dt = (time.perf_counter() - t0) / steps
    return dt, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps


def flops_per_cube(cfg: ModelConfig) -> dict[str, float]:
    """FLOPs one more cube adds to a training step and to perturbed scoring: the count at batch 2 minus the
    count at batch 1, so that per-step work that does not grow with the batch (composing the decoder's
    upsampling kernels from the weights) is not charged to every cube."""
    counts = [_step_flops(cfg, b) for b in (1, 2)]
    return {k: counts[1][k] - counts[0][k] for k in ("train", "score")}


def _step_flops(cfg: ModelConfig, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    net = STATE(cfg)
    x = torch.rand(batch, cfg.frames, 3, 32, 32)
    y = torch.randn(batch, cfg.frames, 2, 32, 32)
    opt = torch.optim.Adam(net.parameters())
    with FlopCounterMode(display=False) as fc:
        train_step(net, net, opt, x, y, False)
    train = fc.get_total_flops()
    snet = inference_copy(net)  # what scoring runs: BatchNorm folded, no parameter gradients
    with FlopCounterMode(display=False) as fc:  # score_step, with .backward() (the counter's hooks need it)
        xg = x.clone().requires_grad_(True)
        raw, flow = snet(xg)
        (F.mse_loss(raw, xg) + F.mse_loss(flow, y)).backward()  # input gradient only
        snet(x - 0.01 * xg.grad.sign())  # (no no_grad here: the counter's module hooks need autograd)
    return {"train": float(train), "score": float(fc.get_total_flops())}


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    dt = timed(lambda: torch.mm(a, b), reps, 1)
    return 2 * n**3 / dt / 1e9


def bench_size(name: str, batch: int, steps: int, warmup: int, literal: bool, repeats: int = 1,
               variants_wanted: tuple[str, ...] = ("literal", "fp32", "bf16")) -> list[dict]:
    """Time every variant ``repeats`` times, interleaved (literal, fp32, bf16, literal, ...), so that a slow
    phase of a shared machine hits all variants alike; speed-ups are taken within a round."""
    cfg = ModelConfig(**MODEL_SIZES[name])
    torch.manual_seed(0)
    lit = ConvTransformer_recon_correct(cfg.frames, cfg.widths, cfg.n_layers, cfg.n_heads, cfg.pos)
    fast = import_original(lit.state_dict(), cfg)
    x = torch.rand(batch, cfg.frames, 3, 32, 32)
    y = torch.randn(batch, cfg.frames, 2, 32, 32)
    flops = flops_per_cube(cfg)
    # scoring runs what the product runs: the literal network as is, ours as its BatchNorm-folded copy
    folded = inference_copy(fast)
    lit_fwd = literal_fwd(lit)
    known = {"literal": ("literal fp32", lit, lit_fwd, lit, lit_fwd, False),
             "fp32": ("fast fp32", fast, fast, folded, folded, False),
             "bf16": ("fast bf16", fast, fast, folded, folded, True)}
    if "compile" in variants_wanted:  # same parameters as ``fast``; compiled lazily, in the warm-up steps
        c_fast, c_folded = torch.compile(fast), torch.compile(folded)
        known["compile"] = ("fast fp32 compiled", c_fast, c_fast, c_folded, c_folded, False)
    variants = [known[k] for k in variants_wanted if literal or k != "literal"]
    opts = {v[0]: torch.optim.Adam(v[1].parameters(), lr=1e-3, eps=1e-7) for v in variants}
    rounds: dict[str, dict[str, list[float]]] = {v[0]: {"train": [], "score": []} for v in variants}
    faults: dict[str, dict[str, list[float]]] = {v[0]: {"train": [], "score": []} for v in variants}
    for r in range(repeats):
        for label, net, fwd, snet, sfwd, bf16 in variants:
            opt = opts[label]
            t_train, f_train = timed_faults(
                lambda net=net, fwd=fwd, opt=opt, bf16=bf16: train_step(net, fwd, opt, x, y, bf16),
                steps, warmup)
            t_score, f_score = timed_faults(
                lambda snet=snet, sfwd=sfwd, bf16=bf16: score_step(snet, sfwd, x, y, bf16), steps, warmup)
            rounds[label]["train"].append(batch / t_train)
            rounds[label]["score"].append(batch / t_score)
            faults[label]["train"].append(f_train)
            faults[label]["score"].append(f_score)
            print(f"{name:5s} {label:13s} round {r + 1}/{repeats}: train {batch / t_train:7.2f} cubes/s  "
                  f"score {batch / t_score:7.2f} cubes/s  (page faults per step: train {f_train:.0f}, "
                  f"score {f_score:.0f})", flush=True)
    rows = []
    base = rounds.get("literal fp32")
    for label, *_ in variants:
        tr, sc = rounds[label]["train"], rounds[label]["score"]
        row = {"size": name, "variant": label, "batch": batch, "repeats": repeats,
               "train_cubes_s": statistics.median(tr), "score_cubes_s": statistics.median(sc),
               "train_cubes_s_rounds": tr, "score_cubes_s_rounds": sc,
               "train_gflop_s": flops["train"] * statistics.median(tr) / 1e9,
               "score_gflop_s": flops["score"] * statistics.median(sc) / 1e9,
               "flops_per_cube": flops, "page_faults_per_step": faults[label]}
        if base is not None:  # speed-up within each round, then its median and range over the rounds
            for kind in ("train", "score"):
                ratios = [f / b for f, b in zip(rounds[label][kind], base[kind], strict=True)]
                row[f"{kind}_x_literal_rounds"] = ratios
                row[f"{kind}_x_literal"] = statistics.median(ratios)
        rows.append(row)
    return rows


def _ratio(r: dict, kind: str) -> str:
    if f"{kind}_x_literal" not in r:
        return "-"
    rs = r[f"{kind}_x_literal_rounds"]
    return f"{r[f'{kind}_x_literal']:.2f}" + (f" ({min(rs):.2f}-{max(rs):.2f})" if len(rs) > 1 else "")


def table(rows: list[dict], peak: dict[str, float]) -> str:
    """Medians over the rounds; a speed-up column shows the median ratio and, with repeats, its range."""
    lines = ["| size | variant | train cubes/s | x literal | score cubes/s | x literal | "
             "train GFLOP/s | % of peak | score GFLOP/s | % of peak |", "|---" * 10 + "|"]
    for r in rows:
        pk = peak["bf16"] if "bf16" in r["variant"] else peak["fp32"]
        lines.append(f"| {r['size']} | {r['variant']} | {r['train_cubes_s']:.2f} | {_ratio(r, 'train')} | "
                     f"{r['score_cubes_s']:.2f} | {_ratio(r, 'score')} | {r['train_gflop_s']:.1f} | "
                     f"{100 * r['train_gflop_s'] / pk:.0f}% | {r['score_gflop_s']:.1f} | "
                     f"{100 * r['score_gflop_s'] / pk:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--sizes", nargs="+", default=["paper", "fast", "tiny"], choices=sorted(MODEL_SIZES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed steps per variant and round (with the tuned allocator the first two still "
                         "fault pages in)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="interleaved rounds per variant; the table gives medians and the speed-up range")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--literal-sizes", nargs="*", default=["paper"],
                    help="sizes for which the (slow) literal oracle is timed too")
    ap.add_argument("--variants", nargs="+", default=["literal", "fp32", "bf16"],
                    choices=["literal", "fp32", "bf16", "compile"])
    ap.add_argument("--malloc", choices=["tuned", "default"], default="tuned",
                    help="tuned: statevad.allocator.keep_freed_memory(), as the statevad command runs; "
                         "default: glibc's defaults")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    malloc_tuned = args.malloc == "tuned" and keep_freed_memory()
    if args.malloc == "tuned" and not malloc_tuned:
        print("note: the allocator setting is not available here (not glibc); timing with the defaults")
    torch.set_num_threads(args.threads)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s", flush=True)
    rows = []
    for name in args.sizes:
        rows += bench_size(name, args.batch, args.steps, args.warmup, name in args.literal_sizes,
                           args.repeats, tuple(args.variants))
    host = socket.gethostname()
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"speed-{host}.json"
    atomic_write_json(out, {"command": " ".join(sys.argv), "host": host, "cpu": platform.processor(),
                            "torch": torch.__version__, "threads": args.threads, "peak_gflop_s": peak,
                            "malloc": "tuned" if malloc_tuned else "default",
                            "rows": rows})
    print(table(rows, peak))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
