"""The demux/decode backend interface and the typed events a backend yields.

A :class:`Reader` is opened on one connection to a source and iterates, in demux order:

* :class:`VideoEvent` — one decoded video frame; its RGB image is made only when asked for
  (``convert()``), so frames the sampler skips cost no colour conversion;
* :class:`AudioEvent` — decoded audio, mono float32 at the stream's own rate;
* :class:`DecodeError` — a packet that did not decode (the reader carries on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True, slots=True)
class VideoEvent:
    """A decoded video frame.

    ``raw_pts``: presentation time in seconds on the container's own clock (PTS × time base),
    ``None`` when the container has none; ``convert()``: the frame as an H×W×3 uint8 RGB array.
    """

    raw_pts: float | None
    convert: Callable[[], np.ndarray]


@dataclass(frozen=True, slots=True)
class AudioEvent:
    """Decoded audio: ``samples`` (n,) float32 mono at ``rate`` Hz starting at ``raw_pts`` seconds
    on the container's clock (``None`` when unknown: it follows the previous chunk)."""

    raw_pts: float | None
    samples: np.ndarray
    rate: int


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A packet the decoder rejected; ``message`` is one line (``"<FFmpeg error class>: <text>"``)."""

    message: str


ReaderEvent = VideoEvent | AudioEvent | DecodeError


class Reader:
    """A demux/decode backend on one connection: iterate it for :data:`ReaderEvent` items, then
    :meth:`close` it. The attributes describe the stream as the container announces it
    (``fps`` in frames/s or ``None``, ``width``/``height`` in pixels, ``audio_rate`` in Hz or
    ``None`` without audio, ``header_frames`` = announced frame count or 0, ``creation_time`` in
    Unix seconds or ``None``)."""

    backend = ""
    fps: float | None = None
    width = 0
    height = 0
    audio_rate: int | None = None
    header_frames = 0
    creation_time: float | None = None

    def __iter__(self) -> Iterator[ReaderEvent]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def scaled_size(width: int, height: int, max_width: int) -> tuple[int, int] | None:
    """``(w, h)`` a ``width × height`` frame is downscaled to under ``source.max_width`` (aspect
    kept, height rounded to an even number ≥ 2), or None when it is kept as decoded (``max_width``
    0 or not exceeded)."""
    if max_width <= 0 or width <= max_width:
        return None
    return int(max_width), max(2, 2 * round(height * max_width / width / 2))


def parse_iso_time(s: str | None) -> float | None:
    """ISO-8601 container metadata (``creation_time``) → Unix seconds (UTC when no zone is
    given); ``None`` when absent, unparsable or not after the epoch."""
    if not s:
        return None
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    t = dt.timestamp()
    return t if t > 0 else None
