"""Links into the MLflow UI that open on the runs table.

MLflow 3.17's UI opens an experiment on its GenAI pages ("Traces", "No data available") unless the
link asks for model training: it takes the page from the ``workflowType`` URL parameter or the
GenAI / Model training toggle last clicked, not from the ``mlflow.experimentKind`` tag (which cnnexp
sets anyway, for MLflow's other clients). So every link cnnexp prints carries the parameter.
"""

from __future__ import annotations

WORKFLOW_PARAM = "workflowType=machine_learning"


def ui_page(experiment_id: str, run_id: str | None = None) -> str:
    """The part after the UI's address: the experiment's runs table, or one run's page."""
    where = f"runs/{run_id}" if run_id else "runs"
    return f"#/experiments/{experiment_id}/{where}?{WORKFLOW_PARAM}"
