"""What the model sees and rebuilds: the anomalous objects it misses most in Ped2 test clips 09-12 (issue 18).

    python benchmarks/ped2_recon.py --work /tmp/w_ped2 --run /tmp/learned-s0 --eps 0.002 \
        --out docs/analysis/ped2_reconstructions.png

For each of clips 09-12: the anomalous object (pixel mask covers >= 10 % of its box, official masks) whose
cube has the lowest fused STATE score (published z, w_raw = w_flow = 1, `errors.npz` of
`benchmarks/ped2_learned.py`), and beside it the normal object of the same frame with the highest score. Each
row: the target frame's patch, its perturbed-input reconstruction, |raw error|, the flow magnitude, the
reconstructed flow magnitude, with the cube's box height, speed and both z-scores in the title. The test
labels pick *which* cubes to draw (this is an analysis figure); nothing is chosen from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
PED2 = REPO.parent / "shared" / "data" / "ped2"
CLIPS = ("09", "10", "11", "12")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--eps", type=float, default=0.002)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from ped2_analysis import object_labels

    from statevad.checkpoint import load_checkpoint
    from statevad.tensors import to_flow_target, to_model_input
    from statevad.workdir import open_split

    run = Path(args.run)
    d = np.load(run / "errors.npz")
    model, ckpt = load_checkpoint(run / "model_ema.pt")
    st = ckpt.stats
    te = open_split(args.work, "test")
    eps = f"{args.eps:g}"
    zr = (d[f"test_raw_{eps}"] - st["raw_mean"]) / st["raw_std"]
    zf = (d[f"test_flow_{eps}"] - st["flow_mean"]) / st["flow_std"]
    score = zr + zf
    obj = object_labels(te, PED2 / "gt" / "pixel_masks_test_packbits.npz")
    clip_of = np.asarray(te.clip)
    names = [str(c["name"]) for c in te.clips]
    picks = []
    for name in CLIPS:
        c = names.index(name)
        anom = np.flatnonzero((clip_of == c) & (obj == 1))
        if not len(anom):
            continue
        a = anom[np.argmin(score[anom])]
        same = np.flatnonzero((te.frame == te.frame[a]) & (obj == 0))
        picks.append((name, "missed anomaly", a))
        if len(same):
            picks.append((name, "top normal, same frame", same[np.argmax(score[same])]))
    fig, axes = plt.subplots(len(picks), 5, figsize=(10, 2.2 * len(picks)))
    axes = np.atleast_2d(axes)
    t_mid = te.raw.shape[1] // 2
    for row, (name, what, i) in enumerate(picks):
        x = to_model_input(te.raw[i:i + 1], torch.device("cpu"))
        y = to_flow_target(te.flow[i:i + 1], torch.device("cpu"))
        x.requires_grad_(True)
        raw_out, flow_out = model(x)
        loss = (raw_out - x).pow(2).mean() + (flow_out - y).pow(2).mean()
        (g,) = torch.autograd.grad(loss, x)
        xp = (x - args.eps * g.sign()).detach()
        with torch.no_grad():
            raw_out, flow_out = model(xp)
        # (1, T, C, P, P) -> the target frame as (P, P, C)
        def img(v: torch.Tensor) -> np.ndarray:
            return np.clip(v[0, t_mid].permute(1, 2, 0).numpy(), 0, 1)

        def mag(v: torch.Tensor) -> np.ndarray:
            return v[0, t_mid].norm(dim=0).numpy()

        panels = [img(xp), img(raw_out), np.abs(img(raw_out) - img(xp)).mean(-1), mag(y), mag(flow_out)]
        titles = ["input (perturbed)", "reconstruction", "|raw error|", "|flow|", "|flow| rebuilt"]
        vmax = max(float(panels[3].max()), 1e-6)
        for ax, im, title in zip(axes[row], panels, titles, strict=True):
            ax.imshow(im, cmap=None if im.ndim == 3 else "magma",
                      vmin=0, vmax=vmax if title.startswith("|flow") else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        b = te.box[i]
        axes[row, 0].set_ylabel(f"clip {name}\n{what}\nh {b[3] - b[1]:.0f}px v {d['test_speed'][i]:.2f}\n"
                                f"z_raw {zr[i]:.1f} z_flow {zf[i]:.1f}", fontsize=6)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
