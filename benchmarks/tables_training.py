"""The tables of sections 1 and 2 of docs/performance.md: time to accuracy and training compute."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.tables import bold, md, n, renderer


def _note(row: dict[str, Any], key: str, cell: str) -> str:
    """A cell with the row's note for that column, if any (e.g. "9th ended at 637 s")."""
    note = row.get("notes", {}).get(key)
    if note is None:
        return cell
    return note if cell == "-" else f"{cell} ({note})"


# Section 1: time to accuracy ------------------------------------------------------------------


@renderer
def time_to_accuracy(files: list[dict[str, Any]]) -> str:
    budgets = sorted({b for f in files for b in f["budgets_minutes"]})
    rows = [r for f in files for r in f["rows"]]
    reach = min(r["to_90_s"] for r in rows if r.get("to_90_s") is not None)
    best = {b: max(r.get(f"acc_{b:g}min") or 0 for r in rows) for b in budgets}
    out = []
    for r in rows:
        to_90 = "-" if r.get("to_90_s") is None else bold(f"{r['to_90_s']:.0f} s", r["to_90_s"] == reach)
        if r.get("to_90_epoch"):
            to_90 += f" (epoch {r['to_90_epoch']})"
        accs = []
        for b in budgets:
            acc = r.get(f"acc_{b:g}min")
            accs.append(_note(r, f"acc_{b:g}min", "-" if acc is None else bold(f"{acc:.3f}", acc == best[b])))
        out.append([r["run"], _note(r, "epochs_run", str(r["epochs_run"])), to_90, *accs])
    headers = ["run", "epochs in budget", "first epoch end >= 90%"] + [f"test acc. at {b:g} min" for b in budgets]
    return md(headers, out)


@renderer
def time_to_accuracy_seeds(files: list[dict[str, Any]]) -> str:
    (budget,) = files[0]["budgets_minutes"]
    rows = [r for f in files for r in f["rows"]]
    key = f"acc_{budget:g}min"
    out = [[r["seed"], r["epochs_run"], f"{r['to_90_s']:.0f} s", f"{r[key]:.3f}"] for r in rows]
    reach, accs = [r["to_90_s"] for r in rows], [r[key] for r in rows]
    out.append(
        [
            bold("mean (min-max)"),
            f"{statistics.mean(r['epochs_run'] for r in rows):.1f}",
            f"{statistics.mean(reach):.0f} s ({min(reach):.0f}-{max(reach):.0f})",
            bold(f"{statistics.mean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f})"),
        ]
    )
    b = f"{budget:g} min"
    return md(["seed", f"epochs in {b}", "first epoch end >= 90%", f"test acc. at {b}"], out)


def _mean_range(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return (
        f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f}, {len(values)} seeds)"
    )


@renderer
def time_budgets(files: list[dict[str, Any]]) -> str:
    """Per budget: the reference's and cnnexp's test accuracy (mean of seeds), their gap, cnnexp's epochs and use."""
    rows = [r for f in files for r in f["rows"]]
    budgets = sorted({b for f in files for b in f["budgets_minutes"]})
    out = []
    for b in budgets:
        key = f"acc_{b:g}min"
        ref = [r[key] for r in rows if r["side"] == "baseline" and r.get(key) is not None]
        ours = [r for r in rows if r["side"] == "cnnexp" and r.get(key) is not None]
        accs = [r[key] for r in ours]
        gap = f"{100 * (statistics.mean(accs) - statistics.mean(ref)):+.2f}" if ref and accs else "-"
        epochs = ", ".join(f"{r['epochs_run']} (planned {r.get('planned_epochs', '-')})" for r in ours) or "-"
        used = ", ".join(f"{100 * r['used_fraction']:.1f}%" for r in ours if "used_fraction" in r) or "-"
        out.append([f"{b:g} min", _mean_range(ref, 4), bold(_mean_range(accs, 4)), gap, epochs, used])
    headers = ["budget", "Keras example CNN", _cnnexp_label(files), "gap (points)", "cnnexp epochs", "budget used"]
    return md(headers, out, left=1)


