"""Pruner replay (issue 14): Optuna's own pruners run over measured learning curves, in many orders.

``benchmarks.search_efficiency``'s unpruned studies record every trial's validation accuracy after
every epoch. cnnexp's training is deterministic on a fixed seed: a pruned study's trials repeat the
unpruned ones' curves to the last digit up to the epoch they are stopped at (round 1 on the AMD EPYC:
27 of 27 identical). So what a pruner would have done with those configurations, in any order, follows
from the curves alone: each trial's curve is reported to a real Optuna study with the pruner under
test, epoch by epoch, until ``should_prune()`` says stop. This is how tabular HPO benchmarks (LCBench,
HPOBench) compare multi-fidelity methods, and it separates the pruner from the luck of the draw:
where the winner falls in the order decides "compute to the target" more than the pruner does.

Every design is replayed first in the order the round drew (for the design the pruned study ran, this
must reproduce that study: ``checks``), then in ``--orders`` seeded shuffles. Per order: training
images to reach the unpruned best within 0.5 point (unpruned compute to it over pruned compute),
the whole study's images, whether the winner or one within 0.5 point survives. Wall time is
estimated per trial as a fixed cost plus its measured seconds per epoch (fixed cost fitted from the
pruned study's trials against their unpruned twins), so the wall ratios are estimates, not clocks.

    python -m benchmarks.pruner_replay benchmarks/results/search_efficiency-amd-epyc.json
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import parser, spread, table, write_result
from benchmarks.search_efficiency import TARGET_RATIO, TOLERANCE

NAME = "pruner_replay"
WARMUP_EPOCHS = 0.5  # the benchmark's wsd trials' warm-up (train.warmup_epochs), which sets the first cut
# name -> (pruner, the step epoch 1 is reported as). 1 is cnnexp's numbering since issue 14 (step = epochs
# trained: successive halving's first rung after epoch 1); 0 was Keras's epoch index before it (after epoch 2).
DESIGNS = {
    "sha, rungs after epochs 2, 4": ("sha", 0),
    "sha, rungs after epochs 1, 3": ("sha", 1),
    "hyperband, first rung after epoch 2": ("hyperband", 0),
    "hyperband, first rung after epoch 1": ("hyperband", 1),
    "median, from epoch 2": ("median", 0),
    # The ceiling: a pruner that knows the final scores stops every other configuration after epoch 1.
    "oracle: only the winners go past epoch 1": ("oracle", 1),
}


def replay(
    curves: list[list[float]], values: list[float], order: list[int], kind: str, base: int, name: str = "replay"
) -> list[int]:
    """Epochs each trial of ``order`` trains under the pruner (its full length if never stopped), as tune()
    runs it: every epoch reported, every one but the last judged. ``name``: Hyperband's brackets hash it."""
    import optuna

    from cnnexp.tuning.storage import make_pruner

    if kind == "oracle":
        target = max(values) - TOLERANCE
        return [len(curves[i]) if values[i] >= target else 1 for i in order]
    epochs = max(len(c) for c in curves)
    study = optuna.create_study(
        study_name=name, direction="maximize", pruner=make_pruner(kind, epochs, WARMUP_EPOCHS, base)
    )
    ran = []
    for i in order:
        trial, n = study.ask(), len(curves[i])
        for e, value in enumerate(curves[i], 1):
            trial.report(value, step=e - 1 + base)
            if e < n and trial.should_prune():
                n = e
                break
        if n == len(curves[i]):
            study.tell(trial, values[i])
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        ran.append(n)
    return ran


def outcome(trials: list[dict[str, Any]], order: list[int], ran: list[int], cost: dict[str, list[float]]) -> dict:
    """Compute to the target (images, estimated wall) both ways, whole-study ratios, survival."""
    values = [t["value"] for t in trials]
    target = max(values) - TOLERANCE
    full = [len(t["curve"]) for t in trials]
    per_epoch, fixed = cost["per_epoch"], cost["fixed"]

    def spent(epochs_by_pos: list[int], stop_at: int | None) -> tuple[float, float]:
        pos = order[: (stop_at + 1) if stop_at is not None else len(order)]
        ep = epochs_by_pos[: len(pos)]
        return sum(ep), sum(fixed + e * per_epoch[i] for i, e in zip(pos, ep, strict=True))

    unpruned_epochs = [full[i] for i in order]
    first_u = next(k for k, i in enumerate(order) if values[i] >= target)
    first_p = next((k for k, i in enumerate(order) if ran[k] == full[i] and values[i] >= target), None)
    u_img, u_wall = spent(unpruned_epochs, first_u)
    whole_u, whole_u_wall = spent(unpruned_epochs, None)
    whole_p, whole_p_wall = spent(ran, None)
    out = {
        "whole_images": whole_u / whole_p,
        "whole_wall": whole_u_wall / whole_p_wall,
        "survived": first_p is not None,
        "complete": sum(r == full[i] for r, i in zip(ran, order, strict=True)),
    }
    if first_p is None:
        return out | {"images": None, "wall": None}
    p_img, p_wall = spent(ran, first_p)
    return out | {"images": u_img / p_img, "wall": u_wall / p_wall}


