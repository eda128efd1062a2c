"""cancellation: a Stop raises at once outside fit and waits for a batch boundary inside it."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from cxr_core.cancellation import Cancellation, Cancelled, on_signals


def _stop() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_outside_fit_cancels_at_once():
    reached = []
    with pytest.raises(Cancelled):
        with on_signals() as cancel:
            _stop()
            reached.append("after the signal")
    assert reached == [] and cancel.requested


def test_a_signal_during_fit_waits_for_the_end_of_the_deferred_block():
    steps = []
    with pytest.raises(Cancelled):
        with on_signals() as cancel:
            with cancel.deferred():
                _stop()
                steps.append("the batch finished")
                assert cancel.requested  # what the training callback checks between batches
            steps.append("never: leaving the block raises")
    assert steps == ["the batch finished"]


def test_a_second_signal_does_not_break_the_cleanup_of_the_first():
    cleaned = []
    with pytest.raises(Cancelled):
        with on_signals():
            try:
                _stop()
            finally:
                _stop()  # a second Stop while the first unwinds
                cleaned.append(True)
    assert cleaned == [True]


def test_the_previous_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with on_signals():
        assert signal.getsignal(signal.SIGTERM) != before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_outside_the_main_thread_no_handler_is_set_and_a_request_by_hand_still_stops():
    seen = {}

    def job():
        before = signal.getsignal(signal.SIGTERM)
        with on_signals() as cancel:
            seen["handler_unchanged"] = signal.getsignal(signal.SIGTERM) is before
            try:
                with cancel.deferred():
                    cancel.requested = True
            except Cancelled:
                seen["cancelled"] = True

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(10)
    assert seen == {"handler_unchanged": True, "cancelled": True}


def test_nothing_requested_nothing_raised():
    cancel = Cancellation()
    with cancel.deferred():
        pass
    assert not cancel.requested
