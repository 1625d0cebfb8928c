"""Ctrl-C and SIGTERM during fit are taken between batches and delivered after fit (training/interrupts.py)."""

import os
import signal

import keras
import numpy as np
import pytest

from cnnexp.training.interrupts import interrupts_between_batches


class _CtrlCAtBatch(keras.callbacks.Callback):
    def __init__(self, at: int, sig: int = signal.SIGINT) -> None:
        super().__init__()
        self.at, self.sig, self.batches = at, sig, 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.batches += 1
        if self.batches == self.at:
            os.kill(os.getpid(), self.sig)


def _fit(callbacks) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.zeros((64, 4), "float32"), np.zeros((64, 2), "float32")
    model.fit(x, y, batch_size=4, epochs=3, callbacks=callbacks, verbose=0)  # 16 batches an epoch
    return model


def test_ctrl_c_stops_fit_at_the_batch_end_and_is_raised_after_it():
    sender = _CtrlCAtBatch(at=2)
    with pytest.raises(KeyboardInterrupt):
        with interrupts_between_batches() as stopper:
            _fit([sender, stopper])
    assert sender.batches == 2 and stopper.caught == [signal.SIGINT]  # no batch after the signal's
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_sigterm_is_delivered_to_the_handler_that_was_there_before():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with interrupts_between_batches() as stopper:
            _fit([_CtrlCAtBatch(at=3, sig=signal.SIGTERM), stopper])
            assert seen == []  # held while fit ran
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_ignored_signal_stays_ignored_and_fit_runs_to_its_end():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        sender = _CtrlCAtBatch(at=2, sig=signal.SIGTERM)
        with interrupts_between_batches() as stopper:
            _fit([sender, stopper])
        assert sender.batches == 3 * 16 and stopper.caught == []
    finally:
        signal.signal(signal.SIGTERM, previous)


class _RaiseAtEpochEnd(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None) -> None:
        raise RuntimeError("pruned")  # what Optuna's pruning callback does at a rung


def test_an_interrupt_caught_before_fit_raised_is_not_lost():
    with pytest.raises(KeyboardInterrupt):
        with interrupts_between_batches() as stopper:
            _fit([_CtrlCAtBatch(at=2), stopper, _RaiseAtEpochEnd()])
