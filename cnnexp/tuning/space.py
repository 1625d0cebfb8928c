"""Search spaces as data: the typed dataclasses a YAML file is parsed into, and sampling a trial from one.

A space names the dataset, the objective, the fidelity of trials (epochs, training subset), the
retraining budget of the best configuration, fixed config values, and the tuned parameters, each
keyed by the dotted config key it sets (``train.learning_rate``). A parameter may be conditional on
an earlier categorical one (``when: {train.optimizer: sgd}``). Reading and checking the file is
:mod:`cnnexp.tuning.space_file`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cnnexp.config import ExperimentConfig, build_config

PARAM_TYPES = ("float", "int", "categorical")
OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize"}
_WARMUP_KEYS = ("train.lr_schedule", "train.warmup_epochs")


@dataclass
class Param:
    key: str  # dotted config key the sampled value sets
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)  # earlier categorical key -> allowed values

    def active(self, sampled: dict[str, Any]) -> bool:
        """Conditional parameters are only sampled when every condition holds for the earlier values."""
        return all(sampled.get(key) in values for key, values in self.when.items())

    def contains(self, value: Any) -> bool:
        """Whether Optuna would take ``value`` as this parameter's (enqueued) value: the distribution's own
        membership test (a choice; in range and on the step), and no bool for a number."""
        if self.type != "categorical" and isinstance(value, bool):
            return False
        dist = self.distribution()
        try:
            return dist._contains(dist.to_internal_repr(value))
        except ValueError:  # not a choice, not a number, or not positive on a log scale
            return False

    def values_to_check(self) -> list[Any]:
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]

    def distribution(self) -> BaseDistribution:
        """The Optuna distribution :func:`sample` asks for (what a trial records for this parameter)."""
        if self.type == "categorical":
            return CategoricalDistribution(self.choices)
        if self.type == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


@dataclass
class SearchSpace:
    path: str
    dataset: str
    objective: str  # a per-epoch validation metric: val_accuracy | val_loss
    trial_epochs: int
    trial_train_subset: int | None  # None: trials train on the whole training part
    retrain_epochs: int | None  # None: as many as the retrain's time budget fits, else trials.epochs
    retrain_time_budget_minutes: float | None  # wall-clock budget; the schedule then anneals by time
    fixed: dict[str, Any]
    params: list[Param]
    text: str  # the file as written, logged with the study

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.key: p.distribution() for p in self.params}

    def overrides(self, sampled: dict[str, Any], *, retrain: bool = False) -> dict[str, Any]:
        """Dotted config overrides for one trial (cheap fidelity) or for retraining (full data)."""
        out = {"data.dataset": self.dataset, **self.fixed, **sampled}
        if retrain:
            epochs = self.retrain_epochs
            if epochs is None and not self.retrain_time_budget_minutes:
                epochs = self.trial_epochs
            out.update({"train.epochs": epochs, "data.train_subset": None})  # None: planned from the budget
            if self.retrain_time_budget_minutes:
                out["train.time_budget_minutes"] = self.retrain_time_budget_minutes
        else:
            out.update({"train.epochs": self.trial_epochs, "data.train_subset": self.trial_train_subset})
        return out

    def default_params(self) -> tuple[dict[str, Any], list[str]]:
        """The package defaults, with the space's fixed values, for every tuned parameter that can take
        them, in file order; and the keys of the active parameters that cannot (the sampler draws those).
        A trial of these trains what ``cnnexp train`` would with the space's fixed values, at trial
        fidelity. Raises ConfigError if those defaults and fixed values do not make a valid config."""
        defaults = self.config({}).flat()
        params: dict[str, Any] = {}
        outside: list[str] = []
        for p in self.params:
            if not p.active(params):
                continue
            if p.contains(defaults[p.key]):
                params[p.key] = defaults[p.key]
            else:
                outside.append(p.key)
        return params, outside

    def trial_warmup_epochs(self) -> float:
        """The longest learning-rate warm-up a trial of this space can have (the pruner's first cut waits
        for it): over the fixed values and every choice or range end of a tuned schedule or warm-up."""
        from cnnexp.training.schedules import warmup_epochs  # here: schedules imports Keras, a space need not

        tuned = [p for p in self.params if p.key in _WARMUP_KEYS]
        options: list[dict[str, Any]] = [{}]
        for p in tuned:
            options = [{**o, p.key: v} for o in options for v in p.values_to_check()]
        return max(warmup_epochs(self.config(o).train) for o in options)

    def config(
        self, sampled: dict[str, Any], *, retrain: bool = False, extra: dict[str, Any] | None = None
    ) -> ExperimentConfig:
        overrides = {**self.overrides(sampled, retrain=retrain), **(extra or {})}
        # build_config skips None overrides; a full-data retrain must clear train_subset explicitly.
        base: dict[str, Any] = {"data": {"train_subset": overrides.pop("data.train_subset")}}
        return build_config(base, overrides)


def sample(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask the trial for every active parameter, in file order (conditions look at earlier values)."""
    sampled: dict[str, Any] = {}
    for p in space.params:
        if not p.active(sampled):
            continue
        if p.type == "categorical":
            sampled[p.key] = trial.suggest_categorical(p.key, p.choices)
        elif p.type == "int":
            sampled[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            sampled[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)
    return sampled
