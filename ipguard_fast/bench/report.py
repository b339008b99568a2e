"""Markdown table and PNG chart for the end-to-end benchmark results (runner.py).

    python -m ipguard_fast.bench.report benchmarks/results/<machine>-<date>.json   # rewrites .md and .png
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

MiB = 1024 * 1024


def fingerprints_per_s(r: dict):
    """Accepted fingerprints per second of a method (files before 0.2 spelled it fps_per_s)."""
    return r.get("fingerprints_per_s", r.get("fps_per_s"))


def _num(v, fmt="{:.3g}", none="–"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return fmt.format(v)


def _pct(v):
    return _num(None if v is None else 100 * v, "{:.1f}%")


def _ms(v):
    return _num(None if v is None else 1e3 * v, "{:.3g}")


def method_row(name: str, r: dict, engine_fps: float | None) -> str:
    if r.get("status") != "ok":
        return f"| {name} | {r.get('status', '?')}: {r.get('note', '')} |" + " |" * 13
    steps = r.get("steps_per_accepted") or {}
    step, floor = r.get("step") or {}, r.get("floor") or {}
    fps = fingerprints_per_s(r)
    speedup = engine_fps / fps if engine_fps and fps else None
    mem = (r.get("peak_memory") or {}).get("bytes")
    cells = [
        name,
        _num(r.get("candidates") or None, "{}"),
        _num(r["accepted"] if r.get("candidates") else None, "{}"),
        _pct(r.get("acceptance_share")),
        _pct(r.get("rejected_share")),
        _num(fps, "{:.3g}"),
        _num(speedup, "{:.2f}x") if name != "engine" else "1",
        _num(steps.get("mean"), "{:.1f}"),
        _num(steps.get("median"), "{:.0f}"),
        _num(steps.get("p95"), "{:.0f}"),
        _num(steps.get("max"), "{:.0f}"),
        f"{_ms(step.get('median_s'))} (B={step.get('batch', '?')})",
        _ms(floor.get("median_s")),
        _num(r.get("step_over_floor"), "{:.2f}"),
        _num(None if mem is None else mem / MiB, "{:.0f}"),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| method | candidates | accepted | accepted share | converged, failed f32 | accepted fingerprints/s "
          "| engine ÷ method | steps/fp mean | median | p95 | max | step ms | floor ms | step/floor | peak MiB |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def markdown(results: dict) -> str:
    m, cfg = results["machine"], results["config"]
    lines = [
        f"# ipguard_fast end-to-end benchmark: {results['machine_slug']}, {results['date']}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {m.get('cpu')} ({m.get('cpu_count')} CPUs), torch {m.get('torch')}, "
        f"{m.get('threads')} threads, device {m.get('device')}"
        + (f" ({m['gpu']})" if m.get("gpu") else "") + f", compiled ops: {m.get('compiled_ops')}.",
        "",
        f"Settings: n={cfg['n']} (engine), per_sample/torchattacks_cw on the first {cfg['peer_n']} candidates, "
        f"eager_batched on the first {cfg['batched_peer_n']}; k={cfg['k']}, lr={cfg['lr']}, "
        f"max_steps={cfg['max_steps']}, batch_size={cfg['batch_size']}, seed={cfg['seed']}, "
        f"init uniform, labels random. Every method solves the same candidates (the engine's "
        f"CandidateSource) and is counted with the same float32 acceptance rule.",
        "",
        "Columns: accepted share = accepted / finished candidates; 'converged, failed f32' = share that "
        "met the method's own stopping test but failed float32 acceptance; steps/fp = optimiser steps per "
        "accepted fingerprint; step ms = median time of one step at full batch B (engine: SearchStep on full "
        "slots; peers: their own loop); floor = the bare model's forward + autograd.grad w.r.t. the input at the "
        f"same batch, dtype and layout (median); peak memory: {results.get('memory_kind', '')}.",
        "",
    ]
    for name, model in results["models"].items():
        d = model["model"]
        acc = d.get("test_accuracy")
        lines += [
            f"## {name} ({'x'.join(map(str, d['input_shape']))}, {d['parameters']:,} parameters, "
            f"{d['weights']} weights" + (f", digits test accuracy {100 * acc:.1f}%" if acc is not None else "")
            + ")",
            "",
            HEADER,
        ]
        methods = model["methods"]
        engine_fps = fingerprints_per_s(methods.get("engine") or {})
        for method, r in methods.items():
            lines.append(method_row(method, r, engine_fps))
        if model.get("ratios"):
            lines += ["", "Accepted fingerprints per second, engine mode ÷ peer: " + "; ".join(
                f"{e} ÷ {p} = {_num(v, '{:.2f}x')}" for e, row in model["ratios"].items() for p, v in row.items())]
        if model.get("targets"):
            lines += [""] + [f"- target {t['name']}: measured {_num(t['value'], '{:.3f}')} "
                             f"({'met' if t['met'] else 'MISSED'})" for t in model["targets"]]
        if model.get("notes"):
            lines += [""] + [f"- {n}" for n in model["notes"]]
        lines.append("")
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(results["models"].items())
    fig = Figure(figsize=(5.5 * len(models), 7))
    FigureCanvasAgg(fig)  # no pyplot: the process's global backend is left alone
    axes = fig.subplots(2, len(models), squeeze=False)
    for col, (name, model) in enumerate(models):
        ok = [(m, r) for m, r in model["methods"].items() if r.get("status") == "ok"]
        labels = [m for m, _ in ok]
        colours = ["tab:blue" if r["kind"] == "engine" else "tab:orange" for _, r in ok]
        ax = axes[0][col]
        fps = [fingerprints_per_s(r) or 0.0 for _, r in ok]
        ax.barh(labels, fps, color=colours)
        positive = [f for f in fps if f > 0]
        if positive:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        for y, f in enumerate(fps):
            x = f if f > 0 else (min(positive) if positive else 0)
            ax.text(x, y, f" {f:.3g}" if f > 0 else " 0 (none accepted)", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name}: accepted fingerprints / s")
        ax = axes[1][col]
        ratio = [r.get("step_over_floor") or 0.0 for _, r in ok]
        ax.barh(labels, ratio, color=colours)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(1.10, color="tab:red", ls="--", lw=0.8, label="1.10x floor")
        for y, (v, (_, r)) in enumerate(zip(ratio, ok, strict=True)):
            ax.text(v, y, f" {v:.2f} (B={r['step']['batch']})", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{name}: step time / floor (fwd + input grad)")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"ipguard_fast benchmark, {results['machine_slug']} {results['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(results: dict, out_dir: Path, stem: str, png: bool = True) -> dict[str, Path]:
    """<out_dir>/<stem>.json (raw), .md (tables) and, with png, .png (chart)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths["md"].write_text(markdown(results))
    if png:
        chart(results, paths["png"])
    return paths


if __name__ == "__main__":
    src = Path(sys.argv[1])
    data = json.loads(src.read_text())
    write(data, src.parent, src.stem)