def costs(unpruned: list[dict[str, Any]], pruned: list[dict[str, Any]] | None, default: float = 0.0) -> dict[str, Any]:
    """Seconds per epoch of each configuration, and one fixed cost per trial (model, run, tracing) fitted from
    the twins: a trial stopped after k of n epochs took F + k s, its unpruned twin F + n s (no twins: default)."""
    fixed = []
    twins = {t["number"]: t for t in pruned or []}
    for u in unpruned:
        p, n = twins.get(u["number"]), len(u["curve"])
        if p and 0 < p["epochs"] < n:
            per = (u["wall_s"] - p["wall_s"]) / (n - p["epochs"])
            fixed.append(p["wall_s"] - p["epochs"] * per)
    f = statistics.median(fixed) if fixed else default
    return {
        "fixed": f,
        "per_epoch": [max(0.0, (u["wall_s"] - f) / len(u["curve"])) for u in unpruned],
        "twins": len(fixed),
    }


def run(path: Path, orders: int, seed: int) -> dict[str, Any]:
    data = json.loads(path.read_text())
    rounds = list(data["rounds"])
    # A run stopped before a round's pruned study still left that round's unpruned curves: replay them too.
    for st in data.get("unfinished_round", {}).get("unpruned", []):
        rounds.append({"round": len(rounds) + 1, "seed": st["seed"], "studies": {"unpruned": st}})
    rows, checks, fixed = [], [], []
    for rnd in sorted(rounds, key=lambda r: "pruned-sha" not in r["studies"]):  # rounds with twins first
        studies = rnd["studies"]
        # A trial that failed has no curve to replay; both sides lose it alike.
        trials = sorted((t for t in studies["unpruned"]["trials"] if t["value"] is not None), key=lambda t: t["number"])
        ran_pruned = {s: {t["number"]: t for t in v["trials"]} for s, v in studies.items() if s != "unpruned"}
        cost = costs(trials, list(ran_pruned.get("pruned-sha", {}).values()), statistics.median(fixed or [0.0]))
        fixed += [cost["fixed"]] if cost["twins"] else []
        curves, values = [t["curve"] for t in trials], [t["value"] for t in trials]
        drawn = list(range(len(trials)))
        for design, (kind, base) in DESIGNS.items():
            side = f"pruned-{kind}"
            ran = replay(curves, values, drawn, kind, base, name=f"{side}-r{rnd['round']}")  # the study's own name
            if side in ran_pruned and base == data["settings"].get("first_epoch_step", 0):
                measured = ran_pruned[side]
                same = all(
                    (m := measured.get(t["number"])) is not None
                    and m["epochs"] == e
                    and (m["state"] == "COMPLETE") == (e == len(t["curve"]))
                    for t, e in zip(trials, ran, strict=True)
                )
                checks.append({"round": rnd["round"], "design": design, "reproduces_measured": same})
            rng = random.Random(seed + rnd["round"])
            shuffled = [outcome(trials, drawn, ran, cost)]
            for _ in range(orders):
                order = drawn[:]
                rng.shuffle(order)
                shuffled.append(outcome(trials, order, replay(curves, values, order, kind, base), cost))
            rows.append(
                {
                    "round": rnd["round"],
                    "seed": rnd["seed"],
                    "design": design,
                    "as_drawn": shuffled[0],
                    "shuffled": summarize(shuffled[1:]),
                    "fixed_cost_s": cost["fixed"],
                }
            )
    rows.sort(key=lambda r: r["round"])
    return {"source": str(path), "orders": orders, "seed": seed, "checks": checks, "rows": rows, "pooled": pooled(rows)}


def summarize(outs: list[dict[str, Any]]) -> dict[str, Any]:
    img = [o["images"] or 0.0 for o in outs]  # a lost target counts as ratio 0
    wall = [o["wall"] or 0.0 for o in outs]
    return {
        "images": spread(img),
        "wall": spread(wall),
        "p_images_3x": sum(x >= TARGET_RATIO for x in img) / len(outs),
        "p_wall_3x": sum(x >= TARGET_RATIO for x in wall) / len(outs),
        "survival": sum(o["survived"] for o in outs) / len(outs),
        "whole_images": spread([o["whole_images"] for o in outs]),
        "whole_wall": spread([o["whole_wall"] for o in outs]),
    }


def pooled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for design in DESIGNS:
        mine = [r for r in rows if r["design"] == design]
        out.append(
            {
                "design": design,
                "rounds": len(mine),
                **{
                    k: statistics.median(
                        r["shuffled"][k]["median"] if isinstance(r["shuffled"][k], dict) else r["shuffled"][k]
                        for r in mine
                    )
                    for k in ("images", "wall", "p_images_3x", "survival", "whole_images", "whole_wall")
                },
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser((__doc__ or "").splitlines()[0], repeats=1)
    p.add_argument("source", type=Path, help="a search_efficiency JSON with unpruned studies")
    p.add_argument("--orders", type=int, default=200, help="seeded shuffles of each round's configurations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = run(args.source, 3 if args.smoke else args.orders, args.seed)
    path = write_result(args.out, NAME, result)
    print(
        table(
            result["pooled"],
            ["design", "rounds", "images", "wall", "p_images_3x", "survival", "whole_images", "whole_wall"],
        )
    )
    print("checks:", result["checks"], "->", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
