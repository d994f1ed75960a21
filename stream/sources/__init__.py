"""Video sources: files, RTSP, HTTP(S), other FFmpeg network protocols, V4L2 devices.

One idea per module:

* :mod:`.uri` — :func:`parse_source` → :class:`SourceSpec` (kind, FFmpeg target and options);
* :mod:`.backoff` — :func:`backoff_delay`, jittered exponential reconnect delays;
* :mod:`.queue` — :class:`FrameQueue` (bounded, ``drop_oldest`` | ``block``) and the markers
  :class:`Discontinuity` and :class:`EndOfStream` a source puts on it;
* :mod:`.reader` — the :class:`Reader` backend interface and its typed events
  (:class:`VideoEvent`, :class:`AudioEvent`, :class:`DecodeError`);
* :mod:`.pyav_reader`, :mod:`.opencv_reader` — the two backends;
* :mod:`.opener` — :func:`open_reader` (PyAV, else OpenCV), :func:`probe`, :func:`file_anchor`;
* :mod:`.decoding` — one connection's decode loop (timeline, sampling, audio interleaving);
* :mod:`.supervisor` — :class:`VideoSource`: decode thread, watchdog, reconnects, loops;
* :mod:`.errors` — :class:`SourceError`, the one-line user-facing failure.
"""

from __future__ import annotations

from .backoff import backoff_delay
from .errors import SourceError
from .opener import file_anchor, open_reader, probe
from .queue import Discontinuity, EndOfStream, FrameQueue
from .reader import AudioEvent, DecodeError, Reader, ReaderEvent, VideoEvent
from .supervisor import VideoSource
from .uri import NETWORK_SCHEMES, SUPPORTED_SCHEMES, SourceSpec, parse_source

__all__ = [
    "AudioEvent",
    "DecodeError",
    "Discontinuity",
    "EndOfStream",
    "FrameQueue",
    "NETWORK_SCHEMES",
    "Reader",
    "ReaderEvent",
    "SUPPORTED_SCHEMES",
    "SourceError",
    "SourceSpec",
    "VideoEvent",
    "VideoSource",
    "backoff_delay",
    "file_anchor",
    "open_reader",
    "parse_source",
    "probe",
]
