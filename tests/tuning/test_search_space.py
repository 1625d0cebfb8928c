from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from cnnexp.cli import main
from cnnexp.errors import SearchSpaceError
from cnnexp.tuning.space import Param, sample
from cnnexp.tuning.space_file import load_space

ROOT = Path(__file__).resolve().parents[2]

VALID = {
    "dataset": "digits",
    "trials": {"epochs": 2, "train_subset": 500},
    "retrain": {"epochs": 3},
    "fixed": {"model.convs_per_block": 1},
    "params": {
        "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "train.momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"train.optimizer": "sgd"}},
        "model.blocks": {"type": "int", "low": 1, "high": 2},
    },
}


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def _with(**changes) -> dict:
    """VALID with dotted paths replaced (value None deletes the key)."""
    doc = yaml.safe_load(yaml.safe_dump(VALID, sort_keys=False))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("/")
        node = doc
        for p in parents:
            node = node[p]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return doc


@pytest.mark.parametrize("name", ["digits", "fashion_mnist", "cifar10"])
def test_shipped_spaces_parse(name):
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
    assert space.dataset == name and space.direction == "maximize"
    keys = {p.key for p in space.params}
    for key in ("train.learning_rate", "train.batch_size", "train.optimizer", "model.dropout", "model.family"):
        assert key in keys
    lr = next(p for p in space.params if p.key == "train.learning_rate")
    assert lr.log and lr.low < lr.high
    assert any(p.when for p in space.params)  # every shipped space has a conditional parameter


def test_sampling_follows_conditions_and_fidelity(tmp_path):
    space = load_space(_write(tmp_path, VALID))
    adam = sample(
        optuna.trial.FixedTrial({"train.learning_rate": 0.002, "train.optimizer": "adam", "model.blocks": 2}), space
    )
    assert adam == {"train.learning_rate": 0.002, "train.optimizer": "adam", "model.blocks": 2}
    fixed = {"train.learning_rate": 0.002, "train.optimizer": "sgd", "train.momentum": 0.85, "model.blocks": 1}
    sgd = sample(optuna.trial.FixedTrial(fixed), space)
    assert sgd["train.momentum"] == 0.85

    trial_cfg = space.config(sgd)
    assert (trial_cfg.train.epochs, trial_cfg.data.train_subset) == (2, 500)
    assert trial_cfg.train.momentum == 0.85 and trial_cfg.model.convs_per_block == 1
    retrain_cfg = space.config(sgd, retrain=True)
    assert (retrain_cfg.train.epochs, retrain_cfg.data.train_subset) == (3, None)
    assert retrain_cfg.train.time_budget_minutes is None and trial_cfg.train.time_budget_minutes is None

    budgeted = load_space(_write(tmp_path, _with(**{"retrain/time_budget_minutes": 2.5})))
    assert budgeted.config(sgd, retrain=True).train.time_budget_minutes == 2.5
    assert budgeted.config(sgd).train.time_budget_minutes is None  # trials keep their epoch fidelity
    assert budgeted.config(sgd, retrain=True).train.epochs == 3  # retrain.epochs given: the budget only caps it
    planned = load_space(_write(tmp_path, _with(**{"retrain/time_budget_minutes": 2.5, "retrain/epochs": None})))
    assert planned.config(sgd, retrain=True).train.epochs is None  # as many as fit in the budget
    unbudgeted = load_space(_write(tmp_path, _with(**{"retrain/epochs": None})))
    assert unbudgeted.config(sgd, retrain=True).train.epochs == 2  # neither: the trials' epochs


@pytest.mark.parametrize(
    "doc, key, reason",
    [
        (_with(**{"budget": 3}), "budget", "unknown key"),
        (_with(**{"params/model.blocks/lo": 1}), "params.model.blocks.lo", "unknown key"),
        (_with(**{"params/model.blocks/low": 3}), "params.model.blocks", "low (3) > high (2)"),
        (_with(**{"params/train.optimizer/choices": []}), "params.train.optimizer.choices", "non-empty list"),
        (_with(**{"params/model.blocks/type": "integer"}), "params.model.blocks.type", "unknown type 'integer'"),
        (_with(**{"params/model.blocks/low": "one"}), "params.model.blocks.low", "must be a number"),
        (_with(**{"params/train.learning_rate/low": 0}), "params.train.learning_rate.low", "positive on a log"),
        (_with(**{"trials/epochs": 0}), "trials.epochs", "positive whole number"),
        (_with(**{"retrain/time_budget_minutes": "soon"}), "retrain.time_budget_minutes", "positive number"),
        (_with(**{"trials": None}), "trials", "missing"),
        (_with(**{"objective": "test_accuracy"}), "objective", "'test_accuracy' is not one of"),
        (
            _with(**{"params/train.momentum/when": {"train.optimizer": "rmsprop"}}),
            "params.train.momentum.when.train.optimizer",
            "'rmsprop' is not one of its choices",
        ),
        (
            _with(**{"params/train.momentum/when": {"model.blocks": 2}}),
            "params.train.momentum.when.model.blocks",
            "earlier categorical parameter",
        ),
        (_with(**{"params/model.nope": {"type": "int", "low": 1, "high": 2}}), "params.model.nope", "not a config key"),
        (_with(**{"fixed/train.epochs": 5}), "fixed.train.epochs", "is set by trials.epochs"),
        (
            _with(**{"params/model.dropout": {"type": "float", "low": 0.1, "high": 1.5}}),
            "params.model.dropout=1.5",
            "model.dropout=1.5 must be in [0, 1)",
        ),
        (_with(**{"fixed/model.blocks": 3}), "fixed.model.blocks", "also a tuned parameter"),
    ],
)
def test_malformed_space_names_file_key_and_reason(tmp_path, doc, key, reason):
    path = _write(tmp_path, doc)
    with pytest.raises(SearchSpaceError) as err:
        load_space(path)
    message = str(err.value)
    assert str(path) in message and key in message and reason in message


