"""Whether a study can resume with an edited search space: its trials' Optuna distributions against the space's.

Optuna refuses a parameter whose distribution changed incompatibly within a study (e.g.
``CategoricalDistribution does not support dynamic value space``) only when a new trial asks for
it, failing every trial; this check refuses such an edit before anything runs, naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from cnnexp.errors import SearchSpaceError
from cnnexp.tuning.space import SearchSpace


def check_resumable(space: SearchSpace, trials: Iterable[optuna.trial.FrozenTrial], study_name: str) -> None:
    """Refuse a space whose parameters the study's trials cannot share (Optuna would fail every new trial).

    Compatible: an added or removed parameter, a range widened at either end. Anything else (a type
    change, changed choices, a narrowed range, another step or log scale) needs a new study.
    """
    new = space.distributions()
    old = {(key, dist) for t in trials for key, dist in t.distributions.items() if key in new}
    for key, dist in sorted(old, key=lambda kd: kd[0]):
        reason = _incompatible(dist, new[key])
        if reason:
            raise SearchSpaceError(
                f"{space.path}: params.{key}: study {study_name!r} cannot resume with this space: {reason}. "
                "Keep the earlier definition, only widen ranges or add parameters, or start a study of another name"
            )


def _incompatible(old: BaseDistribution, new: BaseDistribution) -> str | None:
    def kind(d: BaseDistribution) -> str:
        return {CategoricalDistribution: "categorical", IntDistribution: "int"}.get(type(d), "float")

    if kind(old) != kind(new):
        return f"its trials sampled it as {kind(old)}, this space makes it {kind(new)}"
    if isinstance(old, CategoricalDistribution):
        if tuple(old.choices) != tuple(new.choices):
            return f"choices were {list(old.choices)}, now {list(new.choices)} (Optuna cannot change them in a study)"
        return None
    if old.log != new.log or old.step != new.step:
        return f"log={old.log}, step={old.step} before, now log={new.log}, step={new.step}"
    if new.low > old.low or new.high < old.high:
        return f"range [{old.low}, {old.high}] narrowed to [{new.low}, {new.high}]: earlier trials fall outside it"
    return None
