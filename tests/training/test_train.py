import json
import re
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from cnnexp.config import build_config
from cnnexp.errors import ConfigError, TrainingDiverged
from cnnexp.serving.pyfunc import OUTPUT_SCHEMA, encode_image
from cnnexp.tracking import tags
from cnnexp.training import schedules
from cnnexp.training.schedules import learning_rate
from cnnexp.training.train import make_callbacks, train


def _artifacts(client, run_id, path=""):
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return out


def test_tracked_training_run(tracking, tiny_config, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # MLflow's default, 10 s, outlasts the run
    result = train(tiny_config)
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).tags[tags.EXPERIMENT_KIND] == "custom_model_development"

    # the split's three parts as MLflow datasets: context, name, a digest of their examples, the files
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "training", "validation"]
    for context, part in (("training", "train"), ("validation", "val"), ("test", "test")):
        assert inputs[context].name == f"digits-{context}"
        assert inputs[context].digest == result.split.part_hash(part)
        assert json.loads(inputs[context].source)["uri"].endswith("digits.csv.gz")
        assert json.loads(inputs[context].profile)["features_shape"][0] == result.split.sizes()[part]
    assert len(set(d.digest for d in inputs.values())) == 3

    # MLflow's system metrics, sampled while the run trained
    assert client.get_metric_history(result.run_id, "system/cpu_utilization_percentage")
    assert "system/system_memory_usage_megabytes" in run.data.metrics

    # per-epoch metrics from autolog, our test metrics, resolved config params and tags
    history = client.get_metric_history(result.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1]
    assert 0.5 < run.data.metrics["test_accuracy"] <= 1.0
    assert 0.0 < run.data.metrics["test_macro_f1"] <= 1.0 and run.data.metrics["test_loss"] > 0
    assert run.data.params["model.filters"] == "8" and run.data.params["data.augment.shift"] == "0.0"
    assert run.data.params["split.test_size"] == "360"
    assert run.data.params["batch_size"] == "64"  # autolog's own param, read from the pipeline
    got = run.data.tags
    assert got[tags.DATASET] == "digits" and got[tags.SEED] == "42"
    assert got[tags.SPLIT_HASH] == result.split.split_hash and len(got[tags.DATA_HASH]) == 64
    assert tags.GIT_COMMIT in got

    files = _artifacts(client, result.run_id)
    for expected in (
        "config.yaml",
        "plots/training_curves.png",
        "plots/confusion_matrix.png",
        "plots/confusion_matrix_normalized.png",
        "evaluation/per_class_report.csv",
    ):
        assert expected in files
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="evaluation/per_class_report.csv")
    report = pd.read_csv(local)
    assert list(report["class"].astype(str)) == [str(i) for i in range(10)]
    assert report["support"].sum() == 360
    config = yaml.safe_load(
        open(mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="config.yaml"))
    )
    assert config["train"]["epochs"] == 2 and config["data"]["augment"]["horizontal_flip"] is False


def test_logged_model_loads_and_takes_images(tracking, tiny_config):
    result = train(tiny_config)
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.metadata.signature.outputs == OUTPUT_SCHEMA
    x = result.split.x_test[:5]
    frame = pd.DataFrame({"image": [encode_image(img) for img in x]})
    out = model.predict(frame)
    assert list(out.columns) == ["label", "class_index", "probabilities"]
    expected = result.model.predict(x.astype(np.float32), verbose=0).argmax(axis=1)
    assert out["class_index"].tolist() == expected.tolist()
    assert out["label"].tolist() == [str(i) for i in expected]
    assert np.allclose([sum(p) for p in out["probabilities"]], 1.0, atol=1e-4)
    # the declared output schema is what predict really returns; inferring it would warn (class_index is an int)
    with pytest.warns(UserWarning, match="integer column"):
        assert mlflow.models.infer_signature(None, out).outputs == OUTPUT_SCHEMA


