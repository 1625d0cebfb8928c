"""Rank correlation (issue 14): does a configuration's score at a rung predict its final score?

Successive halving stops trials by their rank at a rung; it pays only if that rank predicts the rank
at the end. For N configurations (the first N draws of one seeded RandomSampler from the search
space, :func:`benchmarks.common.draw_configs`, the same for every schedule), each is trained under
each learning-rate schedule of ``--schedules`` and its validation accuracy read at every epoch:

- ``onecycle`` (the default schedule) and ``wsd`` (warm-up, constant, cool-down in the last 20%):
  one run of the full trial length; the score at epoch e is what a pruner sees at that epoch in a
  trial (so every epoch is a candidate rung, at no extra cost);
- ``linear`` ("Budgeted Training": decay to zero at the run's own budget): the pruner's rungs are
  separate runs of that many epochs, each annealed to zero at its end, and the full-length run.

The final score is the full-length run's best validation accuracy (tune's objective). Per schedule
and rung: Spearman's rho between the rung scores and the final scores (scipy.stats.spearmanr), with
the seconds the rung cost, summed over the configurations. Fidelity is epochs (the training subset
is fixed by ``--train-subset``); with ``--subset-rungs N ...`` also the training subset: each
configuration then also trains the full epochs on N of those images (validation stays whole), a rung
whose score is ranked the same way, so the two fidelities compare per second. Training uses cnnexp's
own ``fit`` (the function train() and every trial call), without MLflow. The JSON keeps every
configuration's params and per-epoch scores.

    python -m benchmarks.rank_correlation                 # 27 configurations x 3 schedules: ~30 min on 2 Zen 5 cores
    python -m benchmarks.rank_correlation --schedules wsd --subset-rungs 222 667   # epochs or images?
    python -m benchmarks.rank_correlation --smoke --out /tmp/bench
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.common import SMOKE_CONFIG, draw_configs, parser, table, write_result

ROOT = Path(__file__).resolve().parents[1]
NAME = "rank_correlation"
SCHEDULES = ("onecycle", "wsd", "linear")
IN_TRIAL = ("onecycle", "wsd")  # a rung's score is read from the full-length run's history
DEFAULTS = {"space": "search_spaces/fashion_mnist.yaml", "configs": 27, "trial_epochs": 9, "train_subset": 2000}
SMOKE = {"space": "search_spaces/digits.yaml", "configs": 3, "trial_epochs": 2, "train_subset": 300}


def build_parser():
    p = parser((__doc__ or "").splitlines()[0], repeats=1)
    p.add_argument("--space", help=f"search-space YAML (default {DEFAULTS['space']})")
    p.add_argument("--configs", type=int, help=f"configurations (default {DEFAULTS['configs']})")
    p.add_argument("--trial-epochs", type=int, help=f"final budget in epochs (default {DEFAULTS['trial_epochs']})")
    p.add_argument("--train-subset", type=int, help=f"training images (default {DEFAULTS['train_subset']})")
    p.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    p.add_argument("--warmup-epochs", type=float, default=0.5, help="wsd and linear warm-up (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the sampler seed that draws the configurations")
    p.add_argument("--subset-rungs", type=int, nargs="*", default=[], help="also rungs of the full epochs on N images")
    return p


def train_curve(space, params: dict[str, Any], overrides: dict[str, Any], split_cache: dict) -> dict[str, Any]:
    """Validation accuracy after each epoch and the seconds each epoch took, for one config."""
    import keras

    from cnnexp.data.sources import load_dataset
    from cnnexp.data.split import split_dataset
    from cnnexp.training.train import fit, set_seeds

    keras.backend.clear_session()
    cfg = space.config(params, extra=overrides)
    key = (cfg.data.dataset, cfg.data.train_subset, cfg.train.seed)
    if key not in split_cache:  # the same split for every configuration
        split_cache[key] = split_dataset(load_dataset(cfg.data), cfg.data, cfg.train.seed)
    set_seeds(cfg.train)

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t)

    seconds: list[float] = []
    history = fit(cfg, split_cache[key], [Clock()]).history
    return {"val_accuracy": history["val_accuracy"], "epoch_s": seconds}


def spearman(xs: list[float], ys: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None  # undefined: too few points or a constant side
    rho = spearmanr(xs, ys).statistic
    return None if math.isnan(rho) else float(rho)


def correlate(runs: list[dict[str, Any]], schedule: str, rungs: list[int]) -> list[dict[str, Any]]:
    """Per rung: rho between the rung scores and the final scores, and the rung's cost in seconds."""
    finals = [max(r["final"]["val_accuracy"]) for r in runs]

    def own_runs(curves: list[dict[str, Any]]) -> tuple[list[float], float]:
        """A rung that is a run of its own (budgeted or on a subset): its best score, and all it cost."""
        return [max(c["val_accuracy"]) for c in curves], sum(sum(c["epoch_s"]) for c in curves)

    rows = []
    for subset in sorted({int(k) for r in runs for k in r.get("subsets", {})}):
        scores, cost = own_runs([r["subsets"][str(subset)] for r in runs])
        rows.append({"schedule": schedule, "rung_subset": subset, "spearman": spearman(scores, finals), "cost_s": cost})
    for rung in rungs:
        if schedule in IN_TRIAL:
            scores = [r["final"]["val_accuracy"][rung - 1] for r in runs]
            cost = sum(sum(r["final"]["epoch_s"][:rung]) for r in runs)
        else:
            scores, cost = own_runs([r["rungs"][str(rung)] for r in runs])
        rows.append({"schedule": schedule, "rung_epoch": rung, "spearman": spearman(scores, finals), "cost_s": cost})
    return rows