def _cnnexp_label(files: list[dict[str, Any]]) -> str:
    """ "cnnexp default", or cnnexp with the ``--set`` overrides its runs were given (one set per table)."""
    sets = {tuple(f.get("overrides", [])) for f in files}
    if len(sets) > 1:
        raise ValueError(f"one table mixes cnnexp runs with different --set overrides: {sorted(sets)}")
    (overrides,) = sets
    return f"cnnexp, {', '.join(overrides)}" if overrides else "cnnexp default"


def _down(x: float) -> str:
    """A strict lower bound to 2 decimals, rounded so that it still holds."""
    return f"{math.floor(x * 100) / 100:.2f}"


def _up(x: float) -> str:
    return f"{math.ceil(x * 100) / 100:.2f}"


@renderer
def time_to_90(files: list[dict[str, Any]]) -> str:
    """The reference's first epoch end at >= 90% against the budgets within which cnnexp did and did not reach it."""
    ref = [r["to_90_s"] for f in files for r in f["rows"] if r["side"] == "baseline" and r.get("to_90_s") is not None]
    ends = [
        (b * 60, r[f"acc_{b:g}min"])
        for f in files
        for b in f["budgets_minutes"]
        for r in f["rows"]
        if r["side"] == "cnnexp" and r.get(f"acc_{b:g}min") is not None
    ]
    reached = min((s for s, acc in ends if acc >= 0.90), default=None)
    missed = [(s, acc) for s, acc in ends if acc < 0.90 and (reached is None or s < reached)]
    ours = []
    if missed:
        s, acc = max(missed)
        ours.append(f"not within {s:.0f} s (a {s / 60:g}-minute run ends at {acc:.3f})")
    if reached:
        ours.append(f"within {reached:.0f} s (a {reached / 60:g}-minute run ends at >= 0.90)")
    median = statistics.median(ref) if ref else None
    if median and missed:
        ratio = f"> {_down(max(missed)[0] / median)}x" + (f", <= {_up(reached / median)}x" if reached else "")
    else:
        ratio = f"<= {_up(reached / median)}x" if median and reached else "-"
    cells = [
        f"{median:.0f} s (median of {len(ref)}: {', '.join(f'{v:.0f}' for v in ref)})" if ref else "-",
        "; ".join(ours) or "-",
        bold(ratio),
    ]
    return md(["Keras example CNN: first epoch end >= 90%", "cnnexp default, budgeted", "cnnexp / reference"], [cells])


@renderer
def achieved_gflops(files: list[dict[str, Any]]) -> str:
    """The budgeted cnnexp runs' measured training step as GFLOP/s (3x the forward FLOPs) against fp32 peak."""
    out = []
    for f in files:
        for run in f["runs"]:
            if run["side"] != "cnnexp" or not run.get("step_seconds"):
                continue
            gflops = 3 * run["forward_flops"] * run["batch_size"] / run["step_seconds"] / 1e9
            peak = run["peak_gflops"]["fp32_peak_gflops"]
            out.append(
                [
                    f"seed {run['seed']}, {run['budget_minutes']:g} min",
                    f"{run['forward_flops'] / 1e6:.1f}",
                    f"{run['batch_size'] / run['step_seconds']:,.0f}",
                    f"{gflops:.1f}",
                    f"{peak:.0f} ({run['peak_gflops']['cores']} cores x {run['peak_gflops']['ghz']:.2f} GHz x "
                    f"{run['peak_gflops']['flops_per_cycle']})",
                    f"{100 * gflops / peak:.0f}%",
                ]
            )
    headers = ["run", "forward MFLOPs / image", "training images/s", "GFLOP/s", "fp32 peak GFLOP/s", "of peak"]
    return md(headers, out, left=1)