def test_keras_pin_meets_mlflow_autolog_minimum():
    """mlflow.keras.autolog warns below its minimum Keras; the package never allows one."""
    from mlflow.utils.autologging_utils.versioning import (
        get_min_max_version_and_pip_release,
        is_flavor_supported_for_associated_package_versions,
    )
    from packaging.version import Version

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"keras>=([0-9.]+)"', pyproject)
    minimum, _, _ = get_min_max_version_and_pip_release("keras")
    assert Version(pin) >= Version(minimum)
    assert is_flavor_supported_for_associated_package_versions("keras", check_max_version=False)


def test_same_seed_same_result(tracking, tiny_config):
    a, b = train(tiny_config), train(tiny_config)
    assert a.split.split_hash == b.split.split_hash
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
    assert a.metrics["test_loss"] == pytest.approx(b.metrics["test_loss"], abs=1e-6)


def test_options_train(tracking, tiny_overrides, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    cfg = build_config(
        overrides={
            **tiny_overrides,
            "model.family": "residual",
            "train.optimizer": "adamw",
            "train.lr_schedule": "cosine",
            "train.label_smoothing": 0.1,
            "data.train_subset": 300,
            "data.augment.shift": 0.1,
            "train.precision": "mixed_bfloat16",
            "train.system_metrics": "false",
        }
    )
    rates = []  # the optimizer's learning rate after each epoch's last step

    class RecordRate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rates.append(float(self.model.optimizer.learning_rate))

    result = train(cfg, extra_callbacks=[RecordRate()])
    assert result.split.sizes()["train"] == 300
    metrics = mlflow.MlflowClient().get_run(result.run_id).data.metrics
    assert "test_accuracy" in metrics and not any(name.startswith("system/") for name in metrics)
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    # Each option took effect: residual Add layers, one per block; AdamW with the configured weight
    # decay; a cosine decay from the configured rate to zero over all steps, read at every epoch end.
    adds = [layer.name for layer in result.model.layers if isinstance(layer, keras.layers.Add)]
    assert adds == [f"block{i}_add" for i in range(1, cfg.model.blocks + 1)]
    optimizer = result.model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(cfg.train.weight_decay)
    steps = -(-300 // cfg.train.batch_size)  # 5 steps an epoch
    total = cfg.train.epochs * steps
    expected = [cfg.train.learning_rate * 0.5 * (1 + np.cos(np.pi * e * steps / total)) for e in (1, 2)]
    assert rates == pytest.approx(expected, rel=1e-4, abs=1e-9) and rates[0] == pytest.approx(
        cfg.train.learning_rate / 2
    )
    # bf16 convolutions, a float32 softmax, and Keras' global policy left as it was.
    assert result.model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert result.model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"


def test_failure_ends_failed_with_reason(tracking, tiny_overrides):
    cfg = build_config(
        overrides={
            **tiny_overrides,
            "train.optimizer": "sgd",
            "train.learning_rate": 1e12,
            "model.batch_norm": False,
            "model.dropout": 0,
            "model.head_dropout": 0,
        }
    )
    with pytest.raises(TrainingDiverged):
        train(cfg)
    run = mlflow.search_runs(experiment_names=["tests"], output_format="list")[0]
    assert run.info.status == "FAILED"
    assert "TrainingDiverged: loss became" in run.data.tags[tags.FAILURE_REASON]


def test_ctrl_c_ends_killed(tracking, tiny_config):
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config, extra_callbacks=[Interrupt()])
    run = mlflow.search_runs(experiment_names=["tests"], output_format="list")[0]
    assert run.info.status == "KILLED"
    assert not mlflow.active_run()


def test_config_logged_verbatim(tracking, tiny_config):
    result = train(tiny_config, evaluate_test=False, log_model=False)
    local = mlflow.artifacts.download_artifacts(run_id=result.run_id, artifact_path="config.yaml")
    assert yaml.safe_load(open(local)) == json.loads(json.dumps(tiny_config.to_dict()))
    assert "test_accuracy" not in result.metrics


def test_onecycle_schedule_ramps_then_anneals(tiny_overrides):
    cfg = build_config(overrides={**tiny_overrides, "train.lr_schedule": "onecycle", "train.epochs": 10})
    schedule = learning_rate(cfg.train, steps_per_epoch=100)  # 1,000 steps in all
    peak = cfg.train.learning_rate
    assert float(schedule(0)) == pytest.approx(peak / 10)
    assert float(schedule(200)) == pytest.approx(peak)  # end of the 20% warm-up
    assert float(schedule(100)) < float(schedule(200)) and float(schedule(600)) < peak
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("schedule", "start"), [("onecycle", 5), ("cosine", 5), ("none", 0), ("plateau", 0)])
def test_early_stopping_spares_the_first_half_of_an_annealing_schedule(tiny_overrides, schedule, start):
    cfg = build_config(overrides={**tiny_overrides, "train.lr_schedule": schedule, "train.epochs": 10})
    (stopper,) = [c for c in make_callbacks(cfg.train, 10) if isinstance(c, keras.callbacks.EarlyStopping)]
    assert stopper.start_from_epoch == start and stopper.monitor == "val_loss" and stopper.restore_best_weights


