"""Per-frame extraction as frames arrive, so a clip's features are ready moments after its last frame.

Without it a worker runs all of a clip's extraction when the clip's last frame arrives: ~200 ms of
CPU (15 flow fields, 16 CNN frames) that start only at clip end, in a burst, for every camera at
once. With it (``worker.per_frame = true``, the default) each sampled frame is worked on as it
arrives — the CNN embedding of the frame, the grey downscale and the optical-flow field between it
and the previous frame — and at clip end only the clip-level pooling and statistics remain.
The features are the same (the extractors' ``extract`` pools the same per-frame results; tested
to ≤ 1e-4), and the CPU per clip about the same; what changes is *when* it is spent: spread over the
clip's 1.6 s instead of after it (latency), and each frame once when clips overlap
(``clip_stride < clip_len``: 4× fewer CNN frames at stride 4 of 16).

An extractor takes part by implementing (duck-typed; the built-in CNN backbones and ``flow``):

``frame_part(image) -> part``
    work on one sampled frame (H×W×3 uint8 RGB): the CNN's pooled embedding ``(D,)``, the flow's
    small grey frame;
``pair_part(prev_part, part) -> part2``  (optional)
    work on two consecutive frames' parts: the flow field between them;
``combine(parts, pairs) -> (dim,) float32``
    the clip feature from its frames' parts (``None`` where not needed) and its ``len − 1`` pairs;
``frame_positions(clip_len) -> set[int] | None``
    positions inside a clip whose frame part ``combine`` reads (None: every frame).

Extractors without these (audio, ``onnx:``, ``flow_grid``, ``objects``, patches) keep running on
the whole clip. A part that is missing (a frame the parts never saw, a pair across a size change)
makes that extractor fall back to its whole-clip ``extract``; a part that failed is reported as that
extractor's failure for the clip — never a silent gap.
Parts are held for the frames of the current window only (``clip_len`` + 1 entries).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from .frame_batcher import FrameBatcher, Pending, is_batchable

Outcome = tuple[str, "np.ndarray | None", "BaseException | None", float]
"""``(name, array | None, error | None, seconds)`` as the extractor pool reports it."""


def is_incremental(e) -> bool:
    """Whether extractor ``e`` implements the per-frame protocol (module docstring)."""
    return all(callable(getattr(e, a, None)) for a in ("frame_part", "combine", "frame_positions"))


class _Entry:
    __slots__ = ("image", "parts", "pairs", "errors", "seconds")

    def __init__(self, image: np.ndarray):
        self.image = image  # held so that id(image) stays unique while the entry lives
        self.parts: dict[str, Any] = {}
        self.pairs: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.seconds: dict[str, float] = {}


class FrameParts:
    """One camera's per-frame parts (not thread-safe: the camera's clip thread owns it).

    ``add(image, position)`` for every sampled frame, in order, *before* the clip builder takes it
    (``position``: :meth:`fusewatch.stream.clips.ClipBuilder.next_position`); ``outcomes(clip)``
    for every clip; ``reset()`` on a stream discontinuity."""

    def __init__(self, extractors, clip_len: int, clip_stride: int, batcher: FrameBatcher | None = None):
        self.extractors = [e for e in extractors if is_incremental(e)]
        self.batcher = batcher
        """Shared cross-camera batcher: CNN frame parts are queued there (:class:`Pending`)."""
        self.batched = {e.name for e in self.extractors if batcher is not None and is_batchable(e)}
        self.clip_len, self.stride = int(clip_len), int(clip_stride)
        self.need = {e.name: e.frame_positions(self.clip_len) for e in self.extractors}
        self.paired = {e.name for e in self.extractors if callable(getattr(e, "pair_part", None))}
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self._prev: _Entry | None = None
        self.fallbacks = 0
        """Clips × extractors that fell back to whole-clip extraction."""

    def reset(self) -> None:
        """A discontinuity: no pair links the next frame to the previous one."""
        self._prev = None
        self._cache.clear()

    def _needed(self, name: str, position: int) -> bool:
        need = self.need[name]
        if need is None:
            return True
        # the frame sits at `position` in the oldest window holding it, then stride less in each later one
        return any(q in need for q in range(position, -1, -self.stride))

    def add(self, image: np.ndarray, position: int | None) -> None:
        """Work on one sampled frame at ``position`` of the window it enters (None: a frame the
        clip builder skips, in no clip)."""
        if position is None or not self.extractors:
            self._prev = None
            return
        entry = _Entry(image)
        prev = self._prev if position >= 1 else None
        for e in self.extractors:
            pair = e.name in self.paired
            if not (pair or self._needed(e.name, position)):
                continue
            t0 = time.perf_counter()
            try:
                if e.name in self.batched:
                    entry.parts[e.name] = self.batcher.submit(e, image)  # type: ignore[union-attr]
                    continue
                entry.parts[e.name] = part = e.frame_part(image)
                if pair and prev is not None and e.name in prev.parts:
                    entry.pairs[e.name] = e.pair_part(prev.parts[e.name], part)
            except Exception as ex:
                entry.errors[e.name] = ex
            entry.seconds[e.name] = time.perf_counter() - t0
        self._cache[id(image)] = entry
        while len(self._cache) > self.clip_len + 1:
            self._cache.popitem(last=False)
        self._prev = entry

    def outcomes(self, clip) -> dict[str, Outcome]:
        """``{name: outcome}`` of the per-frame extractors whose parts cover ``clip`` (the others —
        and any whose parts are incomplete — are left to whole-clip extraction)."""
        entries = []
        for f in clip.frames:
            en = self._cache.get(id(f))
            if en is None or en.image is not f:
                self.fallbacks += len(self.extractors)
                return {}
            entries.append(en)
        out: dict[str, Outcome] = {}
        for e in self.extractors:
            name = e.name
            seconds = sum(en.seconds.get(name, 0.0) for en in entries)
            err = next((en.errors[name] for en in entries if name in en.errors), None)
            if err is not None:
                out[name] = (name, None, err, seconds)
                continue
            parts = [en.parts.get(name) for en in entries]
            if name in self.batched:
                try:
                    seconds = sum(p.seconds for p in parts if isinstance(p, Pending))
                    parts = [p.get() if isinstance(p, Pending) else p for p in parts]
                except Exception as ex:  # the frame's inference failed: the extractor failed for this clip
                    out[name] = (name, None, ex, seconds)
                    continue
            need = self.need[name]
            if need is not None and len(parts) != self.clip_len:  # positions are those of a full window
                self.fallbacks += 1
                continue
            if any(parts[i] is None for i in (range(len(parts)) if need is None else need)):
                self.fallbacks += 1
                continue
            pairs: list[Any] = []
            if name in self.paired:
                pairs = [en.pairs.get(name) for en in entries[1:]]
                if any(p is None for p in pairs):
                    self.fallbacks += 1
                    continue
            t0 = time.perf_counter()
            try:
                arr, err = e.combine(parts, pairs), None
            except Exception as ex:
                arr, err = None, ex
            out[name] = (name, arr, err, seconds + time.perf_counter() - t0)
        return out
