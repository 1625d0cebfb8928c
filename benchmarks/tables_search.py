"""The tables of docs/performance.md section 5: search efficiency, the pruner replay, rank correlation,
parallel workers and the 60-minute tune (registered in ``tables.RENDERERS`` like the others)."""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.tables import bold, md, n, renderer

# Section 5: search efficiency and the 60-minute tune -------------------------------------------


PRUNER_NAMES = {"sha": "successive halving", "hyperband": "Hyperband", "median": "median"}


def _target(rnd: dict[str, Any], tolerance: float) -> float:
    return rnd["studies"]["unpruned"]["summary"]["best_val_accuracy"] - tolerance


def _reach(got: dict[str, Any] | None, short: float | None = None) -> str:
    if got is None:
        return "never" + ("" if short is None else f" (short by {100 * short:.1f} point)")
    where = f"trial {got['trial']}" if "trial" in got else f"after {got['trials']} trial{'s' * (got['trials'] != 1)}"
    return f"{n(got['images'])} ({where})"


def _ratios(r: dict[str, Any]) -> str:
    if r["images"] is None:
        return "n/a"
    return f"{r['images']:.2f} / {r['wall']:.2f}"


@renderer
def search_efficiency(files: list[dict[str, Any]]) -> str:
    data = files[0]
    tol = data["settings"]["tolerance"]
    rounds = data["rounds"]
    best = max(s["summary"]["best_val_accuracy"] for r in rounds for s in r["studies"].values())
    out = []
    for rnd in rounds:
        target = _target(rnd, tol)
        for side, study in rnd["studies"].items():
            s = study["summary"]
            label = "unpruned" if side == "unpruned" else PRUNER_NAMES[side.removeprefix("pruned-")]
            reach = rnd["to_target"][side]
            short = None if reach else target - s["best_val_accuracy"]
            ratio = "-" if side == "unpruned" else _ratios(rnd["ratios"][side])
            out.append(
                [
                    f"{rnd['round']} ({rnd['seed']})",
                    f"{label}, {s['trials']} trials",
                    f"{s['complete']} / {s['pruned']}",
                    bold(f"{s['best_val_accuracy']:.3f}", s["best_val_accuracy"] == best and side != "unpruned"),
                    n(s["images"]),
                    f"{s['wall_s']:.0f}",
                    f"{target:.3f}",
                    _reach(reach, short),
                    ratio,
                ]
            )
    headers = ["round (seed)", "study", "complete / pruned", "best val. acc.", "training images", "wall s", "target"]
    return md([*headers, "images to target", "ratio (images / wall)"], out)


@renderer
def search_efficiency_brief(files: list[dict[str, Any]]) -> str:
    out = []
    for rnd in files[0]["rounds"]:
        best = {side: s["summary"]["best_val_accuracy"] for side, s in rnd["studies"].items()}
        (pruned,) = (side for side in rnd["studies"] if side != "unpruned")
        reach = rnd["to_target"]
        row = [f"{rnd['round']} ({rnd['seed']})", f"{best['unpruned']:.3f}", f"{best[pruned]:.3f}"]
        out.append([*row, _reach(reach["unpruned"]), _reach(reach[pruned]), _ratios(rnd["ratios"][pruned])])
    headers = ["round (seed)", "unpruned best", "Hyperband best", "unpruned images to target"]
    return md([*headers, "Hyperband images to target", "ratio images / wall"], out)