def test_unreadable_files(tmp_path):
    with pytest.raises(SearchSpaceError, match="not found"):
        load_space(tmp_path / "missing.yaml")
    with pytest.raises(SearchSpaceError, match="not valid YAML"):
        load_space(_write(tmp_path, "params: [unclosed"))


def test_bad_space_fails_before_any_study_or_run(tracking, tmp_path, capsys):
    path = _write(tmp_path, _with(**{"params/model.blocks/low": 3}))
    code = main(["tune", "--space", str(path), "--study-name", "bad", "--n-trials", "1"])
    assert code == 2
    assert f"{path}: params.model.blocks: low (3) > high (2)" in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


@pytest.mark.parametrize(
    "changes, key, reason",
    [
        (
            {"params/model.blocks/type": "float"},
            "params.model.blocks.type",
            "model.blocks is int: use int or categorical",
        ),
        ({"params/model.blocks/high": 5}, "params.model.blocks=5", "pools the 8x8 input below 1x1"),
        ({"params/model.blocks/step": 0.5}, "params.model.blocks.step", "whole number for an int parameter"),
        ({"params/train.momentum/when": {"train.optimizer": []}}, "train.momentum.when.train.optimizer", "never"),
        ({"fixed/run_name": "mine"}, "fixed.run_name", "is set by the study"),
        (
            {"params/model.batch_norm": {"type": "int", "low": 0, "high": 1}},
            "params.model.batch_norm.type",
            "model.batch_norm is bool: use categorical",
        ),
    ],
)
def test_space_values_that_would_fail_every_trial_are_refused(tmp_path, changes, key, reason):
    path = _write(tmp_path, _with(**changes))
    with pytest.raises(SearchSpaceError) as err:
        load_space(path)
    assert str(path) in str(err.value) and key in str(err.value) and reason in str(err.value)


def test_spatial_check_uses_the_space_datasets_input(tmp_path):
    # 5 blocks pool 8x8 digits below 1x1 but fit 32x32 CIFAR-10 (32 -> 1) and a 32x32 folder
    blocks = {"params/model.blocks/high": 5}
    assert load_space(_write(tmp_path, _with(dataset="cifar10", **blocks))).params[-1].high == 5
    with pytest.raises(SearchSpaceError, match="pools the 28x28 input below 1x1"):
        load_space(_write(tmp_path, _with(dataset="fashion_mnist", **{"params/model.blocks/high": 6})))


def test_yaml_pitfalls_get_clear_messages(tmp_path):
    text = yaml.safe_dump(VALID, sort_keys=False)
    duplicated = text.replace("params:\n", "params:\n  model.blocks: {type: int, low: 1, high: 3}\n", 1)
    with pytest.raises(SearchSpaceError, match=r"key 'model.blocks' is written twice \(line \d+\)"):
        load_space(_write(tmp_path, duplicated))
    sci = text.replace("low: 0.001", "low: 1e-3")
    assert "1e-3" in sci
    with pytest.raises(SearchSpaceError, match=r"got '1e-3' \(YAML reads it as text: write 1.0e-3\)"):
        load_space(_write(tmp_path, sci))
    path = tmp_path / "latin1.yaml"
    path.write_bytes(text.replace("dataset: digits", "dataset: digits  # caf\xe9").encode("latin-1"))
    with pytest.raises(SearchSpaceError, match=f"{path}: not UTF-8 text"):
        load_space(path)


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        (Param("k", "float", 0.05, 0.45, step=0.1), 0.15, True),
        (Param("k", "float", 0.05, 0.45, step=0.1), 0.1, False),  # in range, off the step
        (Param("k", "float", 1e-4, 1e-2, log=True), 3e-3, True),
        (Param("k", "float", 1e-4, 1e-2, log=True), 3e-2, False),
        (Param("k", "int", 1, 3), 2.5, False),
        (Param("k", "int", 1, 3), True, False),  # a bool is not a number here
        (Param("k", "categorical", choices=[32, 64]), 64, True),
        (Param("k", "categorical", choices=["adam", "sgd"]), "adamw", False),
    ],
)
def test_param_contains_what_optuna_would_take(param, value, expected):
    assert param.contains(value) is expected


def test_default_params_are_the_package_defaults_the_space_can_take(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "dataset: digits\nobjective: val_accuracy\ntrials: {epochs: 2}\nparams:\n"
        "  train.optimizer: {type: categorical, choices: [adam, sgd]}\n"
        "  train.momentum: {type: float, low: 0.8, high: 0.95, when: {train.optimizer: sgd}}\n"
        "  train.weight_decay: {type: float, low: 1.0e-5, high: 1.0e-3, log: true, when: {train.optimizer: adam}}\n"
        "  train.learning_rate: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n"
        "  model.blocks: {type: int, low: 1, high: 3}\n"
        "  model.dropout: {type: float, low: 0.0, high: 0.4, step: 0.1}\n"
        "  data.augment.shift: {type: float, low: 0.0, high: 0.1}\n"
    )
    # learning rate 3e-3 is above the range: left to the sampler; momentum's condition (sgd) fails under adam,
    # weight decay's holds; dotted keys two levels deep are read from the resolved config (digits: no shift).
    params, outside = load_space(path).default_params()
    assert params == {
        "train.optimizer": "adam",
        "train.weight_decay": 1e-4,
        "model.blocks": 3,
        "model.dropout": 0.0,
        "data.augment.shift": 0.0,
    }
    assert outside == ["train.learning_rate"]
