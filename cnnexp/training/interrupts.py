"""Ctrl-C and SIGTERM during ``fit``: taken at the end of the running batch, then raised after ``fit``.

An interrupt raised wherever the signal lands unwinds through TensorFlow while tf.data's prefetch
threads still run; in 2 of 9 tries on a 2-core Zen 5 that aborted the process in glibc
(``malloc_consolidate(): invalid chunk size``) before its MLflow run could be ended KILLED. Keras
stops cleanly between batches when ``model.stop_training`` is set, so the signal only asks for that
and is delivered again after ``fit``; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import keras

from cnnexp.tracking.runs import INTERRUPT_SIGNALS


class StopOnInterrupt(keras.callbacks.Callback):
    """Stops training at the next batch end once a signal is caught (the epoch's validation still runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.caught: list[int] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.caught:
            self.model.stop_training = True


@contextmanager
def interrupts_between_batches() -> Iterator[StopOnInterrupt]:
    """Around ``fit``: yields the callback to pass it; once ``fit`` has returned, each caught signal is
    raised again, so whoever handled it before handles it now (the CLI ends its runs KILLED for SIGTERM,
    Python raises KeyboardInterrupt for Ctrl-C). An ignored signal stays ignored. Main thread only:
    elsewhere signals cannot be handled and the callback never stops anything."""
    stopper = StopOnInterrupt()
    if threading.current_thread() is not threading.main_thread():
        yield stopper
        return

    def caught(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and signal.SIGINT in stopper.caught:
            raise KeyboardInterrupt  # a second Ctrl-C: the user will not wait for the batch
        stopper.caught.append(signum)

    held = [sig for sig in INTERRUPT_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]
    saved = {sig: signal.signal(sig, caught) for sig in held}
    try:
        yield stopper
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        # Also when fit raised (a trial pruned at the epoch's end): the user's interrupt is never lost.
        for sig in dict.fromkeys(stopper.caught):  # once each, in the order they came
            signal.raise_signal(sig)
