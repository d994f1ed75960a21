"""FrameBatcher (stream/frame_batcher.py): frames of several cameras share inference calls, each
gets its own row back, a bad frame fails only in the camera that sent it, a failed call fails only
its own frames, and close() finishes what is queued."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fusewatch.stream.extractors.base import check_frames
from fusewatch.stream.frame_batcher import FrameBatcher


class _Session:
    """``run`` maps each (1, 3, 2, 2) input to its mean per channel; fails on request."""

    def __init__(self):
        self.calls: list[int] = []
        self.fail_next = False
        self.gate = threading.Event()
        self.gate.set()

    def run(self, _out, feeds):
        self.gate.wait(5)
        x = feeds["x"]
        self.calls.append(len(x))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("inference failed")
        return [x.mean(axis=(2, 3))]


class _Backbone:
    name = "tiny"
    input_name = "x"

    def __init__(self):
        self.session = _Session()

    def prepare(self, frames):
        check_frames(frames, self.name)
        return np.stack([f[:2, :2].transpose(2, 0, 1) for f in frames]).astype(np.float32)


def _frame(v: int) -> np.ndarray:
    return np.full((4, 4, 3), v, np.uint8)


def test_frames_of_many_cameras_share_calls_and_get_their_own_rows():
    e = _Backbone()
    b = FrameBatcher(threads=1, batch_wait_ms=50)
    try:
        e.session.gate.clear()  # hold the first call so the others queue up behind it
        pend = [b.submit(e, _frame(v)) for v in range(1, 21)]
        e.session.gate.set()
        got = [p.get(5) for p in pend]
    finally:
        b.close()
    assert [float(g[0]) for g in got] == [float(v) for v in range(1, 21)]
    assert sum(e.session.calls) == 20 and len(e.session.calls) < 20 and max(e.session.calls) > 1
    assert b.frames == 20 and b.batches == len(e.session.calls)


def test_a_bad_frame_fails_in_its_sender_and_a_failed_call_only_its_frames():
    e = _Backbone()
    b = FrameBatcher(threads=1, batch_wait_ms=0)
    try:
        with pytest.raises(ValueError, match="H×W×3 uint8"):
            b.submit(e, np.zeros((4, 4), np.float32))  # refused in the camera's thread, nothing queued
        e.session.fail_next = True
        bad = b.submit(e, _frame(3))
        with pytest.raises(RuntimeError, match="inference failed"):
            bad.get(5)
        ok = b.submit(e, _frame(7))  # the next call works again
        assert float(ok.get(5)[0]) == 7.0 and ok.seconds > 0
    finally:
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(e, _frame(1))


def test_close_finishes_queued_frames():
    e = _Backbone()
    b = FrameBatcher(threads=2, max_frames=4, batch_wait_ms=1)
    pend = [b.submit(e, _frame(v)) for v in range(9)]
    b.close()
    assert [float(p.get(0)[0]) for p in pend] == [float(v) for v in range(9)]
    assert max(e.session.calls) <= 4