@renderer
def recipe_ablation(files: list[dict[str, Any]]) -> str:
    """Each technique against the default: speed (epochs in the budget) and test accuracy after them."""
    out = []
    for f in files:
        for r in f["rows"]:
            out.append(
                [
                    r["variant"],
                    f"{r['params']:,}",
                    f"{r['epoch_s']:.1f}",
                    r["epochs"],
                    f"{r['test_accuracy']:.4f}",
                    "-" if r["variant"] == "default" else f"{r['vs_default_pt']:+.2f}",
                    f"{r['tta_gain_pt']:+.2f}",
                ]
            )
    budget = files[0]["budget_minutes"]
    headers = ["variant", "parameters", "s / epoch", f"epochs in {budget:g} min", "test acc.", "vs default (points)"]
    return md(headers + ["+ flip x translate TTA (points)"], out, left=1)


@renderer
def recipe_ablation_seeds(files: list[dict[str, Any]]) -> str:
    """The same variants over several seeds (one file each, equal epochs): each seed, the mean, the wins."""
    seeds = [f["seed"] for f in files]
    acc = {r["variant"]: {} for r in files[0]["rows"]}
    for f in files:
        for r in f["rows"]:
            acc[r["variant"]][f["seed"]] = r["test_accuracy"]
    base = acc["default"]
    mean_base = statistics.mean(base.values())
    out = []
    for variant, by_seed in acc.items():
        mean = statistics.mean(by_seed.values())
        wins = sum(by_seed[s] > base[s] for s in seeds)
        gap = "-" if variant == "default" else f"{100 * (mean - mean_base):+.2f}"
        vs = "-" if variant == "default" else f"{wins} of {len(seeds)}"
        out.append([variant, *(f"{by_seed[s]:.4f}" for s in seeds), f"{mean:.4f}", gap, vs])
    headers = ["variant", *(f"seed {s}" for s in seeds), "mean", "vs default (points)", "seeds above default"]
    return md(headers, out, left=1)


@renderer
def fused_batch_norm(files: list[dict[str, Any]]) -> str:
    """Keras 3's batch norm against TensorFlow's fused kernel: train-step time, interleaved samples."""
    steps = {name: [r["step_ms"] for r in runs] for name, runs in files[0]["samples"].items()}
    med = {name: statistics.median(ms) for name, ms in steps.items()}
    out = [[name, len(ms), f"{min(ms):.1f}-{max(ms):.1f}", f"{med[name]:.1f}"] for name, ms in steps.items()]
    ratio = med["keras batch norm"] / med["fused batch norm"]
    out.append(["Keras / fused (medians)", "-", "-", f"{ratio:.2f}x"])
    return md(["batch norm", "samples", "train step ms (range)", "median ms"], out, left=1)


@renderer
def time_to_accuracy_points(files: list[dict[str, Any]]) -> str:
    """Runs reported only as (seconds, test accuracy) points, as from another machine."""
    out = []
    for f in files:
        for r in f["rows"]:
            points = ", ".join(f"{p['test_accuracy']:.4f} at {p['seconds']:.0f} s" for p in r["points"])
            out.append([f["machine"]["cpu"], r["run"], points])
    return md(["CPU", "run", "test accuracy at (training seconds)"], out)


def _at_budget(run: dict[str, Any], minutes: float) -> tuple[float, str] | None:
    """The test accuracy a run held at the budget, and where that figure comes from."""
    if f"acc_{minutes:g}min" in run:
        return run[f"acc_{minutes:g}min"], f"{run['epochs_run']} epochs"
    inside = [p for p in run.get("points", []) if p["seconds"] is not None and p["seconds"] <= minutes * 60]
    return (inside[-1]["test_accuracy"], f"at {inside[-1]['seconds']:.0f} s") if inside else None