def rank_correlations(rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spearman's rho between each epoch's score and the final score over the unpruned studies' trials
    (every trial reports every epoch it runs there): per round, and over all rounds' configurations
    pooled. A trial early stopping ended counts at the epochs it reached."""
    per_round = [[t for t in r["studies"]["unpruned"]["trials"] if t["value"] is not None] for r in rounds]
    longest = max((len(t["curve"]) for done in per_round for t in done), default=0)
    rows = []
    for epoch in range(1, longest):
        reached = [[t for t in done if len(t["curve"]) >= epoch] for done in per_round]
        row: dict[str, Any] = {"rung_epoch": epoch}
        for i, done in enumerate([*reached, [t for d in reached for t in d]]):
            rho = spearman([t["curve"][epoch - 1] for t in done], [t["value"] for t in done])
            row["pooled" if i == len(reached) else f"round {i + 1}"] = rho
        row["configurations"] = sum(len(d) for d in reached)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    preset = SMOKE if args.smoke else DEFAULTS
    space_path = Path(args.space) if args.space else ROOT / preset["space"]
    epochs = args.trial_epochs or preset["trial_epochs"]
    subset = preset["train_subset"] if args.train_subset is None else args.train_subset
    n = args.configs or preset["configs"]

    from cnnexp.tuning.space_file import load_space
    from cnnexp.tuning.storage import rung_epochs

    space = load_space(space_path)
    configs = draw_configs(space_path, n, args.seed)
    base = {"train.epochs": epochs, "data.train_subset": subset or None, "train.warmup_epochs": args.warmup_epochs}
    base["train.early_stopping_patience"] = 0  # every configuration trains its whole budget
    if args.smoke:
        base.update({k: v for k, v in SMOKE_CONFIG.items() if k != "data.dataset"})
    from cnnexp.training.schedules import warmup_epochs

    # The rungs Optuna's successive halving would cut at (make_pruner's rule), per schedule's warm-up.
    warmups = {
        s: warmup_epochs(space.config(configs[0], extra={**base, "train.lr_schedule": s}).train) for s in SCHEDULES
    }
    sha_rungs = {s: rung_epochs("sha", epochs, warmups[s]) for s in SCHEDULES}
    split_cache: dict = {}
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in args.schedules}
    for i, params in enumerate(configs):
        for schedule in args.schedules:  # schedules alternate per configuration: a speed drift hits all alike
            over = {**base, "train.lr_schedule": schedule}
            run: dict[str, Any] = {
                "config": i,
                "params": params,
                "final": train_curve(space, params, over, split_cache),
            }
            if schedule not in IN_TRIAL:
                run["rungs"] = {  # a rung at the full budget is the full-length run itself
                    str(r): train_curve(space, params, {**over, "train.epochs": r}, split_cache)
                    if r < epochs
                    else run["final"]
                    for r in sha_rungs[schedule]
                }
            if args.subset_rungs:
                run["subsets"] = {
                    str(k): train_curve(space, params, {**over, "data.train_subset": k}, split_cache)
                    for k in args.subset_rungs
                }
            results[schedule].append(run)
            print(f"  config {i + 1}/{n} {schedule}: final {max(run['final']['val_accuracy']):.4f}", flush=True)

    rows = []
    for schedule, runs in results.items():
        rungs = list(range(1, epochs)) if schedule in IN_TRIAL else sha_rungs[schedule]
        for row in correlate(runs, schedule, rungs):
            row["sha_rung"] = row.get("rung_epoch") in sha_rungs[schedule]
            rows.append(row)
    settings = {
        "space": str(space_path),
        "configs": n,
        "trial_epochs": epochs,
        "train_subset": subset,
        "schedules": args.schedules,
        "warmup_epochs": args.warmup_epochs,
        "seed": args.seed,
        "sha_rungs": {s: sha_rungs[s] for s in args.schedules},
        "subset_rungs": args.subset_rungs,
        "smoke": args.smoke,
    }
    print(f"\nRank correlation (Spearman, rung score vs final score), {n} configurations: {settings}\n")
    print(table(rows, ["schedule", "rung_epoch", "rung_subset", "sha_rung", "spearman", "cost_s"]))
    write_result(args.out, NAME, {"settings": settings, "correlations": rows, "runs": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
