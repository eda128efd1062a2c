"""Stopping a job: SIGTERM or SIGINT (Stop on the Train page, `cancel`, Ctrl-C) ends it as 'cancelled'.

    with on_signals() as cancel:          # for the whole job, in the main thread
        decode_images()                   # a signal here raises Cancelled at once
        with cancel.deferred():           # TensorFlow's fit: a signal only sets cancel.requested,
            model.fit(..., callbacks=[checks cancel.requested between batches])
        evaluate_and_save()               # raises Cancelled at once again

Raising inside a TensorFlow op is not safe, so during fit the signal is
deferred to the next batch boundary; everywhere else it raises at once, so a
Stop while images decode or the model saves still ends the run as cancelled
rather than killing the process and leaving it 'interrupted'.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Cancelled(Exception):
    """The job was asked to stop."""


class Cancellation:
    def __init__(self):
        self.requested = False
        self._deferring = 0

    def _handler(self, signum, frame):
        first = not self.requested
        self.requested = True
        # Once: a second signal must not break the cleanup that the first started.
        if first and not self._deferring:
            raise Cancelled()

    @contextmanager
    def deferred(self):
        """Signals only set `requested` inside; leaving raises Cancelled if one came."""
        self._deferring += 1
        try:
            yield self
        finally:
            self._deferring -= 1
        if self.requested:
            raise Cancelled()


@contextmanager
def on_signals():
    """A Cancellation whose handler takes SIGTERM and SIGINT while the block runs.

    Outside the main thread (tests that train in a thread) no handler can be
    set: the Cancellation then only stops when `requested` is set by hand.
    """
    cancel = Cancellation()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return
    previous = {sig: signal.signal(sig, cancel._handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield cancel
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
