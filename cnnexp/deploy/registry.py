"""Promotion in the MLflow Model Registry: a candidate becomes ``champion`` only on evidence.

Aliases only (registry stages are deprecated). The candidate run's ``model`` is registered as a
new version (or its existing version is reused, so re-promoting never duplicates), aliased
``challenger``, and compared image by image with the current ``champion`` on the very same test
set (``evidence.py`` holds the rule). The decision, the evidence and the reason are written on
the version (tags and description), printed and logged as a run in the promotions experiment,
with the regression report. A promotion that fails leaves the registry as it found it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from cnnexp.analysis.evaluate import Evaluation, evaluate
from cnnexp.deploy.candidates import HeldOut, find_study_run, get_training_run, held_out_set
from cnnexp.deploy.evidence import METRICS, Evidence, Gate, compare, log_regression_report, predict_latency_ms
from cnnexp.errors import PromotionError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import leave_launcher_run, point_launcher, tracked_run, use_experiment

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
PROMOTIONS_EXPERIMENT = "cnnexp-promotions"
# Re-checks of the champion alias when another promotion moved it while we were scoring.
_MAX_ROUNDS = 3

__all__ = ["Decision", "Gate", "PromotionError", "promote", "CHAMPION", "CHALLENGER", "METRICS"]


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
    evidence: Evidence | None = None
    latency_ms: float | None = None  # the challenger's median single-image predict time
    promotion_run: str | None = None  # the run in the promotions experiment that logged this decision

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
        if self.latency_ms is not None:
            lines.append(f"  single-image predict of v{self.version}: {self.latency_ms:.3g} ms (median)")
        return "\n".join(lines)


def _alias(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version_of_run(client: mlflow.MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    versions = client.search_model_versions(f"name = '{name}' AND run_id = '{run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _create_model(client: mlflow.MlflowClient, name: str) -> bool:
    """Create the registered model if needed; True if this call created it."""
    try:
        client.create_registered_model(name, description="cnnexp image classifier; see the champion alias")
        return True
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        return False


@contextmanager
def _challenger(client: mlflow.MlflowClient, name: str, run_id: str, model_uri: str) -> Iterator[str]:
    """Register the run's model (or reuse its version) as ``challenger``; undo both if the block fails."""
    created_model = _create_model(client, name)
    previous = _alias(client, name, CHALLENGER)
    existing = _version_of_run(client, name, run_id)
    if existing is not None:
        log.info("run %s is already version %s of %s: reusing it", run_id, existing.version, name)
    version = (existing or client.create_model_version(name, model_uri, run_id=run_id)).version
    try:
        client.set_registered_model_alias(name, CHALLENGER, version)
        yield version
    except BaseException:
        _roll_back(client, name, version if existing is None else None, previous, created_model)
        raise


def _roll_back(
    client: mlflow.MlflowClient, name: str, new_version: str | None, previous: ModelVersion | None, created_model: bool
) -> None:
    """Put the registry back as the failed promotion found it (its new version, the challenger alias)."""
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        if created_model and all(str(v.version) == str(new_version) for v in versions):
            client.delete_registered_model(name)  # only ours in it (a racing promotion may have added one)
            return
        if previous is not None:
            client.set_registered_model_alias(name, CHALLENGER, previous.version)
        elif _alias(client, name, CHALLENGER) is not None:
            client.delete_registered_model_alias(name, CHALLENGER)
        if new_version is not None:
            client.delete_model_version(name, new_version)
    except MlflowException:  # never mask the error that made the promotion fail
        log.exception("could not roll back the failed promotion of %s", name)


def _score(name: str, version: str, held_out: HeldOut) -> tuple[Evaluation, mlflow.pyfunc.PyFuncModel]:
    """Test evaluation of the registered artifact itself (loaded from the registry, not from the run)."""
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    classifier = pyfunc.unwrap_python_model()
    if tuple(classifier.input_shape) != held_out.x.shape[1:] or list(classifier.class_names) != list(
        held_out.class_names
    ):
        raise PromotionError(
            f"{name} v{version} takes {classifier.input_shape} images of classes {classifier.class_names}; "
            f"the test set holds {held_out.x.shape[1:]} images of {list(held_out.class_names)}"
        )
    return evaluate(classifier.model, held_out.x, held_out.y, held_out.class_names), pyfunc


def _comparable(client: mlflow.MlflowClient, champion: ModelVersion, held_out: HeldOut, force: bool) -> bool:
    """Whether the champion was tested on the candidate's test set; refuses if not, unless forced."""
    theirs = held_out_set(client.get_run(champion.run_id))
    if theirs.test_hash == held_out.test_hash:
        return True
    if force:
        return False
    raise PromotionError(
        f"champion v{champion.version} was tested on another test set ({theirs.dataset}, "
        f"test hash {theirs.test_hash}) than the candidate ({held_out.dataset}, {held_out.test_hash}): "
        "scores are not comparable; use another model name, or force the promotion to replace it anyway"
    )


