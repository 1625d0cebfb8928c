"""What a trained classifier gets right and wrong, as numbers and tables (no figures, no MLflow).

Everything here works on an :class:`~cnnexp.analysis.evaluate.Evaluation` (test probabilities, labels,
per-class report, confusion) and the training history, so a fresh training run and an old run
re-evaluated from its logged model are analysed by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cnnexp.analysis.evaluate import Evaluation
from cnnexp.config import ExperimentConfig
from cnnexp.models.cnn import max_blocks

# Thresholds for the written findings, in accuracy points (0-1). Chosen as what a practitioner
# would call "clearly" over- or underfit on a balanced image-classification task.
OVERFIT_GAP = 0.03
UNDERFIT_TRAIN_ACCURACY = 0.90
WELL_CALIBRATED_ECE = 0.02
REGULARISED_GAP = 0.01


@dataclass
class Calibration:
    ece: float  # expected calibration error: bin-weighted |accuracy - confidence|
    mean_confidence: float
    accuracy: float
    bins: pd.DataFrame  # bin_lower, bin_upper, count, confidence, accuracy (NaN in empty bins)


@dataclass
class Analysis:
    evaluation: Evaluation
    class_names: tuple[str, ...]
    calibration: Calibration
    confused_pairs: pd.DataFrame  # true, predicted, count, rate (share of the true class)
    confidently_wrong: pd.DataFrame  # index, true, predicted, confidence, true_class_probability
    history: dict[str, list[float]]
    # The run's config and image shape: advice names only what is on and what the input allows.
    config: ExperimentConfig | None = None
    input_shape: tuple[int, ...] | None = None


def calibration(probabilities: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> Calibration:
    """Top-label calibration with equal-width confidence bins (Guo et al., 2017)."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins, so a confidence of exactly 1.0 falls in the last one.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows = []
    ece = 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        conf = float(confidence[mask].mean()) if count else float("nan")
        acc = float(correct[mask].mean()) if count else float("nan")
        if count:
            ece += count / len(y_true) * abs(acc - conf)
        rows.append(
            {"bin_lower": edges[b], "bin_upper": edges[b + 1], "count": count, "confidence": conf, "accuracy": acc}
        )
    return Calibration(float(ece), float(confidence.mean()), float(correct.mean()), pd.DataFrame(rows))


def confused_pairs(confusion: np.ndarray, class_names: tuple[str, ...], top: int = 10) -> pd.DataFrame:
    """Off-diagonal cells of the confusion matrix, largest first: which class is taken for which."""
    support = confusion.sum(axis=1)
    rows = [
        {
            "true": class_names[i],
            "predicted": class_names[j],
            "count": int(confusion[i, j]),
            "rate": float(confusion[i, j] / support[i]) if support[i] else 0.0,
        }
        for i in range(len(class_names))
        for j in range(len(class_names))
        if i != j and confusion[i, j] > 0
    ]
    frame = pd.DataFrame(rows, columns=["true", "predicted", "count", "rate"])
    return frame.sort_values(["count", "rate"], ascending=False, kind="stable").head(top).reset_index(drop=True)


