"""Promotion in the MLflow Model Registry: a candidate becomes ``champion`` only if it is better.

Aliases only (registry stages are deprecated). The candidate run's ``model`` is registered as a
new version (or its existing version is reused, so re-promoting never duplicates), aliased
``challenger``, and scored next to the current ``champion`` on the very same test set. The
decision, both scores and the reason are written on the version (tags and description), printed
and logged as a run in the promotions experiment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from cnnexp.analysis.evaluate import evaluate
from cnnexp.deploy.candidates import HeldOut, find_study_run, get_training_run, held_out_set
from cnnexp.errors import PromotionError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import leave_launcher_run, point_launcher, tracked_run, use_experiment

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
# Metric -> True when higher is better. A tie keeps the champion: change needs evidence.
METRICS = {"test_accuracy": True, "test_macro_f1": True, "test_loss": False}
PROMOTIONS_EXPERIMENT = "cnnexp-promotions"
# Re-checks of the champion alias when another promotion moved it while we were scoring.
_MAX_ROUNDS = 3

__all__ = ["Decision", "PromotionError", "promote", "CHAMPION", "CHALLENGER", "METRICS"]


@dataclass
class Decision:
    model_name: str
    version: str
    run_id: str
    outcome: str  # first | promoted | refused | forced | unchanged
    metric: str
    reason: str
    challenger_scores: dict[str, float] = field(default_factory=dict)
    champion_version: str | None = None
    champion_scores: dict[str, float] = field(default_factory=dict)

    @property
    def is_champion(self) -> bool:
        return self.outcome in ("first", "promoted", "forced", "unchanged")

    def summary(self) -> str:
        lines = [f"{self.model_name} version {self.version} (run {self.run_id}): {self.outcome.upper()}"]
        lines.append(f"  {self.reason}")
        for who, version, scores in (
            ("challenger", self.version, self.challenger_scores),
            ("champion", self.champion_version, self.champion_scores),
        ):
            if scores:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()))
                lines.append(f"  {who:10s} v{version}: {shown}")
        return "\n".join(lines)


def _alias(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version_of_run(client: mlflow.MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    versions = client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _register(client: mlflow.MlflowClient, name: str, run_id: str, model_uri: str) -> ModelVersion:
    try:
        client.create_registered_model(name, description="cnnexp image classifier; see the champion alias")
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    existing = _version_of_run(client, name, run_id)
    if existing is not None:
        log.info("run %s is already version %s of %s: reusing it", run_id, existing.version, name)
        return existing
    return client.create_model_version(name, model_uri, run_id=run_id)


def _score(name: str, version: str, held_out: HeldOut) -> dict[str, float]:
    """Test metrics of the registered artifact itself (loaded from the registry, not from the run)."""
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    classifier = pyfunc.unwrap_python_model()
    if tuple(classifier.input_shape) != held_out.x.shape[1:] or list(classifier.class_names) != list(
        held_out.class_names
    ):
        raise PromotionError(
            f"{name} v{version} takes {classifier.input_shape} images of classes {classifier.class_names}; "
            f"the test set holds {held_out.x.shape[1:]} images of {list(held_out.class_names)}"
        )
    return evaluate(classifier.model, held_out.x, held_out.y, held_out.class_names).metrics


def _better(metric: str, new: float, old: float) -> bool:
    return new > old if METRICS[metric] else new < old


def _judge(metric: str, force: bool, mine: dict[str, float], theirs: dict[str, float], champ: str) -> tuple[str, str]:
    new, old = mine[metric], theirs[metric]
    if _better(metric, new, old):
        return "promoted", f"won on {metric}: {new:.4f} vs {old:.4f} of champion v{champ}"
    if force:
        return "forced", f"forced (--force) although {metric} {new:.4f} is not better than {old:.4f} of v{champ}"
    return "refused", f"refused: {metric} {new:.4f} is not better than {old:.4f} of champion v{champ}"


def _decide(
    client: mlflow.MlflowClient, name: str, version: str, metric: str, force: bool, held_out: HeldOut, mine: dict
) -> tuple[str, str, ModelVersion | None, dict[str, float]]:
    """Compare with the champion and move the alias; re-compare if a racing promotion moved it first."""
    for _ in range(_MAX_ROUNDS):
        champion = _alias(client, name, CHAMPION)
        if champion is None:
            outcome, reason, theirs = "first", "first model of this name: becomes champion", {}
        elif champion.version == version:
            return "unchanged", f"v{version} is already champion", champion, {}
        else:
            theirs = _champion_scores(client, champion, held_out, force)
            if theirs:
                outcome, reason = _judge(metric, force, mine, theirs, champion.version)
            else:
                outcome, reason = "forced", f"forced (--force): champion v{champion.version} used another test set"
        current = _alias(client, name, CHAMPION)
        if (current and current.version) != (champion and champion.version):
            log.warning("champion of %s moved while scoring; comparing again", name)
            continue
        if outcome != "refused":
            client.set_registered_model_alias(name, CHAMPION, version)
        return outcome, reason, champion, theirs
    raise PromotionError(f"the champion of {name} kept moving during {_MAX_ROUNDS} comparisons; try again")


def _champion_scores(client: mlflow.MlflowClient, champion: ModelVersion, held_out: HeldOut, force: bool) -> dict:
    theirs_set = held_out_set(client.get_run(champion.run_id))
    if theirs_set.test_hash != held_out.test_hash:
        if force:
            return {}
        raise PromotionError(
            f"champion v{champion.version} was tested on another test set ({theirs_set.dataset}, "
            f"test hash {theirs_set.test_hash}) than the candidate ({held_out.dataset}, {held_out.test_hash}): "
            "scores are not comparable; use another --model-name, or --force to replace it anyway"
        )
    return _score(champion.name, champion.version, held_out)


def _record_on_version(client: mlflow.MlflowClient, decision: Decision, held_out: HeldOut) -> None:
    name, version = decision.model_name, decision.version
    version_tags = {
        tags.SOURCE_RUN: decision.run_id,
        tags.DATASET: held_out.dataset,
        tags.SPLIT_HASH: held_out.split_hash,
        tags.TEST_HASH: held_out.test_hash,
        tags.DECISION: decision.outcome,
        tags.DECISION_REASON: decision.reason,
        tags.COMPARED_METRIC: decision.metric,
        **{tags.metric_tag(k): f"{v:.6f}" for k, v in decision.challenger_scores.items()},
    }
    if decision.champion_version:
        version_tags[tags.COMPARED_WITH] = f"v{decision.champion_version}"
    if decision.outcome in ("first", "promoted"):
        version_tags[tags.WON_ON] = decision.metric
    if decision.outcome == "forced":
        version_tags[tags.FORCED] = "true"
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted(decision.challenger_scores.items()))
    client.update_model_version(
        name,
        version,
        description=(
            f"From run {decision.run_id} on {held_out.dataset} (split {held_out.split_hash}). "
            f"Test: {scores}. Promotion: {decision.outcome} - {decision.reason}."
        ),
    )


def _log_decision(decision: Decision) -> None:
    mlflow.log_params(
        {
            "model_name": decision.model_name,
            "version": decision.version,
            "source_run": decision.run_id,
            "metric": decision.metric,
            "champion_version": decision.champion_version or "none",
        }
    )
    mlflow.log_metrics({f"challenger_{k}": v for k, v in decision.challenger_scores.items()})
    mlflow.log_metrics({f"champion_{k}": v for k, v in decision.champion_scores.items()})
    mlflow.set_tags({tags.DECISION: decision.outcome, tags.DECISION_REASON: decision.reason})
    mlflow.log_dict(asdict(decision), "promotion.json")


def promote(
    model_name: str,
    *,
    run_id: str | None = None,
    study: str | None = None,
    force: bool = False,
    metric: str = "test_accuracy",
    experiment_name: str = PROMOTIONS_EXPERIMENT,
) -> Decision:
    """Register the run's model, alias it challenger and make it champion only if it beats the champion."""
    if (run_id is None) == (study is None):
        raise PromotionError("give exactly one of a run id or a study name")
    if metric not in METRICS:
        raise PromotionError(f"metric {metric!r} is not one of: {', '.join(METRICS)}")
    if not model_name or "'" in model_name:
        raise PromotionError(f"model name {model_name!r} must be non-empty and contain no quote")
    run, model_uri = get_training_run(run_id) if run_id else find_study_run(study)
    client = mlflow.MlflowClient()
    champion = _alias(client, model_name, CHAMPION)
    if champion is not None and champion.run_id == run.info.run_id:
        # Idempotent: promoting the champion's own run again writes nothing.
        reason = f"already champion v{champion.version}; nothing changed"
        return Decision(model_name, champion.version, run.info.run_id, "unchanged", metric, reason)

    held_out = held_out_set(run)
    launcher_run_id = leave_launcher_run()  # `mlflow run -e promote` records where `cnnexp promote` does
    use_experiment(experiment_name)
    with tracked_run(f"promote-{model_name}") as promotion:
        point_launcher(launcher_run_id, {tags.PROMOTION_RUN_ID: promotion.info.run_id})
        version = _register(client, model_name, run.info.run_id, model_uri).version
        client.set_registered_model_alias(model_name, CHALLENGER, version)
        mine = _score(model_name, version, held_out)
        outcome, reason, champ, theirs = _decide(client, model_name, version, metric, force, held_out, mine)
        decision = Decision(
            model_name, version, run.info.run_id, outcome, metric, reason, mine, champ and champ.version, theirs
        )
        if outcome != "unchanged":
            _record_on_version(client, decision, held_out)
        _log_decision(decision)
        log.info("promotion of %s: %s", model_name, json.dumps(asdict(decision)))
        return decision