@renderer
def search_efficiency_ratios(files: list[dict[str, Any]]) -> str:
    """Per pruned study: the compute ratio to the unpruned best's target, median [min-max] over rounds."""
    data = files[0]

    def cell(spread: dict[str, float] | None) -> str:
        return "n/a" if spread is None else f"{spread['median']:.2f} [{spread['min']:.2f}-{spread['max']:.2f}]"

    def whole(side: str, key: str) -> str:  # the whole study's compute, unpruned over pruned
        ratios = [r["studies"]["unpruned"]["summary"][key] / r["studies"][side]["summary"][key] for r in data["rounds"]]
        return cell({"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)})

    out = []
    for r in data["ratios"]:
        short = "" if r["max_shortfall"] is None else f" (short by {100 * r['max_shortfall']:.1f} point)"
        met = " / ".join("yes" if r[f"{k}_meets_target"] else "no" for k in ("images", "wall"))
        row = [PRUNER_NAMES[r["study"].removeprefix("pruned-")], f"{r['reached']}/{r['rounds']}{short}"]
        row += [f"{r['survived']}/{r['rounds']}", cell(r["images_ratio"]), cell(r["wall_ratio"]), met]
        out.append([*row, whole(r["study"], "images"), whole(r["study"], "wall_s")])
    headers = ["pruner", "rounds reaching the target", "rounds the winner (or one within 0.5) survived"]
    headers += ["images ratio to target", "wall ratio to target", ">= 3x (images / wall)"]
    return md([*headers, "whole study: images ratio", "whole study: wall ratio"], out)


def _rho(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


@renderer
def rank_correlation_unpruned(files: list[dict[str, Any]]) -> str:
    """Spearman's rho of each epoch's score against the final one, over the unpruned studies' trials."""
    rows = files[0]["rank_correlation"]
    rounds = [k for k in rows[0] if k.startswith("round ")]
    # The rungs the pruned studies really cut at: the epochs their pruned trials ran.
    sha = {
        t["epochs"]
        for rnd in files[0]["rounds"]
        for side, study in rnd["studies"].items()
        if side != "unpruned"
        for t in study["trials"]
        if t["state"] == "PRUNED"
    }

    out = []
    for r in rows:
        epoch = f"{r['rung_epoch']}" + (" (a rung)" if r["rung_epoch"] in sha else "")
        out.append(
            [
                epoch,
                r["configurations"],
                bold(_rho(r["pooled"]), r["rung_epoch"] in sha),
                *map(_rho, (r[k] for k in rounds)),
            ]
        )
    return md(["epoch", "configurations", "rho, pooled", *(f"rho, {k}" for k in rounds)], out)


@renderer
def rank_correlation(files: list[dict[str, Any]]) -> str:
    """benchmarks.rank_correlation: per schedule and rung, rho against the final score and the rung's cost,
    as a share of what the full-length runs cost (so schedules of different speeds compare per second)."""
    data = files[0]
    out = []
    for schedule, runs in data["runs"].items():
        full_s = sum(sum(r["final"]["epoch_s"]) for r in runs)
        finals = [max(r["final"]["val_accuracy"]) for r in runs]
        best = f"{max(finals):.4f} / {statistics.median(finals):.4f}"
        for row in (r for r in data["correlations"] if r["schedule"] == schedule):
            if "rung_subset" in row:  # the other fidelity: every epoch, on fewer training images
                rung = f"all epochs on {n(row['rung_subset'])} images"
            else:
                rung = f"epoch {row['rung_epoch']}" + (" (a rung)" if row["sha_rung"] else "")
            rho, share = bold(_rho(row["spearman"]), row["sha_rung"]), f"{100 * row['cost_s'] / full_s:.0f}%"
            out.append([schedule, rung, len(runs), rho, n(row["cost_s"]), share, best])
    headers = ["schedule", "rung", "configurations", "rho vs final", "rung cost s", "of the full runs' cost"]
    return md([*headers, "final val. acc.: best / median"], out)


@renderer
def parallel_workers(files: list[dict[str, Any]]) -> str:
    """Per sampler: median [min-max] over rounds of near-duplicate pairs, all and among concurrent trials."""

    def cell(values: list[float], fmt: str = "g") -> str:
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

    out = []
    for way, rounds in files[0]["rounds"].items():
        row = [f"TPE, {way}", len(rounds), rounds[0]["trials"]]
        row += [cell([r[k] for r in rounds]) for k in ("near_duplicate_pairs", "concurrent_near_duplicate_pairs")]
        row += [cell([r["concurrent_pairs"] for r in rounds]), cell([r["best_value"] for r in rounds], ".3f")]
        out.append(row)
    headers = ["sampler", "rounds", "trials", "near-duplicate pairs", "near-duplicate pairs, concurrent trials"]
    return md([*headers, "concurrent pairs", "best synthetic value"], out)


@renderer
def tune_60min(files: list[dict[str, Any]]) -> str:
    data = files[0]
    t, rt, res, st = data["trials"], data["retrain"], data["result"], data["settings"]
    trials = (
        f"{t['n']} trials: {t['complete']} complete, {t['pruned']} pruned, {t['failed']} failed; best trial "
        f"{t['best_trial']}, validation accuracy {t['best_val_accuracy']:.3f}"
    )
    retrain = f"{rt['config']}; {rt['epochs']} epochs in its {rt['wall_min']} minutes"
    result = (
        f"**test accuracy {res['test_accuracy']:.3f}**, macro-F1 {res['test_macro_f1']:.3f}, "
        f"validation accuracy {res['val_accuracy']:.3f}"
    )
    fidelity = f"{n(st['trial_train_subset'])} images, {st['trial_epochs']} epochs each"
    out = [
        [f"trials ({fidelity})", trials, f"{t['wall_min']} min"],
        [f"retrain of trial {t['best_trial']} on all {n(rt['train_images'])} images", retrain, f"{rt['wall_min']} min"],
        ["**result**", result, f"**{res['wall_min']} min**"],
    ]
    return md(["phase", "what happened", "wall"], out)


@renderer
def pruner_replay(files: list[dict[str, Any]]) -> str:
    """Per pruner design: medians over each round's shuffled orders (then over rounds), and as drawn."""
    data = files[0]
    out = []
    for design in dict.fromkeys(r["design"] for r in data["rows"]):
        mine = [r for r in data["rows"] if r["design"] == design]

        def med(key: str, stat: str = "median", rows: list = mine) -> float:
            return statistics.median(r["shuffled"][key][stat] if stat else r["shuffled"][key] for r in rows)

        drawn = " / ".join(
            "lost" if r["as_drawn"]["images"] is None else f"{r['as_drawn']['images']:.2f}" for r in mine
        )
        row = [design, f"{med('images'):.2f}", f"{100 * med('p_images_3x', ''):.0f}%", f"{med('wall'):.2f}"]
        row += [f"{100 * med('survival', ''):.0f}%", f"{med('whole_images'):.2f}", f"{med('whole_wall'):.2f}", drawn]
        out.append(row)
    headers = ["pruner", "images ratio to target", "orders >= 3x", "wall ratio to target (est.)"]
    headers += ["orders the winner (or one within 0.5) survives", "whole study: images ratio"]
    return md([*headers, "whole study: wall ratio (est.)", "images ratio to target, order as drawn (per round)"], out)


@renderer
def deadline_tune(files: list[dict[str, Any]]) -> str:
    """One row per seed of ``cnnexp tune --time-budget-minutes M``: the plan, what ran, what it delivered."""
    data = files[0]
    minutes, overrun, target = (data["settings"][k] for k in ("minutes", "overrun_s", "target_accuracy"))
    out = []
    for s in data["studies"]:
        plan, got, rt, res = s["plan"], s["outcome"], s["retrain"], s["result"]
        st = got["states"]
        verdict = "within" if got["total_s"] <= minutes * 60 + overrun else "over"
        study = f"{got['total_s'] / 60:.1f} of {minutes:g} min ({verdict} {minutes + overrun / 60:g})"
        if s.get("command_wall_s"):  # the study's clock starts after Python, TensorFlow and MLflow load
            study += f"; the command {s['command_wall_s'] / 60:.1f}"
        trials = (
            f"{got['trials_run']} of {got['planned_trials']} planned: {st['COMPLETE']} complete, {st['PRUNED']} pruned"
        )
        phase, planned = got["trials_phase_s"] / 60, got["planned_trials_phase_s"] / 60
        trials += f", {st['FAIL']} failed; {phase:.1f} min (planned {planned:.1f})"
        c = rt["config"]
        config = f"{_network(c)}, {c.get('train.optimizer')}, batch {c.get('train.batch_size')}"
        retrain = f"trial {s['best_trial']} ({config}): {rt['epochs']} epochs on {n(rt['train_images'])} images"
        retrain += f" in {rt['wall_s'] / 60:.1f} min (planned {plan['retrain_s'] / 60:.1f})"
        acc = bold(f"{res['test_accuracy']:.4f}", res["test_accuracy"] >= target)
        out.append(
            [s["seed"], study, trials, f"{s['best_trial_value']:.4f}", retrain, f"{res['best_val_accuracy']:.4f}", acc]
        )
    headers = ["seed", "study wall", "trials", "best trial: val accuracy", "retrain of the best"]
    return md([*headers, "retrain: val accuracy", "test accuracy"], out)


@renderer
def deadline_tune_trials(files: list[dict[str, Any]]) -> str:
    """What the plan saw (the timed first trial) against what the other trials cost."""
    out = []
    for s in files[0]["studies"]:
        first, rest = s["trials"][0], s["trials"][1:]
        fp = first["params"]
        kernel = fp.get("model.kernel_size")
        config = f"{_network(fp)}, {kernel}x{kernel} kernels, batch {fp.get('train.batch_size')}"
        secs = [t["seconds"] for t in rest if t["seconds"] is not None]
        pruned = [t["epochs"] for t in rest if t["state"] == "PRUNED"]
        at = ", ".join(f"{pruned.count(e)} after epoch {e}" for e in sorted(set(pruned))) or "none"
        others = f"{statistics.median(secs):.0f} s [{min(secs):.0f}-{max(secs):.0f}]" if secs else "-"
        ratio = f"{first['seconds'] / statistics.median(secs):.1f}x" if secs else "-"
        complete = sum(t["state"] == "COMPLETE" for t in rest)
        out.append(
            [s["seed"], f"{first['seconds']:.0f} s, {first['epochs']} epochs", config, others, ratio, at, complete]
        )
    headers = ["seed", "first trial (timed)", "its configuration", "the other trials: median [range]"]
    return md([*headers, "first / median", "the others: pruned", "the others: complete"], out)


def _network(config: dict[str, Any]) -> str:
    """A trial's or run's network in words: "plain, 2 blocks of 48 filters"."""
    return f"{config.get('model.family')}, {config.get('model.blocks')} blocks of {config.get('model.filters')} filters"
