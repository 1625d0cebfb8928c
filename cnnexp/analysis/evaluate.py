"""Test-set evaluation with scikit-learn metrics: accuracy, macro-F1, per-class report, confusion."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


@dataclass
class Evaluation:
    probabilities: np.ndarray  # (n, classes)
    y_true: np.ndarray
    y_pred: np.ndarray
    metrics: dict[str, float]  # test_loss, test_accuracy, test_macro_f1
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: np.ndarray  # raw counts, rows = true class


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-image cross-entropy, independent of any label smoothing used in training."""
    return -np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))


def evaluate(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    batch_size: int = 256,
) -> Evaluation:
    probs = model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(class_names)))
    # Plain cross-entropy, independent of any label smoothing used in training.
    loss = float(np.mean(cross_entropy(probs, y)))
    report = classification_report(
        y, y_pred, labels=labels, target_names=list(class_names), output_dict=True, zero_division=0
    )
    per_class = pd.DataFrame(
        [
            {
                "class": name,
                "precision": report[name]["precision"],
                "recall": report[name]["recall"],
                "f1": report[name]["f1-score"],
                "support": int(report[name]["support"]),
            }
            for name in class_names
        ]
    )
    metrics = {
        "test_loss": float(loss),
        "test_accuracy": float(accuracy_score(y, y_pred)),
        "test_macro_f1": float(f1_score(y, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    return Evaluation(probs, y, y_pred, metrics, per_class, confusion_matrix(y, y_pred, labels=labels))
