"""Print the Ped2 tables of benchmarks/README.md from the results JSON files written by ped2.py.

The README's numbers are pasted from this script's output, never typed by hand, so that every figure traces
back to a JSON (and that JSON to the command stored inside it).

    python benchmarks/ped2_table.py benchmarks/results/ped2-cpu*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def runs_table(results: list[tuple[str, dict]]) -> list[str]:
    rows = ["| results | boxes | flow | network | train cubes × epochs | lr | bf16 | seed | eps | w_motion "
            "| micro | macro | EER | box-flow baseline | prepare s | train min | score s | end to end min |",
            "|---" * 18 + "|"]
    for name, d in results:
        s = d["settings"]
        sec = d["seconds"]
        n_train = d["n_train_cubes"] if s["max_cubes"] is None else s["max_cubes"]
        rows.append(
            f"| `{name}` | {d['boxes']} | {d.get('flow', 'dis')} | {s['model_size']} "
            f"| {n_train:,} × {s['epochs']} "
            f"| {s.get('lr_schedule', 'constant')} | {'yes' if s['bf16'] else 'no'} | {d.get('seed', 0)} "
            f"| {s['epsilon']:g} | {s.get('w_motion', 0.0):g} | **{_f(d['micro_auroc'])}** "
            f"| {_f(d['macro_auroc'])} | {_f(d['eer'], 3)} "
            f"| {_f(d['baselines']['box_flow_magnitude']['micro_auroc'])} | {sec['prepare']:.0f} "
            f"| {d['training_minutes']:.1f} | {sec['score']:.0f} | {d['budget_seconds'] / 60:.1f} |")
    return rows


def ablation_table(results: list[tuple[str, dict]]) -> list[str]:
    rows = ["| results | eps | fused | STATE alone (w_motion 0) | raw only | flow only "
            "| fused, smoothed σ=3 |",
            "|---|---|---|---|---|---|---|"]
    for name, d in results:
        passes = sorted(d["scoring_passes"].items(), key=lambda kv: float(kv[0].split("=")[1]))
        for key, p in passes:
            state = p.get("no_motion", p["fused"])  # runs without the motion term: fused is STATE alone
            rows.append(f"| `{name}` | {key.split('=')[1]} | {_f(p['fused']['micro_auroc'])} "
                        f"| {_f(state['micro_auroc'])} "
                        f"| {_f(p['raw_only']['micro_auroc'])} | {_f(p['flow_only']['micro_auroc'])} "
                        f"| {_f(p.get('fused_smooth3', {}).get('micro_auroc'))} |")
    return rows


def motion_table(files: list[str]) -> list[str]:
    """Micro AUROC of z_raw + z_flow + w_motion * z_motion per model, from ped2_weights.py --w-motion JSONs
    and from the motion sweep that ped2.py stores in each scoring pass."""
    sweeps: list[tuple[str, float, dict[str, float]]] = []
    commands: dict[str, str] = {}
    for f in files:
        d = json.loads(Path(f).read_text())
        if d.get("benchmark") == "ped2-fusion-weights":
            rows = {f"{r['w_motion']:g}": r["micro_auroc"] for r in d["rows"]
                    if r.get("w_raw") == 1.0 and "w_motion" in r}
            if rows:
                sweeps.append((Path(f).name, d["epsilon"], rows))
                commands[Path(f).name] = d["command"]
        else:
            for key, p in d.get("scoring_passes", {}).items():
                if "motion_sweep" in p:
                    sweeps.append((Path(f).name, float(key.split("=")[1]), p["motion_sweep"]))
    if not sweeps:
        return []
    weights = sorted({w for _, _, r in sweeps for w in r}, key=float)
    out = ["| results | eps | " + " | ".join(f"w_motion {w}" for w in weights) + " |",
           "|---|---|" + "---|" * len(weights)]
    for name, eps, r in sweeps:
        out.append(f"| `{name}` | {eps:g} | " + " | ".join(_f(r.get(w)) for w in weights) + " |")
    if commands:
        out += ["", "Commands (the `ped2.py` rows: above):", ""]
        out += [f"* `{name}`: `{cmd}`" for name, cmd in commands.items()]
    return out


def clip_table(name: str, d: dict, eps: str) -> list[str]:
    per_clip = d["scoring_passes"][f"eps={eps}"]["fused"]["per_clip_auroc"]
    micro = d["scoring_passes"][f"eps={eps}"]["fused"]["micro_auroc"]
    clips = [c for c, v in per_clip.items() if v is not None]
    rows = [f"| `{name}` | micro | " + " | ".join(clips) + " |", "|---|---|" + "---|" * len(clips)]
    cells = " | ".join(_f(per_clip[c], 3) for c in clips)
    rows.append(f"| model (eps {eps}) | {_f(micro)} | {cells} |")
    state = d["scoring_passes"][f"eps={eps}"].get("no_motion")
    if state:  # a run with the motion term
        rows.append(f"| STATE alone (w_motion 0, eps {eps}) | {_f(state['micro_auroc'])} | "
                    + " | ".join(_f(state["per_clip_auroc"][c], 3) for c in clips) + " |")
    for base, b in d["baselines"].items():
        rows.append(f"| {base} (no learning) | {_f(b['micro_auroc'])} | "
                    + " | ".join(_f(b["per_clip_auroc"][c], 3) for c in clips) + " |")
    return rows


def hard_frames_table(name: str, path: Path, eps: str) -> list[str]:
    """Recomputed from the per-frame scores ped2.py saves beside the JSON, for any scored epsilon."""
    from ped2 import hard_frames  # benchmarks/ped2.py, on sys.path as this script's folder

    npz = path.with_name(path.stem + "-frames.npz")
    if not npz.is_file():
        return []
    arrays = np.load(npz)
    models = {"model": arrays[f"model_eps_{eps}"]}
    if f"state_eps_{eps}" in arrays.files:  # a run with the motion term: also STATE alone
        models = {"model (fused)": models["model"], "STATE alone": arrays[f"state_eps_{eps}"]}
    rows = [f"| `{name}` (eps {eps}): score vs baseline | baseline wrong | model wrong "
            "| model right where baseline wrong | baseline right where model wrong | both wrong |",
            "|---|---|---|---|---|---|"]
    for label, model in models.items():
        for base in (k for k in arrays.files
                     if k != "labels" and not k.startswith(("model_eps_", "state_eps_"))):
            h = hard_frames(model, arrays[base], arrays["labels"])
            rows.append(f"| {label} vs {base} | {h['baseline_wrong']} | {h['model_wrong']} | "
                        f"{h['model_right_where_baseline_wrong']} | {h['baseline_right_where_model_wrong']} "
                        f"| {h['both_wrong']} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="ped2-*.json files written by benchmarks/ped2.py")
    p.add_argument("--detail", nargs="+", default=None,
                   help="results files for the per-clip and hard-frame tables (default: the last one)")
    p.add_argument("--detail-eps", default=None, help="scoring pass (epsilon) for them; default: headline")
    p.add_argument("--motion", nargs="*", default=[], help="JSONs for the motion-term sweep table "
                   "(ped2_weights.py --w-motion outputs and/or ped2.py results)")
    args = p.parse_args(argv)
    results = [(Path(f).name, json.loads(Path(f).read_text())) for f in args.results]
    out = ["### Runs", "", *runs_table(results), "", "Commands:", ""]
    out += [f"* `{name}`: `{d['command']}`" for name, d in results]
    out += ["", "### Scoring ablations (micro AUROC, same trained model per row group)", ""]
    out += ablation_table(results)
    names = [r[0] for r in results]
    missing = [f for f in args.detail or [] if Path(f).name not in names]
    if missing:
        p.error(f"--detail {' '.join(missing)}: not among the results files given; name one of them")
    for wanted in [Path(f).name for f in args.detail] if args.detail else [names[-1]]:
        index = names.index(wanted)
        name, d = results[index]
        eps = args.detail_eps or f"{d['settings']['epsilon']:g}"
        out += ["", f"### Per clip (AUROC) and baselines: `{name}`", "", *clip_table(name, d, eps)]
        hard = hard_frames_table(name, Path(args.results[index]), eps)
        if hard:
            out += ["", f"### Frames each score gets wrong (each at its own EER threshold): `{name}`", "",
                    *hard]
    motion = motion_table(args.motion)
    if motion:
        out += ["", "### Motion term sweep (micro AUROC, chosen on the test set)", "", *motion]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