def _decide(
    client: mlflow.MlflowClient,
    name: str,
    version: str,
    gate: Gate,
    held_out: HeldOut,
    mine: Evaluation,
    latency: float,
) -> tuple[str, str, ModelVersion | None, Evaluation | None, Evidence | None]:
    """Compare with the champion and move the alias; re-compare if a racing promotion moved it first."""
    for _ in range(_MAX_ROUNDS):
        champion = _alias(client, name, CHAMPION)
        theirs = evidence = None
        if champion is not None and champion.version == version:
            return "unchanged", f"v{version} is already champion", champion, None, None
        if champion is not None and _comparable(client, champion, held_out, gate.force):
            theirs = _score(name, champion.version, held_out)[0]
            evidence = compare(gate, mine, theirs)
        outcome, reason = gate.judge(evidence, latency, champion and champion.version)
        current = _alias(client, name, CHAMPION)
        if (current and current.version) != (champion and champion.version):
            log.warning("champion of %s moved while scoring; comparing again", name)
            continue
        if outcome != "refused":
            client.set_registered_model_alias(name, CHAMPION, version)
        return outcome, reason, champion, theirs, evidence
    raise PromotionError(f"the champion of {name} kept moving during {_MAX_ROUNDS} comparisons; try again")


def _evidence_tags(ev: Evidence) -> dict[str, str]:
    return {
        tags.EVIDENCE_METHOD: ev.method,
        tags.DIFFERENCE: f"{ev.difference:.6f}",
        tags.DIFFERENCE_CI: f"[{ev.ci_low:.6f}, {ev.ci_high:.6f}]",
        tags.P_VALUE: f"{ev.p_value:.6g}",
        tags.ALPHA: f"{ev.alpha:g}",
        tags.MIN_MARGIN: f"{ev.min_margin:g}",
        tags.ONLY_CHALLENGER_RIGHT: str(ev.only_challenger_right),
        tags.ONLY_CHAMPION_RIGHT: str(ev.only_champion_right),
    }


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
        **{tags.champion_metric_tag(k): f"{v:.6f}" for k, v in decision.champion_scores.items()},
        **(_evidence_tags(decision.evidence) if decision.evidence else {}),
    }
    if decision.latency_ms is not None:
        version_tags[tags.LATENCY_MS] = f"{decision.latency_ms:.3f}"
    if decision.champion_version:
        version_tags[tags.COMPARED_WITH] = f"v{decision.champion_version}"
    if decision.outcome in ("first", "promoted"):
        version_tags[tags.WON_ON] = decision.metric
    if decision.outcome == "forced":
        version_tags[tags.FORCED] = "true"
    # A reused version: what an earlier decision wrote and this one does not would contradict it.
    for key in client.get_model_version(name, version).tags:
        if tags.is_decision_tag(key) and key not in version_tags:
            client.delete_model_version_tag(name, version, key)
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


def _log_decision(decision: Decision, gate: Gate) -> None:
    mlflow.log_params(
        {
            "model_name": decision.model_name,
            "version": decision.version,
            "source_run": decision.run_id,
            "metric": decision.metric,
            "champion_version": decision.champion_version or "none",
            # Prefixed: under `mlflow run` the MLproject's own parameters (alpha, force...) are params of this run.
            "gate.alpha": gate.alpha,
            "gate.min_margin": gate.min_margin,
            "gate.max_latency_ms": "none" if gate.max_latency_ms is None else gate.max_latency_ms,
            "gate.force": gate.force,
        }
    )
    mlflow.log_metrics({f"challenger_{k}": v for k, v in decision.challenger_scores.items()})
    mlflow.log_metrics({f"champion_{k}": v for k, v in decision.champion_scores.items()})
    if decision.latency_ms is not None:
        mlflow.log_metric("challenger_latency_ms", decision.latency_ms)
    ev = decision.evidence
    if ev is not None:
        mlflow.log_metrics(
            {
                "difference": ev.difference,
                "difference_ci_low": ev.ci_low,
                "difference_ci_high": ev.ci_high,
                "p_value": ev.p_value,
                "challenger_accuracy": ev.challenger_accuracy,
                "champion_accuracy": ev.champion_accuracy,
                "only_challenger_right": ev.only_challenger_right,
                "only_champion_right": ev.only_champion_right,
            }
        )
    mlflow.set_tags({tags.DECISION: decision.outcome, tags.DECISION_REASON: decision.reason})
    mlflow.log_dict(asdict(decision), "promotion.json")


def promote(
    model_name: str,
    *,
    run_id: str | None = None,
    study: str | None = None,
    force: bool = False,
    metric: str = "test_accuracy",
    alpha: float = 0.05,
    min_margin: float = 0.0,
    max_latency_ms: float | None = None,
    experiment_name: str = PROMOTIONS_EXPERIMENT,
) -> Decision:
    """Register the run's model, alias it challenger and make it champion only on evidence (see evidence.py)."""
    if (run_id is None) == (study is None):
        raise PromotionError("give exactly one of a run id or a study name")
    gate = Gate(metric, alpha, min_margin, max_latency_ms, force)
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
        if champion is not None:
            _comparable(client, champion, held_out, force)  # refuse before the registry changes at all
        with _challenger(client, model_name, run.info.run_id, model_uri) as version:
            mine, pyfunc = _score(model_name, version, held_out)
            latency = predict_latency_ms(pyfunc, held_out.x[0])
            outcome, reason, champ, theirs, evidence = _decide(
                client, model_name, version, gate, held_out, mine, latency
            )
        decision = Decision(
            model_name, version, run.info.run_id, outcome, metric, reason, mine.metrics,
            champ and champ.version, theirs.metrics if theirs else {}, evidence, latency, promotion.info.run_id,
        )  # fmt: skip
        if outcome != "unchanged":
            _record_on_version(client, decision, held_out)
        if theirs is not None:
            log_regression_report(mine, theirs, held_out.x, held_out.class_names)
        _log_decision(decision, gate)
        log.info("promotion of %s: %s", model_name, json.dumps(asdict(decision)))
        return decision
