"""Sliding clip windows over sampled frames, with the audio that covers each clip.

A clip is ``clip_len`` consecutive *sampled* frames; consecutive clips start ``clip_stride``
sampled frames apart (``stride < len``: overlapping, ``stride > len``: gaps). A partial window at
the end of a stream is dropped. For ``n`` sampled frames there are
``(n - clip_len) // clip_stride + 1`` clips (0 when ``n < clip_len``), numbered from 0.

Audio covers ``[pts_start, pts_end + 1/sample_fps)`` (the last frame's sampling slot included);
missing stretches inside that range are zero-filled, a clip with no audio at all gets ``None``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One sampled video frame.

    ``index``: decoded-frame count of the source (0-based, counts frames the sampler skipped);
    ``pts``: seconds since the stream's first frame; ``wall``: capture wall clock (Unix s) =
    anchor + pts; ``image``: H×W×3 uint8 RGB; ``mono``: ``time.monotonic()`` when decoded.
    """

    index: int
    pts: float
    wall: float
    image: np.ndarray
    mono: float = 0.0


@dataclass
class AudioChunk:
    """Mono float32 samples starting at ``pts`` seconds (same time origin as the video frames)."""

    pts: float
    samples: np.ndarray
    rate: int


@dataclass
class Clip:
    """One clip window. ``frame_start``/``frame_end``: inclusive decoded-frame indices."""

    index: int
    frames: list[np.ndarray]
    frame_start: int
    frame_end: int
    pts_start: float
    pts_end: float
    wall_start: float
    wall_end: float
    audio: np.ndarray | None = None
    audio_rate: int | None = None
    ready_mono: float = 0.0
    """``time.monotonic()`` when the clip's last frame was decoded (publish-latency origin)."""
    frame_indices: list[int] = field(default_factory=list)


class AudioBuffer:
    """Audio chunks on the stream's timeline; :meth:`get` cuts ``[t0, t1)`` out of them."""

    def __init__(self) -> None:
        self.chunks: deque[AudioChunk] = deque()
        self.rate: int | None = None

    def add(self, chunk: AudioChunk) -> None:
        if chunk.samples.size == 0:
            return
        if self.rate is not None and chunk.rate != self.rate:
            self.chunks.clear()  # a new connection with another rate: start over
        self.rate = chunk.rate
        self.chunks.append(chunk)

    @property
    def end(self) -> float:
        """Time up to which audio has been received (−inf when none)."""
        if not self.chunks:
            return float("-inf")
        c = self.chunks[-1]
        return c.pts + c.samples.size / c.rate

    def get(self, t0: float, t1: float) -> np.ndarray | None:
        if self.rate is None or not self.chunks or t1 <= t0:
            return None
        rate = self.rate
        n = int(round((t1 - t0) * rate))
        if n <= 0:
            return None
        out = np.zeros(n, dtype=np.float32)
        covered = False
        for c in self.chunks:
            a = int(round((c.pts - t0) * rate))  # chunk start, in output samples
            b = a + c.samples.size
            lo, hi = max(a, 0), min(b, n)
            if hi > lo:
                out[lo:hi] = c.samples[lo - a : hi - a]
                covered = True
        return out if covered else None

    def discard_before(self, t: float) -> None:
        while self.chunks:
            c = self.chunks[0]
            if c.pts + c.samples.size / c.rate <= t:
                self.chunks.popleft()
            else:
                break


class ClipBuilder:
    """Feed sampled frames (and audio chunks) in order; get complete :class:`Clip` windows back."""

    def __init__(self, clip_len: int = 16, clip_stride: int = 16, sample_fps: float = 10.0, first_index: int = 0):
        if clip_len <= 0 or clip_stride <= 0:
            raise ValueError("clip_len and clip_stride must be > 0")
        self.clip_len, self.clip_stride = int(clip_len), int(clip_stride)
        self.slot = 1.0 / float(sample_fps)
        self.next_index = first_index
        self.audio = AudioBuffer()
        self._buf: deque[Frame] = deque()
        self._skip = 0  # frames to drop before the next window starts (stride > len)

    @classmethod
    def from_config(cls, cfg) -> ClipBuilder:
        return cls(cfg.clips.clip_len, cfg.clips.clip_stride, cfg.source.sample_fps)

    def reset(self) -> None:
        """Drop the partial window (stream discontinuity); clip numbering continues."""
        self._buf.clear()
        self._skip = 0
        self.audio = AudioBuffer()

    def add_audio(self, chunk: AudioChunk) -> None:
        self.audio.add(chunk)

    def next_position(self) -> int | None:
        """Position the next pushed frame takes in the oldest window it enters (0-based; later
        overlapping windows hold it ``clip_stride`` positions earlier each), or None when
        :meth:`push` will skip it (``clip_stride > clip_len``)."""
        return None if self._skip else len(self._buf)

    def push(self, frame: Frame) -> list[Clip]:
        """Add one sampled frame; returns the clips it completes (zero or one)."""
        if self._skip:
            self._skip -= 1
            return []
        self._buf.append(frame)
        if len(self._buf) < self.clip_len:
            return []
        frames = list(self._buf)[: self.clip_len]
        first, last = frames[0], frames[-1]
        audio = self.audio.get(first.pts, last.pts + self.slot)
        clip = Clip(
            index=self.next_index,
            frames=[f.image for f in frames],
            frame_start=first.index,
            frame_end=last.index,
            pts_start=first.pts,
            pts_end=last.pts,
            wall_start=first.wall,
            wall_end=last.wall,
            audio=audio,
            audio_rate=self.audio.rate if audio is not None else None,
            ready_mono=last.mono,
            frame_indices=[f.index for f in frames],
        )
        self.next_index += 1
        if self.clip_stride >= self.clip_len:
            self._buf.clear()
            self._skip = self.clip_stride - self.clip_len
            self.audio.discard_before(last.pts + self.slot)
        else:
            for _ in range(self.clip_stride):
                self._buf.popleft()
            self.audio.discard_before(self._buf[0].pts)
        return [clip]


def clip_windows(frames: list[Frame], clip_len: int, clip_stride: int, sample_fps: float = 10.0) -> list[Clip]:
    """All clips of a list of sampled frames (convenience for tests and offline use)."""
    b = ClipBuilder(clip_len, clip_stride, sample_fps)
    out: list[Clip] = []
    for f in frames:
        out.extend(b.push(f))
    return out
