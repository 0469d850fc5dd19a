"""Ctrl-C during `drcl tune` waits for a safe point: raised inside a write to the study's
database it once surfaced as a database error and exit code 1 instead of the one-line stop."""

from __future__ import annotations

import os
import signal

import pytest

from drcl.tune import _DeferredInterrupt


def test_the_first_ctrl_c_is_taken_at_the_next_check_and_the_second_at_once():
    before = signal.getsignal(signal.SIGINT)
    with _DeferredInterrupt() as interrupt:
        interrupt.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGINT)  # delivered here, in the main thread: no raise
        assert interrupt.pending
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is back


def test_a_new_search_starts_with_nothing_pending():
    interrupt = _DeferredInterrupt()
    with interrupt:
        os.kill(os.getpid(), signal.SIGINT)
    with interrupt:
        interrupt.check()
