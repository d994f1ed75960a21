"""A bounded queue that worker threads drain in batches (the extractor pool's clips, the frame
batcher's frames).

``put`` blocks while ``max_queued`` items wait (back-pressure on the producers) and raises
RuntimeError once closed; ``take`` waits for a first item, then at most ``wait_s`` more for a full
batch of ``size``, and returns up to ``size`` items — only those sharing the oldest item's
``key(item)`` when a key is given, the others keep their order — or None once closed and drained.
``lock``: the queue's condition, also usable by the owner for its own counters.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable


class BatchQueue:
    def __init__(self, max_queued: int, size: int, wait_s: float, what: str) -> None:
        self.max_queued, self.size, self.wait_s, self.what = int(max_queued), int(size), float(wait_s), what
        self.items: collections.deque[Any] = collections.deque()
        self.lock = threading.Condition()
        self.closed = False

    def put(self, item: Any) -> None:
        with self.lock:
            while len(self.items) >= self.max_queued and not self.closed:
                self.lock.wait(0.5)
            if self.closed:
                raise RuntimeError(f"{self.what} is closed")
            self.items.append(item)
            self.lock.notify_all()

    def close(self) -> None:
        """No more items; ``take`` still hands out what is queued."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()

    def take(self, key: Callable[[Any], Any] | None = None) -> list[Any] | None:
        q = self.items
        with self.lock:
            while True:
                while not q:
                    if self.closed:
                        return None
                    self.lock.wait(0.5)
                if len(q) < self.size and self.wait_s > 0 and not self.closed:
                    deadline = time.monotonic() + self.wait_s
                    while len(q) < self.size and (left := deadline - time.monotonic()) > 0:
                        self.lock.wait(left)
                if q:  # another thread may have emptied the queue while this one waited
                    break
            if key is None:
                out = [q.popleft() for _ in range(min(self.size, len(q)))]
            else:
                first, out, keep = key(q[0]), [], []
                while q:
                    item = q.popleft()
                    (out if key(item) is first and len(out) < self.size else keep).append(item)
                q.extend(keep)
            self.lock.notify_all()
            return out