def confidently_wrong(ev: Evaluation, class_names: tuple[str, ...], top: int = 16) -> pd.DataFrame:
    """The wrong test predictions the model was surest of: often label noise or truly ambiguous images."""
    wrong = np.flatnonzero(ev.y_pred != ev.y_true)
    confidence = ev.probabilities[wrong, ev.y_pred[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:top]
    return pd.DataFrame(
        {
            "index": order.astype(int),
            "true": [class_names[i] for i in ev.y_true[order]],
            "predicted": [class_names[i] for i in ev.y_pred[order]],
            "confidence": ev.probabilities[order, ev.y_pred[order]].astype(float),
            "true_class_probability": ev.probabilities[order, ev.y_true[order]].astype(float),
        }
    )


def analyze(
    ev: Evaluation,
    class_names: tuple[str, ...],
    history: dict[str, list[float]] | None = None,
    config: ExperimentConfig | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Analysis:
    return Analysis(
        evaluation=ev,
        class_names=class_names,
        calibration=calibration(ev.probabilities, ev.y_true),
        confused_pairs=confused_pairs(ev.confusion, class_names),
        confidently_wrong=confidently_wrong(ev, class_names),
        history=history or {},
        config=config,
        input_shape=input_shape,
    )


# ---------------------------------------------------------------------------- what the run can change


@dataclass
class Levers:
    """What a run's config has on and what its input allows, for advice that applies (unknown: all)."""

    regularisers: list[str]  # "dropout", "augmentation": those active in training
    lower: list[str]  # config keys that could be lowered to regularise less
    capacity: list[str]  # config keys that could be raised for more capacity
    resizable: bool  # folder datasets: data.image_size can give the model more pixels

    @classmethod
    def of(cls, cfg: ExperimentConfig | None, input_shape: tuple[int, ...] | None) -> Levers:
        if cfg is None:
            everything = ["model.filters", "model.blocks"]
            return cls(["dropout", "augmentation"], ["model.dropout", "data.augment.*"], everything, True)
        m, aug = cfg.model, cfg.data.augment
        dropout = bool(m.dropout or m.head_dropout)
        augmented = bool(aug.rotation or aug.shift or aug.zoom or aug.horizontal_flip)
        regularisers = ["dropout"] * dropout + ["augmentation"] * augmented
        lower = [k for k, on in (("model.dropout", m.dropout), ("model.head_dropout", m.head_dropout)) if on]
        lower += ["data.augment.*"] * augmented
        room = input_shape is None or m.blocks < max_blocks(input_shape)  # each block halves the image
        return cls(regularisers, lower, ["model.filters"] + ["model.blocks"] * room, cfg.data.image_size is not None)


def _either(keys: list[str]) -> str:
    return " or ".join(keys)


# ---------------------------------------------------------------------------- written findings


def fit_diagnosis(history: dict[str, list[float]], levers: Levers | None = None) -> tuple[str, str]:
    """(verdict, sentence) about over/underfitting from the per-epoch curves, at the best epoch.

    The best epoch is the one with the lowest validation loss: early stopping restores its weights.
    Verdicts: ``overfit``, ``underfit``, ``capacity-limited``, ``still improving``, ``good fit`` or ``unknown``.
    """
    levers = levers or Levers.of(None, None)
    capacity = _either(levers.capacity)
    val_loss, acc, val_acc = history.get("val_loss"), history.get("accuracy"), history.get("val_accuracy")
    if not val_loss or not acc or not val_acc:
        return "unknown", "No per-epoch history was recorded, so over- or underfitting cannot be judged."
    best = int(np.argmin(val_loss))
    gap = acc[best] - val_acc[best]
    epochs = len(val_loss)
    where = (
        f"at the best epoch ({best + 1} of {epochs}) train accuracy is {acc[best]:.4f}, validation {val_acc[best]:.4f}"
    )
    if gap > OVERFIT_GAP:
        return "overfit", (
            f"Overfitting: {where}, a gap of {gap * 100:.1f} points; validation loss was lowest at epoch {best + 1}. "
            "More regularisation (dropout, augmentation, weight decay) or more data should help."
        )
    if acc[best] < UNDERFIT_TRAIN_ACCURACY and best == epochs - 1:
        return "underfit", (
            f"Underfitting: {where}, and validation loss was still falling at the last epoch. "
            f"Train longer or give the model more capacity ({capacity})."
        )
    if best == epochs - 1:
        return "still improving", (
            f"No overfitting yet: {where} (gap {gap * 100:+.1f} points) and validation loss was still falling "
            "at the last epoch, so more epochs are likely to help."
        )
    if gap < -REGULARISED_GAP:
        # Keras measures train accuracy in training mode (dropout, augmentation, batch statistics on).
        measured = " and ".join(levers.regularisers) + " active" if levers.regularisers else "in training mode"
        less = f" or less regularisation ({_either(levers.lower)})" if levers.lower else ""
        return "capacity-limited", (
            f"No overfitting by accuracy: {where}. Train accuracy is measured with {measured}, "
            f"and it stays {-gap * 100:.1f} points below validation. Validation loss stopped improving "
            f"after epoch {best + 1} while training went on, so more epochs alone will not help; more capacity "
            f"({capacity}){less} might."
        )
    if acc[best] < UNDERFIT_TRAIN_ACCURACY:
        return "underfit", (
            f"Underfitting: {where}; the model does not fit even the training data well. "
            f"Try more capacity ({capacity}) or a higher learning rate."
        )
    return "good fit", f"Good fit: {where} (gap {gap * 100:+.1f} points); early stopping found a clear optimum."


def calibration_sentence(cal: Calibration) -> str:
    direction = "overconfident" if cal.mean_confidence > cal.accuracy else "underconfident"
    if cal.ece <= WELL_CALIBRATED_ECE:
        return (
            f"Well calibrated: expected calibration error {cal.ece:.4f} (mean confidence {cal.mean_confidence:.4f}, "
            f"accuracy {cal.accuracy:.4f}); its probabilities can be read as probabilities."
        )
    return (
        f"Miscalibrated ({direction}): expected calibration error {cal.ece:.4f}; mean confidence "
        f"{cal.mean_confidence:.4f} against accuracy {cal.accuracy:.4f}. Temperature scaling on the validation "
        "set" + (" or label smoothing" if direction == "overconfident" else "") + " would fix most of it."
    )


def findings(a: Analysis) -> dict[str, list[str]]:
    """Strengths, limitations and what to try next, each sentence computed from the numbers."""
    ev, pc = a.evaluation, a.evaluation.per_class.sort_values("f1", kind="stable")
    strengths, limits, next_steps = [], [], []
    acc = ev.metrics["test_accuracy"]
    strengths.append(
        f"Test accuracy {acc:.4f} and macro-F1 {ev.metrics['test_macro_f1']:.4f} on {len(ev.y_true)} images."
    )
    best = pc.tail(3).iloc[::-1]
    strengths.append(
        "Strongest classes (F1): " + ", ".join(f"{r['class']} {r['f1']:.3f}" for _, r in best.iterrows()) + "."
    )
    weak = pc.head(3)
    limits.append("Weakest classes (F1): " + ", ".join(f"{r['class']} {r['f1']:.3f}" for _, r in weak.iterrows()) + ".")
    if len(a.confused_pairs):
        p = a.confused_pairs.iloc[0]
        limits.append(
            f"Most common confusion: {p['true']} taken for {p['predicted']} ({int(p['count'])} times, "
            f"{p['rate'] * 100:.1f}% of {p['true']})."
        )
    n_sure = int((a.confidently_wrong["confidence"] >= 0.9).sum()) if len(a.confidently_wrong) else 0
    if n_sure:
        limits.append(
            f"{n_sure} of the {len(a.confidently_wrong)} most confidently wrong images were predicted with at least "
            "90% confidence: look at them for label noise or genuinely ambiguous items."
        )
    levers = Levers.of(a.config, a.input_shape)
    verdict, fit_text = fit_diagnosis(a.history, levers)
    (limits if verdict in ("overfit", "underfit", "capacity-limited") else strengths).append(fit_text)
    cal_text = calibration_sentence(a.calibration)
    (strengths if a.calibration.ece <= WELL_CALIBRATED_ECE else limits).append(cal_text)

    worst = weak.iloc[0]["class"]
    if len(a.confused_pairs):
        p = a.confused_pairs.iloc[0]
        next_steps.append(
            f"Target the {p['true']}/{p['predicted']} confusion: "
            + ("higher input resolution (data.image_size) or " if levers.resizable else "")
            + f"more filters in the first blocks help fine detail; class-weighted loss or more examples of {worst} "
            "help its recall."
        )
    if verdict == "overfit":
        next_steps.append("Raise model.dropout or data.augment.* and compare validation loss curves.")
    elif verdict in ("underfit", "still improving"):
        next_steps.append(f"Raise train.epochs (with early stopping kept on) or {_either(levers.capacity)}.")
    elif verdict == "capacity-limited":
        lower = f", or lower {_either(levers.lower)}" if levers.lower else ""
        next_steps.append(f"Raise {_either(levers.capacity)}{lower}, and compare.")
    else:
        next_steps.append("Tune learning rate and width with `cnnexp tune` to find the remaining points.")
    if a.calibration.ece > WELL_CALIBRATED_ECE:
        next_steps.append("Calibrate the probabilities (temperature scaling) before using them as confidences.")
    return {"strengths": strengths, "limitations": limits, "next steps": next_steps}


def summary_markdown(a: Analysis) -> str:
    """The written summary of strengths and limits logged with every training run."""
    lines = ["# Model summary", ""]
    for title, sentences in findings(a).items():
        lines += [f"## {title.capitalize()}", ""] + [f"- {s}" for s in sentences] + [""]
    return "\n".join(lines)
