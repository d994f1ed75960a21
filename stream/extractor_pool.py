"""A shared extractor pool for many cameras: CNN inference batched across cameras' clips.

::

    pool = ExtractorPool(extractors, threads=2, batch_clips=8, batch_wait_ms=5)
    pool.submit("cam1", clip, done)     # done(outcomes, gated) runs on a pool thread
    pool.close()

Each pool thread takes up to ``batch_clips`` queued clips (of any cameras; waiting at most
``batch_wait_ms`` for more once it has one) and runs every CNN backbone on all their
(sub-sampled) frames together — ONNX Runtime calls of up to ``MAX_FRAMES`` frames of several clips
on the batch axis (the exported backbones have a dynamic batch axis) — then pools each clip's slice
exactly as :meth:`BackboneExtractor.extract` does. The other extractors (flow, audio, ``onnx:``)
run clip by clip. Per-clip outcomes go to the submitter's callback as ``[(name, array | None,
error | None, seconds)]`` in extractor order; ``seconds`` of a batched backbone is the batch's time
shared out by frame count.

``submit`` blocks while ``(threads + 1) × batch_clips`` clips are queued (back-pressure: the
cameras' bounded frame queues then apply their overflow policy, as with one worker per camera).

Motion gate (``motion_gate=True``): a clip whose fraction of changed pixels between consecutive
frames (grey, 160 px wide, |Δ| > 25 levels) stays below ``gate_threshold`` skips the backbones and
reuses the camera's last backbone embedding (the first clip of a camera always runs them).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import cv2
import numpy as np

from .batch_queue import BatchQueue
from .frame_batcher import is_batchable
from .frame_parts import Outcome
from .logs import get_logger

__all__ = ["ExtractorPool", "is_batchable", "motion_fraction"]

Done = Callable[[list[Outcome], bool], None]

MAX_FRAMES = 32
"""Most frames per ONNX Runtime call (batch 16 and 64 cost the same per frame on this CPU, while
ONNX Runtime's memory arena grows with the batch: ~0.5 GB per camera at 128-frame batches)."""
GATE_WIDTH = 160
GATE_LEVEL = 25


def motion_fraction(frames: list[np.ndarray]) -> float:
    """Largest fraction of pixels changing by more than GATE_LEVEL grey levels between consecutive
    frames (downscaled to GATE_WIDTH px wide)."""
    if len(frames) < 2:
        return 0.0
    h, w = frames[0].shape[:2]
    size = (GATE_WIDTH, max(1, round(h * GATE_WIDTH / w)))
    prev, best = None, 0.0
    for f in frames:
        g = cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
        if prev is not None:
            best = max(best, float(np.count_nonzero(cv2.absdiff(g, prev) > GATE_LEVEL)) / g.size)
        prev = g
    return best


class _Job:
    __slots__ = ("key", "clip", "done", "ready")

    def __init__(self, key, clip, done, ready=None):
        self.key, self.clip, self.done = key, clip, done
        self.ready: dict[str, Outcome] = dict(ready or {})


class ExtractorPool:
    """Shared extractors for several cameras (see the module docstring)."""

    def __init__(
        self,
        extractors,
        *,
        threads: int = 2,
        batch_clips: int = 8,
        batch_wait_ms: float = 5.0,
        motion_gate: bool = False,
        gate_threshold: float = 0.002,
    ):
        self.extractors = list(extractors)
        self.batch_clips = max(1, int(batch_clips))
        self.batch_wait = max(0.0, float(batch_wait_ms)) / 1000.0
        self.motion_gate = bool(motion_gate)
        self.gate_threshold = float(gate_threshold)
        self.max_queued = (max(1, int(threads)) + 1) * self.batch_clips
        self.log = get_logger("fusewatch.stream.extractor_pool")
        self._q = BatchQueue(self.max_queued, self.batch_clips, self.batch_wait, "extractor pool")
        self._last: dict[tuple[str, str], np.ndarray] = {}
        self.batches = 0
        self.clips = 0
        self.clips_gated = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"fusewatch-pool-{i}", daemon=True)
            for i in range(max(1, int(threads)))
        ]
        for t in self._threads:
            t.start()

    # -- producer side ------------------------------------------------------------------------
    def submit(self, key: str, clip, done: Done, ready: dict[str, Outcome] | None = None) -> None:
        """Queue ``clip`` of camera ``key``; ``done(outcomes, gated)`` is called once on a pool thread.
        ``ready``: outcomes already known (per-frame extraction), not run again."""
        self._q.put(_Job(key, clip, done, ready))

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued clips, then stop the pool threads."""
        self._q.close()
        for t in self._threads:
            t.join(timeout)

    # -- pool threads -------------------------------------------------------------------------
    def _loop(self) -> None:
        while (jobs := self._q.take()) is not None:
            try:
                results = self.run_batch(jobs)
            except Exception as e:  # never lose the callbacks: every extractor failed for these clips
                self.log.error("pool batch failed", extra={"fields": {"error": f"{type(e).__name__}: {e}"}})
                results = [([(x.name, None, e, 0.0) for x in self.extractors], False) for _ in jobs]
            for job, (outcomes, gated) in zip(jobs, results):
                try:
                    job.done(outcomes, gated)
                except Exception as e:
                    self.log.error(
                        "pool callback failed",
                        extra={"fields": {"camera": job.key, "error": f"{type(e).__name__}: {e}"}},
                    )

    def run_batch(self, jobs: list[_Job]) -> list[tuple[list[Outcome], bool]]:
        """Outcomes of every extractor for each job (backbones batched across the jobs)."""
        n = len(jobs)
        gated = [False] * n
        if self.motion_gate:
            seen: set[str] = set()  # cameras with an earlier clip in this batch (its embedding comes first)
            for j, job in enumerate(jobs):
                have_last = job.key in seen or all(
                    (job.key, e.name) in self._last for e in self.extractors if is_batchable(e)
                )
                if have_last:
                    gated[j] = motion_fraction(job.clip.frames) < self.gate_threshold
                seen.add(job.key)
        per: list[dict[str, Outcome]] = [{} for _ in range(n)]
        for e in self.extractors:
            if is_batchable(e):
                self._backbone(e, jobs, gated, per)
                continue
            for j, job in enumerate(jobs):
                if e.name in job.ready:
                    per[j][e.name] = job.ready[e.name]
                    continue
                c = job.clip
                t0 = time.perf_counter()
                try:
                    per[j][e.name] = (
                        e.name,
                        e.extract(c.frames, c.audio, c.audio_rate),
                        None,
                        time.perf_counter() - t0,
                    )
                except Exception as ex:
                    per[j][e.name] = (e.name, None, ex, time.perf_counter() - t0)
        with self._q.lock:
            self.batches += 1
            self.clips += n
            self.clips_gated += sum(gated)
        return [([per[j][e.name] for e in self.extractors], gated[j]) for j in range(n)]

    def _backbone(self, e, jobs, gated, per) -> None:
        from .extractors.base import check_frames, pool_frames, subsample_indices

        frames, spans = [], []
        for j, job in enumerate(jobs):
            if e.name in job.ready:
                per[j][e.name] = job.ready[e.name]
                continue
            if gated[j]:  # filled below, in clip order: the camera's previous clip may be in this batch
                continue
            try:
                check_frames(job.clip.frames, e.name)
            except Exception as ex:
                per[j][e.name] = (e.name, None, ex, 0.0)
                continue
            idx = subsample_indices(len(job.clip.frames), e.frames_per_clip)
            spans.append((j, len(frames), len(frames) + len(idx)))
            frames.extend(job.clip.frames[i] for i in idx)
        if not frames:
            self._fill_gated(e, jobs, gated, per)
            return
        t0 = time.perf_counter()
        try:  # chunks of MAX_FRAMES: larger batches gain nothing on CPU and grow ORT's arena
            feats = np.concatenate(
                [
                    e.session.run(None, {e.input_name: e.prepare(frames[i : i + MAX_FRAMES])})[0]
                    for i in range(0, len(frames), MAX_FRAMES)
                ]
            )
        except Exception as ex:
            for j, _, _ in spans:
                per[j][e.name] = (e.name, None, ex, 0.0)
            return
        dt = time.perf_counter() - t0
        for j, a, b in spans:
            per[j][e.name] = (e.name, pool_frames(feats[a:b], e.pool), None, dt * (b - a) / len(frames))
        self._fill_gated(e, jobs, gated, per)

    def _fill_gated(self, e, jobs, gated, per) -> None:
        """In clip order: a gated clip reuses its camera's last embedding; a computed one becomes it."""
        if not self.motion_gate:
            return
        for j, job in enumerate(jobs):
            key = (job.key, e.name)
            if gated[j]:
                last = self._last.get(key)  # None: the camera's previous clip failed in this batch
                err = None if last is not None else RuntimeError(f"{e.name}: no previous embedding to reuse")
                per[j][e.name] = (e.name, last, err, 0.0)
            elif per[j].get(e.name) is not None and per[j][e.name][1] is not None:
                self._last[key] = per[j][e.name][1]
