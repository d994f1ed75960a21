"""Frame sampling to ``cfg.source.sample_fps`` by timestamp (applied in the decode thread, before any
colour conversion or feature work).

Rule: a frame at ``pts`` is kept when ``pts >= next_t - tol``; after a kept frame
``next_t = max(next_t + period, pts + period - tol)``. The tolerance is
``tol = min(period / 4, 0.4 · source frame interval)`` (the interval is the smallest of the last 16
timestamp deltas), so it absorbs timestamp jitter without ever taking the frame *before* a
sampling instant. So

* a source at or below the target rate keeps every frame (frames are never duplicated);
* a 30 fps source at 10 fps keeps frames 0, 3, 6, ...; a 25 fps source keeps 10 frames a second
  (spacing 0.08/0.12 s), a 15 fps source 10 a second;
* timestamp jitter up to a quarter of a sampling period does not lose frames;
* after a gap (stream stall, reconnect) sampling restarts at the first frame after the gap
  instead of bursting to catch up.
"""

from __future__ import annotations

from collections import deque


class FrameSampler:
    """Decides, frame by frame in presentation order, which frames to keep."""

    def __init__(self, sample_fps: float):
        if sample_fps <= 0:
            raise ValueError(f"sample_fps must be > 0 (got {sample_fps})")
        self.period = 1.0 / float(sample_fps)
        self.next_t: float | None = None
        self.kept = 0
        self.seen = 0
        self._last: float | None = None
        self._deltas: deque[float] = deque(maxlen=16)

    @property
    def tol(self) -> float:
        t = self.period / 4.0
        if self._deltas:
            t = min(t, 0.4 * min(self._deltas))
        return t

    def keep(self, pts: float) -> bool:
        """True when the frame at ``pts`` seconds should be kept."""
        self.seen += 1
        if self._last is not None and pts > self._last:
            self._deltas.append(pts - self._last)
        self._last = pts
        tol = self.tol
        if self.next_t is not None and pts < self.next_t - tol:
            return False
        base = pts if self.next_t is None else self.next_t
        self.next_t = max(base + self.period, pts + self.period - tol)
        self.kept += 1
        return True

    def reset(self) -> None:
        """Forget the sampling grid (after a discontinuity); the next frame is kept."""
        self.next_t = None
        self._last = None


def sample_indices(pts: list[float], sample_fps: float) -> list[int]:
    """Indices of ``pts`` (seconds, presentation order) that :class:`FrameSampler` keeps."""
    s = FrameSampler(sample_fps)
    return [i for i, t in enumerate(pts) if s.keep(t)]


def expected_clips(n_sampled: int, clip_len: int, clip_stride: int) -> int:
    """Number of complete clip windows over ``n_sampled`` frames (a partial tail is dropped)."""
    if n_sampled < clip_len:
        return 0
    return (n_sampled - clip_len) // clip_stride + 1