def test_a_clashing_epochs_param_fails_the_run_before_training(tracking, tiny_config, monkeypatch):
    """`mlflow run -P epochs=` logs epochs=''; autolog's own epochs would then be refused, and with it every
    per-epoch metric. The run fails at once, saying so, instead of training without a history."""
    mlflow.set_experiment("tests")
    launcher = mlflow.MlflowClient().create_run(mlflow.get_experiment_by_name("tests").experiment_id)
    mlflow.MlflowClient().log_param(launcher.info.run_id, "epochs", "")
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher.info.run_id)  # as `mlflow run` hands its run over
    with pytest.raises(ConfigError, match="already has param epochs='' but trains with train.epochs=2"):
        train(tiny_config)
    run = mlflow.get_run(launcher.info.run_id)
    assert run.info.status == "FAILED" and "ConfigError" in run.data.tags[tags.FAILURE_REASON]
    assert "val_loss" not in run.data.metrics


@pytest.mark.parametrize("name", ["wsd", "linear"])
def test_wsd_and_linear_warm_up_for_fixed_epochs_then_decay_to_zero(tiny_overrides, name):
    cfg = build_config(overrides={**tiny_overrides, "train.lr_schedule": name, "train.epochs": 10})
    cfg.train.warmup_epochs = 0.5
    schedule = learning_rate(cfg.train, steps_per_epoch=100)  # 1,000 steps; warm-up 50
    peak = cfg.train.learning_rate
    assert 0 < float(schedule(0)) < peak / 10 and float(schedule(49)) == pytest.approx(peak)
    assert float(schedule(1000)) == pytest.approx(0.0, abs=1e-9)
    if name == "wsd":  # constant until the last 20%, then linear to zero
        assert float(schedule(100)) == float(schedule(799)) == pytest.approx(peak)
        assert float(schedule(900)) == pytest.approx(peak / 2)
    else:  # linear from the end of the warm-up
        assert float(schedule(525)) == pytest.approx(peak / 2, rel=1e-3)
    assert schedules.warmup_epochs(cfg.train) == 0.5
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert float(clone(900)) == pytest.approx(float(schedule(900)))


def test_warmup_epochs_per_schedule(tiny_overrides):
    def warmup(schedule: str) -> float:
        cfg = build_config(overrides={**tiny_overrides, "train.lr_schedule": schedule, "train.epochs": 9})
        return schedules.warmup_epochs(cfg.train)

    assert warmup("onecycle") == pytest.approx(1.8)  # 20% of the run: later in a longer trial
    assert warmup("wsd") == warmup("linear") == 0.5  # fixed: the same epoch in every trial
    assert warmup("none") == warmup("cosine") == warmup("plateau") == 0
