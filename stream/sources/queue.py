"""The bounded queue between a source's decode thread and its consumer, and the two markers a
source puts on it besides :class:`~fusewatch.stream.clips.Frame` and
:class:`~fusewatch.stream.clips.AudioChunk` items: :class:`Discontinuity` and, last,
:class:`EndOfStream`."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..clips import Frame


@dataclass
class EndOfStream:
    """Last queue item of a source: ``error`` set when the source failed (no usable frames or
    gave up reconnecting); ``warning`` set for a clean end after a mid-file decode failure."""

    error: str | None = None
    warning: str | None = None


@dataclass
class Discontinuity:
    """Queue item after a live source lost its stream, or before the first frame of a new size
    (``reason = "resolution_change"``): frames before and after it do not belong in one clip
    (consumers drop their partial clip window)."""

    reason: str = ""


class FrameQueue:
    """Bounded queue between decoder and consumer; capacity counts video frames only.

    ``drop_oldest``: a put on a full queue evicts the oldest frame (and audio queued before it)
    and counts it; ``block``: the producer waits for space (it never loses a frame).
    """

    def __init__(self, maxsize: int, policy: str = "drop_oldest", on_drop: Callable[[int], None] | None = None):
        if policy not in ("drop_oldest", "block"):
            raise ValueError(f"overflow policy must be drop_oldest or block (got {policy!r})")
        self.maxsize = max(1, int(maxsize))
        self.policy = policy
        self.dropped = 0
        self.dropped_audio = 0
        self._items: deque[Any] = deque()
        self._frames = 0
        self._cv = threading.Condition()
        self._on_drop = on_drop

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    @property
    def frames(self) -> int:
        return self._frames

    def put(
        self,
        item: Any,
        alive: Callable[[], bool] = lambda: True,
        on_wait: Callable[[], None] | None = None,
        force: bool = False,
    ) -> bool:
        """Enqueue ``item``; returns False when ``alive()`` turned false while blocked."""
        is_frame = isinstance(item, Frame)
        dropped = 0
        with self._cv:
            if is_frame and not force:
                if self.policy == "block":
                    while self._frames >= self.maxsize:
                        if not alive():
                            return False
                        if on_wait:
                            on_wait()
                        self._cv.wait(0.05)
                else:
                    while self._frames >= self.maxsize and self._items:
                        old = self._items.popleft()
                        if isinstance(old, Frame):
                            self._frames -= 1
                            dropped += 1
                        else:
                            self.dropped_audio += 1
                    self.dropped += dropped
            self._items.append(item)
            if is_frame:
                self._frames += 1
            self._cv.notify_all()
        if dropped and self._on_drop:
            self._on_drop(dropped)
        return True

    def get(self, timeout: float | None = None) -> Any:
        """Next item, or None after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while not self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cv.wait(left if left is not None else 0.5)
            item = self._items.popleft()
            if isinstance(item, Frame):
                self._frames -= 1
            self._cv.notify_all()
            return item
