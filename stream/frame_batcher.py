"""Cross-camera batching of per-frame CNN embeddings (the multi-camera worker's per-frame path).

::

    batcher = FrameBatcher(threads=1, batch_wait_ms=5)
    pending = batcher.submit(extractor, image)   # camera thread: preprocess here, then queue
    emb = pending.get(timeout=30)                # at clip end: (D,) float32, or the frame's error
    batcher.close()

With per-frame extraction (:mod:`.frame_parts`) each camera embeds its frames as they arrive. In a
:class:`~fusewatch.stream.multi_worker.MultiWorker` the camera threads do not run the backbone
themselves: each prepares its frame (validation, resize, normalisation: ``extractor.prepare``, so a
bad frame fails in its own camera) and queues the ``(1, 3, S, S)`` input here; batcher threads run
the backbone's ONNX session on up to ``max_frames`` queued frames of any cameras at once (waiting at
most ``batch_wait_ms`` for more once they hold one), so frames of many cameras share one inference
call. A camera waits for its frames' embeddings only at clip end (:meth:`Pending.get`), by which
time all but the newest are done. Opt-in (``worker.batch_frames``). Measured on the 2-core
reference CPU (int8 MobileNetV2): the call itself is cheaper per frame in batches (~7.7 → ~6.6 ms),
but the hand-off between threads eats the gain — files as fast as possible, 8 cameras: 6.40
cameras per core with it, 6.44 without, +8 MB per camera; live cameras (bench/latency.py): 0.248
vs 0.220 cores per camera and clip end → alert record p99 704 vs 227 ms (frames wait behind other
cameras' batches on a saturated CPU). Machines with more cores and cameras may gain from the batch
axis; measure with those two benchmarks before turning it on.

Back-pressure: :meth:`FrameBatcher.submit` blocks while ``max_queued`` frames wait (the cameras'
bounded frame queues then apply their overflow policy). A failed inference call is every frame of
that call's error (reported as that extractor's failure for their clips, never a silent gap);
:meth:`close` finishes the queued frames first.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .batch_queue import BatchQueue
from .logs import get_logger

MAX_FRAMES = 8
"""Most frames per ONNX Runtime call. 32 cost +73 MB per camera of peak memory (8 cameras: ORT's
arena and the queued inputs) for no CPU gain; 8 costs +8 MB (bench/worker.py, 2026-12-03)."""


def is_batchable(e) -> bool:
    """A backbone extractor whose per-frame features can be batched across frames and clips."""
    return all(hasattr(e, a) for a in ("per_frame", "prepare", "frames_per_clip", "pool", "spec", "resize", "session"))


class Pending:
    """One frame's embedding, filled by a batcher thread."""

    __slots__ = ("_done", "value", "error", "seconds")

    def __init__(self, seconds: float = 0.0) -> None:
        self._done = threading.Event()
        self.value: np.ndarray | None = None
        self.error: BaseException | None = None
        self.seconds = float(seconds)
        """Time spent on this frame: its preparation + its share of the inference call."""

    def _set(self, value: np.ndarray | None, error: BaseException | None, seconds: float) -> None:
        self.value, self.error = value, error
        self.seconds += seconds
        self._done.set()

    def get(self, timeout: float | None = 60.0) -> np.ndarray:
        """The ``(D,)`` embedding; raises the frame's error, or TimeoutError after ``timeout`` s."""
        if not self._done.wait(timeout):
            raise TimeoutError("per-frame CNN embedding not ready (batcher stalled or closed)")
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


class FrameBatcher:
    """Batched backbone inference on frames of many cameras (module docstring)."""

    def __init__(self, *, threads: int = 1, max_frames: int = MAX_FRAMES, batch_wait_ms: float = 5.0) -> None:
        self.max_frames = max(1, int(max_frames))
        self.batch_wait = max(0.0, float(batch_wait_ms)) / 1000.0
        self.max_queued = (max(1, int(threads)) + 1) * self.max_frames
        self.log = get_logger("fusewatch.stream.frame_batcher")
        self._q = BatchQueue(self.max_queued, self.max_frames, self.batch_wait, "frame batcher")
        self.batches = 0
        self.frames = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"fusewatch-frames-{i}", daemon=True)
            for i in range(max(1, int(threads)))
        ]
        for t in self._threads:
            t.start()

    def submit(self, extractor, image: np.ndarray) -> Pending:
        """Prepare ``image`` (H×W×3 uint8 RGB) for ``extractor`` in the caller's thread and queue it.
        A frame the extractor refuses raises here, in the camera that sent it."""
        t0 = time.perf_counter()
        x = extractor.prepare([image])  # validates (one-line ValueError) and normalises: (1, 3, S, S)
        p = Pending(time.perf_counter() - t0)
        self._q.put((extractor, x, p))
        return p

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued frames, then stop the batcher threads."""
        self._q.close()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        while (items := self._q.take(key=lambda it: it[0])) is not None:  # one extractor per call
            e = items[0][0]
            t0 = time.perf_counter()
            try:
                x = np.concatenate([it[1] for it in items])
                feats = e.session.run(None, {e.input_name: x})[0]  # type: ignore[attr-defined]
                if len(feats) != len(items):
                    raise RuntimeError(f"backbone returned {len(feats)} embeddings for {len(items)} frames")
                err = None
            except Exception as ex:  # every frame of the call fails; never a silent gap
                feats, err = None, ex
                self.log.error("batched inference failed", extra={"fields": {"error": f"{type(ex).__name__}: {ex}"}})
            share = (time.perf_counter() - t0) / len(items)
            for i, (_, _, p) in enumerate(items):
                p._set(None if feats is None else np.asarray(feats[i], np.float32), err, share)
            with self._q.lock:
                self.batches += 1
                self.frames += len(items)
