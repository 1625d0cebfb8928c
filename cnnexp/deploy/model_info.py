"""What a model URI points at, from the registry: name, version, alias and the test accuracy it was promoted on."""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException

from cnnexp.tracking import tags

MODELS, RUNS = "models:/", "runs:/"


def describe_model(uri: str) -> dict[str, str | float | None]:
    """``{"uri", "name", "version", "alias", "test_accuracy"}``; what cannot be resolved stays None."""
    info: dict[str, str | float | None] = {"uri": uri, "name": None, "version": None, "alias": None}
    client = mlflow.MlflowClient()
    accuracy, run_id = None, None
    try:
        if uri.startswith(MODELS):
            rest = uri[len(MODELS) :]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                version = client.get_model_version_by_alias(name, alias)
                info["alias"] = alias
            else:
                name, number = rest.split("/", 1)
                version = client.get_model_version(name, number)
            info["name"], info["version"], run_id = version.name, str(version.version), version.run_id
            # The accuracy promotion measured on the held-out test set (tagged on the version) ...
            accuracy = version.tags.get(tags.metric_tag("test_accuracy"))
        elif uri.startswith(RUNS):
            run_id = uri[len(RUNS) :].split("/", 1)[0]
            info["name"] = f"run {run_id}"
        if accuracy is None and run_id:
            # ... or, for a version promotion did not record, the one its training run measured.
            accuracy = client.get_run(run_id).data.metrics.get("test_accuracy")
    except (MlflowException, ValueError):
        pass  # the model itself loaded: the page still works, it just says less
    info["test_accuracy"] = float(accuracy) if accuracy is not None else None
    return info
