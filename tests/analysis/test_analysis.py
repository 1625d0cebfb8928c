"""The analysis numbers on hand-made predictions whose right answers are known."""

import numpy as np
import pandas as pd
import pytest

from cnnexp.analysis.diagnose import analyze, calibration, confidently_wrong, confused_pairs, findings, fit_diagnosis
from cnnexp.analysis.evaluate import Evaluation

NAMES = ("cat", "dog", "owl")


def _evaluation(probs: np.ndarray, y_true: np.ndarray) -> Evaluation:
    y_pred = probs.argmax(axis=1)
    confusion = np.zeros((3, 3), dtype=int)
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t, p] += 1
    per_class = pd.DataFrame(
        {"class": NAMES, "precision": [0.9, 0.5, 0.8], "recall": [0.9, 0.4, 0.8], "f1": [0.9, 0.45, 0.8]}
    )
    per_class["support"] = np.bincount(y_true, minlength=3)
    acc = float((y_pred == y_true).mean())
    return Evaluation(
        probs, y_true, y_pred, {"test_accuracy": acc, "test_macro_f1": 0.72, "test_loss": 0.5}, per_class, confusion
    )


def test_calibration_error_of_known_predictions():
    # 10 predictions at confidence 0.8, 6 right: one bin, |0.6 - 0.8| = 0.2.
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    y = np.array([0] * 6 + [1] * 4)
    cal = calibration(probs, y)
    assert cal.ece == pytest.approx(0.2)
    assert cal.mean_confidence == pytest.approx(0.8) and cal.accuracy == pytest.approx(0.6)
    row = cal.bins[cal.bins["count"] > 0]
    assert len(row) == 1 and row["bin_lower"].item() == pytest.approx(0.7)  # 0.8 falls in (0.7, 0.8]
    assert cal.bins["count"].sum() == 10


def test_calibration_perfect_and_certain():
    probs = np.eye(3)[[0, 1, 2, 0]]  # confidence exactly 1.0, all right: last bin, no error
    cal = calibration(probs, np.array([0, 1, 2, 0]))
    assert cal.ece == 0.0
    assert cal.bins["count"].iloc[-1] == 4


def test_confused_pairs_ranked_by_count():
    confusion = np.array([[8, 2, 0], [5, 4, 1], [0, 0, 10]])
    pairs = confused_pairs(confusion, NAMES)
    assert list(zip(pairs["true"], pairs["predicted"], pairs["count"], strict=True)) == [
        ("dog", "cat", 5),
        ("cat", "dog", 2),
        ("dog", "owl", 1),
    ]
    assert pairs["rate"].iloc[0] == pytest.approx(0.5)


def test_confidently_wrong_sorted_and_only_wrong():
    probs = np.array([[0.1, 0.9, 0.0], [0.6, 0.4, 0.0], [0.2, 0.1, 0.7], [0.0, 0.05, 0.95]])
    y = np.array([0, 0, 0, 2])  # rows 0 and 2 are wrong, row 0 surer
    wrong = confidently_wrong(_evaluation(probs, y), NAMES)
    assert wrong["index"].tolist() == [0, 2]
    assert wrong["predicted"].tolist() == ["dog", "owl"]
    assert wrong["confidence"].tolist() == pytest.approx([0.9, 0.7])
    assert wrong["true_class_probability"].tolist() == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize(
    "history, verdict",
    [
        ({"accuracy": [0.8, 0.95, 0.99], "val_accuracy": [0.78, 0.85, 0.84], "val_loss": [0.6, 0.4, 0.5]}, "overfit"),
        ({"accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.5, 0.62, 0.71], "val_loss": [1.2, 1.0, 0.9]}, "underfit"),
        (
            {"accuracy": [0.9, 0.95, 0.96], "val_accuracy": [0.9, 0.94, 0.95], "val_loss": [0.3, 0.2, 0.15]},
            "still improving",
        ),
        ({"accuracy": [0.9, 0.95, 0.97], "val_accuracy": [0.9, 0.94, 0.93], "val_loss": [0.3, 0.2, 0.25]}, "good fit"),
        (
            {"accuracy": [0.85, 0.89, 0.9], "val_accuracy": [0.9, 0.93, 0.92], "val_loss": [0.3, 0.2, 0.25]},
            "capacity-limited",
        ),
        ({}, "unknown"),
    ],
)
def test_fit_diagnosis(history, verdict):
    assert fit_diagnosis(history)[0] == verdict


def test_findings_name_weakest_class_confusion_and_calibration():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = np.full((60, 3), 0.01)
    probs[np.arange(60), y] = 0.98
    probs[:6] = [0.02, 0.97, 0.01]  # six images taken for dogs with 97% confidence
    probs /= probs.sum(axis=1, keepdims=True)
    history = {"accuracy": [0.8, 0.99], "val_accuracy": [0.8, 0.9], "val_loss": [0.5, 0.4]}
    f = findings(analyze(_evaluation(probs, y), NAMES, history))
    text = " ".join(sum(f.values(), []))
    assert "Weakest classes (F1): dog 0.450" in text
    assert "taken for dog" in text
    assert "Overfitting" in text and "gap of 9.0 points" in text
    assert "Miscalibrated (overconfident)" in text
    assert set(f) == {"strengths", "limitations", "next steps"} and f["next steps"]


CAPACITY_LIMITED = {"accuracy": [0.85, 0.89, 0.9], "val_accuracy": [0.9, 0.93, 0.92], "val_loss": [0.3, 0.2, 0.25]}
UNDERFIT = {"accuracy": [0.5, 0.6, 0.7], "val_accuracy": [0.5, 0.62, 0.71], "val_loss": [1.2, 1.0, 0.9]}


def _advice(history: dict, overrides: dict, input_shape: tuple[int, int, int]) -> str:
    from cnnexp.config import build_config

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    probs = np.eye(3)[(y + (rng.random(60) < 0.2)) % 3] * 0.9 + 0.1 / 3
    cfg = build_config(overrides=overrides)
    return " ".join(sum(findings(analyze(_evaluation(probs, y), NAMES, history, cfg, input_shape)).values(), []))


@pytest.mark.parametrize("history", [CAPACITY_LIMITED, UNDERFIT], ids=["capacity-limited", "underfit"])
def test_advice_follows_the_runs_config_and_input_size(history):
    # digits: no augmentation at all, and 8x8 pixels allow 3 blocks, the default: neither is advised.
    dropout = {"model.dropout": 0.1, "model.head_dropout": 0.3}  # the default has none
    digits = _advice(history, {"data.dataset": "digits", **dropout}, (8, 8, 1))
    assert "augment" not in digits and "model.blocks" not in digits and "model.filters" in digits
    assert "data.image_size" not in digits  # built-in datasets come in one size
    # Fashion-MNIST shifts and flips, and 28x28 allows 4 blocks: both levers are real there.
    fashion = _advice(history, {"data.dataset": "fashion_mnist", **dropout}, (28, 28, 1))
    assert "model.blocks" in fashion
    if history is CAPACITY_LIMITED:
        assert "dropout and augmentation active" in fashion and "data.augment.*" in fashion
        assert "measured with dropout active" in digits and "model.dropout" in digits
        bare = _advice(history, {"data.dataset": "digits"}, (8, 8, 1))
        assert "in training mode" in bare and "dropout" not in bare and "less regularisation" not in bare
