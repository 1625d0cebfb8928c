"""Parallel workers (issue 14): near-duplicate configurations from 2 workers on one journal study,
TPE with and without ``constant_liar``.

What is measured is the sampler, not the CPU: the "training" is a cheap synthetic objective (a smooth
function of the normalised parameters of the real search space, drawn by cnnexp's own ``sample()``)
that sleeps ``--trial-seconds`` (+-20%) so the two workers' trials overlap as real trials do; the
sleep uses no CPU. Each round: a fresh journal file storage (``journal:PATH``, cnnexp's storage for
several workers on one machine), two worker processes with their own seeds (as joining cnnexp
workers draw), each running ``--trials`` trials with ``storage.make_sampler("tpe", seed,
constant_liar=...)``. The two ways run alternately, same seeds for both.

Two configurations are near-duplicates when every categorical parameter is equal, every numeric one
is within ``--tolerance`` of its range (log scale for log parameters) and both have the same active
parameters. Counted: near-duplicate pairs among all trials, among trials that ran at the same time
(their start-to-end intervals overlap: what constant_liar is for), and the best value reached.

    python -m benchmarks.parallel_workers                  # 10 rounds x 2 ways: a few minutes
    python -m benchmarks.parallel_workers --smoke --out /tmp/bench
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import interleave, parser, spread, table, write_result

ROOT = Path(__file__).resolve().parents[1]
NAME = "parallel_workers"
WAYS = {"constant_liar=False": False, "constant_liar=True": True}
DEFAULTS = {"space": "search_spaces/fashion_mnist.yaml", "trials": 30, "trial_seconds": 0.5}
SMOKE = {"space": "search_spaces/digits.yaml", "trials": 6, "trial_seconds": 0.05}


def build_parser():
    p = parser((__doc__ or "").splitlines()[0], repeats=10)
    p.add_argument("--space", help=f"search-space YAML (default {DEFAULTS['space']})")
    p.add_argument("--trials", type=int, help=f"trials per worker (default {DEFAULTS['trials']})")
    p.add_argument("--trial-seconds", type=float, help=f"sleep per trial (default {DEFAULTS['trial_seconds']})")
    p.add_argument("--tolerance", type=float, default=0.05, help="near-duplicate: share of each range (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="round r's workers use seeds 2(seed + r) and 2(seed + r) + 1")
    return p


def unit(space, params: dict[str, Any]) -> dict[str, Any]:
    """Numeric parameters mapped to [0, 1] of their range (log scale if log), categorical ones as they are."""
    out = {}
    for p in space.params:
        if p.key not in params:
            continue
        v = params[p.key]
        if p.type == "categorical":
            out[p.key] = v
        elif p.log:
            out[p.key] = (math.log(v) - math.log(p.low)) / (math.log(p.high) - math.log(p.low))
        else:
            out[p.key] = (v - p.low) / (p.high - p.low) if p.high > p.low else 0.0
    return out


def synthetic_score(space, params: dict[str, Any]) -> float:
    """A smooth objective with one optimum: every numeric parameter best at 0.3 of its range, and the
    first choice of each categorical worth a little more; deterministic in the parameters."""
    score = 1.0
    for key, value in unit(space, params).items():
        if isinstance(value, float):
            score -= (value - 0.3) ** 2
        else:
            choices = next(p.choices for p in space.params if p.key == key)
            score -= 0.05 * choices.index(value) / max(1, len(choices) - 1)
    return score


def near_duplicates(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> bool:
    if a.keys() != b.keys():
        return False
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, float) and isinstance(vb, float):
            if abs(va - vb) > tolerance:
                return False
        elif va != vb:
            return False
    return True


def _worker(journal: str, study_name: str, space_path: str, n_trials: int, seed: int, liar: bool, pause: float):
    import optuna

    from cnnexp.tuning.space import sample
    from cnnexp.tuning.space_file import load_space
    from cnnexp.tuning.storage import make_sampler, make_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, jitter = load_space(space_path), random.Random(seed)
    study = optuna.load_study(
        study_name=study_name,
        storage=make_storage(f"journal:{journal}"),
        sampler=make_sampler("tpe", seed, constant_liar=liar),
    )

    def objective(trial):
        params = sample(trial, space)
        time.sleep(pause * jitter.uniform(0.8, 1.2))  # the trial "trains"; the other worker samples meanwhile
        return synthetic_score(space, params)

    study.optimize(objective, n_trials=n_trials)


def run_round(space_path: str, n_trials: int, pause: float, seed: int, liar: bool, tolerance: float) -> dict:
    import optuna

    from cnnexp.tuning.space_file import load_space
    from cnnexp.tuning.storage import make_storage

    space = load_space(space_path)
    with tempfile.TemporaryDirectory(prefix="cnnexp-bench-par-") as tmp:
        journal = str(Path(tmp) / "study.log")
        optuna.create_study(study_name="par", storage=make_storage(f"journal:{journal}"), direction="maximize")
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as two `cnnexp tune` processes are
        procs = [
            ctx.Process(target=_worker, args=(journal, "par", space_path, n_trials, 2 * seed + w, liar, pause))
            for w in range(2)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"a worker failed: exit codes {[p.exitcode for p in procs]}")
        trials = optuna.load_study(study_name="par", storage=make_storage(f"journal:{journal}")).trials
    units = [unit(space, t.params) for t in trials]
    pairs = dupes = concurrent = concurrent_dupes = 0
    for i, j in itertools.combinations(range(len(trials)), 2):
        a, b = trials[i], trials[j]
        dup = near_duplicates(units[i], units[j], tolerance)
        overlap = a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete
        pairs, dupes = pairs + 1, dupes + dup
        concurrent, concurrent_dupes = concurrent + overlap, concurrent_dupes + (dup and overlap)
    complete = [t.value for t in trials if t.value is not None]
    return {
        "trials": len(trials),
        "complete": len(complete),
        "near_duplicate_pairs": dupes,
        "concurrent_pairs": concurrent,
        "concurrent_near_duplicate_pairs": concurrent_dupes,
        "distinct_configs": len({tuple(sorted(t.params.items())) for t in trials}),
        "best_value": max(complete) if complete else None,
        "pairs": pairs,
        "params": [t.params for t in trials],
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = SMOKE if args.smoke else DEFAULTS
    space = str(Path(args.space) if args.space else ROOT / preset["space"])
    n_trials = args.trials or preset["trials"]
    pause = preset["trial_seconds"] if args.trial_seconds is None else args.trial_seconds
    repeats = 1 if args.smoke else args.repeats
    rounds: dict[str, list[dict]] = {way: [] for way in WAYS}

    def side(way: str):
        counter = itertools.count()

        def run() -> dict[str, float]:
            r = next(counter)
            result = run_round(space, n_trials, pause, args.seed + r, WAYS[way], args.tolerance)
            rounds[way].append({"round": r + 1, **result})
            keys = ("trials", "near_duplicate_pairs", "concurrent_near_duplicate_pairs", "best_value")
            return {k: float(result[k]) for k in keys if result[k] is not None}

        return run

    interleave({way: side(way) for way in WAYS}, repeats)
    keys = ("near_duplicate_pairs", "concurrent_near_duplicate_pairs", "distinct_configs", "best_value")
    rows = []
    for way, results in rounds.items():
        row: dict[str, Any] = {"sampler": f"TPE, {way}", "rounds": len(results), "trials": results[0]["trials"]}
        for key in keys:
            values = [r[key] for r in results if r[key] is not None]
            s = spread(values) if values else None
            row[key] = "n/a" if s is None else f"{s['median']:.4g} [{s['min']:.4g}-{s['max']:.4g}]"
        rows.append(row)
    settings = {
        "space": space,
        "workers": 2,
        "trials_per_worker": n_trials,
        "trial_seconds": pause,
        "tolerance": args.tolerance,
        "repeats": repeats,
        "seed": args.seed,
        "objective": "synthetic (benchmarks/parallel_workers.py: synthetic_score), a sleep per trial",
        "storage": "journal file",
        "smoke": args.smoke,
    }
    print(f"\nNear-duplicate configurations, 2 workers, median [min-max] over {repeats} round(s): {settings}\n")
    print(table(rows, ["sampler", "rounds", "trials", *keys]))
    write_result(args.out, NAME, {"settings": settings, "summary": rows, "rounds": rounds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