@renderer
def cpu_side_by_side(files: list[dict[str, Any]]) -> str:
    """Test accuracy at 10 minutes per side, one column per machine (the first file's budget)."""
    minutes = files[0]["budgets_minutes"][0]
    sides = {"baseline": "Keras example CNN", "cnnexp": f"cnnexp default, {minutes:g}-minute budget"}
    out = []
    for side, label in sides.items():
        cells = []
        for f in files:
            runs = [r for r in f["rows"] if r["side"] == side and r.get("budget_minutes", minutes) == minutes]
            run = runs[0] if runs else None
            got = run and _at_budget(run, minutes)
            cells.append(f"{got[0]:.4g} ({got[1]})" if got else "-")
        out.append([label, *cells])
    headers = [f"test accuracy at {minutes:g} min", *(f["machine"]["cpu"] for f in files)]
    return md(headers, out)


@renderer
def probes(files: list[dict[str, Any]]) -> str:
    rows = [r for f in files for r in f["rows"]]
    top = max(r["test_accuracy_flip_tta"] for r in rows)
    out = [
        [
            r["variant"],
            r["epochs_run"],
            f"{r['params']:,}",
            f"{r['test_accuracy']:.4f}",
            bold(f"{r['test_accuracy_flip_tta']:.4f}", r["test_accuracy_flip_tta"] == top),
        ]
        for r in rows
    ]
    return md(["variant", "epochs in 10 min", "parameters", "test acc.", "with flip TTA"], out)


# Section 2: compute ----------------------------------------------------------------------------

LABELS = {
    "default (deterministic, oneDNN on)": "default (op determinism on, oneDNN on)",
    "oneDNN off": "oneDNN off (`TF_ENABLE_ONEDNN_OPTS=0`)",
    "not deterministic": "op determinism off",
    "torch backend": "Keras torch backend (torch 2.x CPU)",
    "jax backend": "Keras JAX backend (jax[cpu])",
    "XLA (jit_compile)": "XLA (`jit_compile=True`)",
    "steps_per_execution=8": "`steps_per_execution=8`",
    "batch 256": "batch 256 (same images per turn)",
    "separable convs": "separable convolutions",
}
RESOLVED = 0.05  # a ratio counts (bold) only when every round is at least 5% away from the reference


@renderer
def compute_processes(files: list[dict[str, Any]]) -> str:
    samples = files[0]["process_samples"]
    ref_name = next(iter(samples))
    ref = [s["images_per_s"] for s in samples[ref_name]]
    rounds = len(ref)
    out = []
    for name, runs in samples.items():
        ips = [s["images_per_s"] for s in runs]
        ratio = statistics.median(ips) / statistics.median(ref)
        per_round = [x / r for x, r in zip(ips, ref, strict=True)]
        resolved = all(q <= 1 - RESOLVED for q in per_round) or all(q >= 1 + RESOLVED for q in per_round)
        cell = "1.00" if name == ref_name else bold(f"{ratio:.2f}", resolved) + ("" if resolved else " (noise)")
        mflops = runs[0]["forward_mflops"]
        gflops = 3 * mflops * statistics.median(ips) / 1000
        out.append([LABELS.get(name, name), *(n(x) for x in ips), cell, f"{mflops:.1f}", f"{gflops:.0f}"])
    headers = ["variant", *(f"round {i + 1}" for i in range(rounds)), "median vs default", "fwd MFLOPs"]
    return md([*headers, "GFLOP/s (median)"], out)


@renderer
def compute_in_process(files: list[dict[str, Any]]) -> str:
    data = files[0]
    peak = data["peak"]["fp32_peak_gflops"]
    rows = data["in_process"]
    ref = rows[0]["images/s"]
    out = []
    for i, r in enumerate(rows):
        ratio = r["images/s"] / ref
        gflops = 3 * r["fwd MFLOPs"] * r["images/s"] / 1000
        cell = f"{ratio:.2f}" if i == 0 else bold(f"{ratio:.2f}", abs(ratio - 1) >= RESOLVED)
        name = LABELS.get(r["variant"], r["variant"])
        share = f"{100 * gflops / peak:.0f}%"
        out.append([name, n(r["images/s"]), cell, f"{gflops:.0f}", share, f"{r['fwd MFLOPs']:.1f}"])
    return md(["variant", "images/s", "vs default", "GFLOP/s", "% of fp32 peak", "fwd MFLOPs"], out)
