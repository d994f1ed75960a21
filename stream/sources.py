"""Video sources: files, RTSP, HTTP(S) (MJPEG / HLS / MPEG-TS, whatever FFmpeg reads), V4L2 devices.

A :class:`VideoSource` decodes in a background thread (PyAV; OpenCV ``VideoCapture`` only when
PyAV cannot open the source) and hands sampled frames to the consumer through a bounded
:class:`FrameQueue`. A supervisor thread watches the decoder: when no frame arrives for
``cfg.stall_timeout`` seconds, or a live stream ends or fails, the decoder thread is abandoned
(its later output is ignored) and the source reconnects with jittered exponential backoff
(``reconnect_initial`` .. ``reconnect_max``; ``max_reconnects`` consecutive failed attempts,
-1 = forever). Files never reconnect: end of file is a clean end; a file that fails after some
frames ends cleanly with a warning and a decode-error count; a file that yields no frame at all
is a :class:`SourceError`.

Frames: ``index`` = decoded-frame count (across reconnects and replay loops), ``pts`` = seconds
since the first frame (from PTS × time base; monotonic across reconnects/loops), ``wall`` =
anchor + pts where the anchor is ``time.time()`` at the first frame (live) or a fixed value
(replay). Frames are sampled to ``sample_fps`` by timestamp *before* RGB conversion.

Audio (when the container has an audio stream and audio is wanted) is decoded alongside to mono
float32 at its native rate and delivered as :class:`~fusewatch.stream.clips.AudioChunk` items ahead of the
video frames it covers.
"""
from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import numpy as np

from .clips import AudioChunk, Frame
from .logs import get_logger
from .sampling import FrameSampler

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
SUPPORTED_SCHEMES = NETWORK_SCHEMES + ("file", "v4l2")
MAX_CONSECUTIVE_DECODE_ERRORS = 100
LIVE_PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}
"""Live streams: probe 1 s instead of FFmpeg's 5 s so the first frame comes quickly."""
AUDIO_HOLD_S = 2.0
"""Longest a sampled frame waits in the decoder for its audio to be demuxed (interleaving slack)."""


from fusewatch.errors import SourceError  # noqa: E402,F401 - re-exported


@dataclass
class EndOfStream:
    """Last queue item of a source: ``error`` set when the source failed (no usable frames or
    gave up reconnecting); ``warning`` set for a clean end after a mid-file decode failure."""

    error: str | None = None
    warning: str | None = None


@dataclass
class Discontinuity:
    """Queue item after a live source lost its stream: frames before and after it are not
    contiguous (consumers drop their partial clip window)."""

    reason: str = ""


@dataclass
class SourceSpec:
    uri: str
    kind: str
    """``file``, ``rtsp``, ``http``, ``v4l2`` or ``stream`` (other FFmpeg network protocols)."""
    target: str
    """What is passed to FFmpeg: a path, URL or device."""
    live: bool
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def _us(seconds: float) -> str:
    return str(int(round(seconds * 1_000_000)))


def parse_source(uri: str, cfg=None) -> SourceSpec:
    """Classify ``uri`` and build FFmpeg options; raises :class:`SourceError` for unsupported
    schemes and missing files/devices. ``cfg`` is a :class:`~fusewatch.stream.config.SourceConfig`."""
    if cfg is None:
        from .config import SourceConfig
        cfg = SourceConfig()
    uri = str(uri).strip()
    if not uri:
        raise SourceError("source: empty URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # Windows drive letter
        scheme = ""
    sock_us = _us(cfg.socket_timeout)
    if scheme in ("", "file"):
        path = parts.path if scheme == "file" else uri
        if path.startswith("/dev/video"):
            return parse_source("v4l2://" + path, cfg)
        p = Path(path)
        if not p.exists():
            raise SourceError(f"source {uri}: no such file")
        if p.is_dir():
            raise SourceError(f"source {uri}: is a directory, not a video file")
        if not os.access(p, os.R_OK):
            raise SourceError(f"source {uri}: file is not readable")
        return SourceSpec(uri, "file", str(p), live=False)
    if scheme == "v4l2":
        rest = (parts.netloc + parts.path) or ""
        if rest.isdigit():
            dev = f"/dev/video{rest}"
        elif rest.startswith("/dev/"):
            dev = rest
        elif rest.startswith("dev/"):
            dev = "/" + rest
        else:
            raise SourceError(f"source {uri}: expected v4l2://N, v4l2:///dev/videoN or /dev/videoN")
        if not Path(dev).exists():
            raise SourceError(f"source {uri}: no such device {dev}")
        return SourceSpec(uri, "v4l2", dev, live=True, format="v4l2")
    if scheme not in NETWORK_SCHEMES:
        if Path(uri).exists():  # a file name that merely contains a colon
            return parse_source("file://" + str(Path(uri).resolve()), cfg)
        raise SourceError(f"source {uri}: unsupported URI scheme {scheme + '://'!r} "
                          f"(supported: file paths, {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}, "
                          "/dev/videoN)")
    if not parts.netloc:
        raise SourceError(f"source {uri}: missing host")
    if scheme in ("rtsp", "rtsps"):
        # FFmpeg >= 5: rtsp ``timeout`` is the socket I/O timeout in microseconds (was ``stimeout``)
        opts = {"rtsp_transport": cfg.rtsp_transport, "timeout": sock_us, "rw_timeout": sock_us,
                **LIVE_PROBE_OPTIONS}
        return SourceSpec(uri, "rtsp", uri, live=True, options=opts)
    if scheme in ("http", "https"):
        opts = {"timeout": sock_us, "rw_timeout": sock_us, "reconnect": "0", **LIVE_PROBE_OPTIONS}
        return SourceSpec(uri, "http", uri, live=True, options=opts)
    opts = {"rw_timeout": sock_us, **LIVE_PROBE_OPTIONS}
    if scheme in ("udp", "tcp", "srt", "rtp"):
        opts["timeout"] = sock_us
    return SourceSpec(uri, "stream", uri, live=True, options=opts)


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random | None = None) -> float:
    """Jittered exponential backoff: ``min(max, initial·2^attempt)`` scaled by U(0.5, 1.0],
    never below ``initial`` (attempt counts from 0)."""
    base = min(maximum, initial * (2.0 ** min(attempt, 60)))
    j = (rng or random).uniform(0.5, 1.0)
    return max(min(initial, maximum), base * j)


# -------------------------------------------------------------------------------------------
class FrameQueue:
    """Bounded queue between decoder and consumer; capacity counts video frames only.

    ``drop_oldest``: a put on a full queue evicts the oldest frame (and audio queued before it)
    and counts it; ``block``: the producer waits for space (it never loses a frame).
    """

    def __init__(self, maxsize: int, policy: str = "drop_oldest",
                 on_drop: Callable[[int], None] | None = None):
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

    def put(self, item: Any, alive: Callable[[], bool] = lambda: True,
            on_wait: Callable[[], None] | None = None, force: bool = False) -> bool:
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


# -------------------------------------------------------------------------------------------
class _Reader:
    """A demux/decode backend: iterates events ``("video", raw_pts_s | None, convert)``,
    ``("audio", raw_pts_s | None, samples, rate)`` and ``("error", message)``."""

    backend = ""
    fps: float | None = None
    width = 0
    height = 0
    audio_rate: int | None = None
    header_frames = 0
    creation_time: float | None = None

    def __iter__(self) -> Iterator[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _parse_iso_time(s: str | None) -> float | None:
    if not s:
        return None
    from datetime import datetime, timezone
    try:
        dt = datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    t = dt.timestamp()
    return t if t > 0 else None


class _PyAVReader(_Reader):
    backend = "pyav"

    def __init__(self, spec: SourceSpec, cfg, want_audio: bool):
        import av

        kwargs: dict[str, Any] = {"options": dict(spec.options)}
        if spec.format:
            kwargs["format"] = spec.format
        if spec.live:
            kwargs["timeout"] = (2.0 * max(cfg.socket_timeout, 1.0), cfg.socket_timeout)
        self.c = av.open(spec.target, **kwargs)
        try:
            if not self.c.streams.video:
                raise SourceError(f"source {spec.uri}: no video stream")
            self.v = self.c.streams.video[0]
            if not spec.live:
                self.v.thread_type = "AUTO"
            self.a = self.c.streams.audio[0] if (want_audio and self.c.streams.audio) else None
            rate = self.v.average_rate or self.v.guessed_rate or self.v.base_rate
            self.fps = float(rate) if rate else None
            self.width = self.v.codec_context.width
            self.height = self.v.codec_context.height
            self.header_frames = int(self.v.frames or 0)
            self.creation_time = _parse_iso_time((self.c.metadata or {}).get("creation_time")
                                                 or (self.v.metadata or {}).get("creation_time"))
            self.resampler = None
            if self.a is not None:
                self.audio_rate = int(self.a.rate or self.a.codec_context.sample_rate or 0) or None
                if self.audio_rate:
                    self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.audio_rate)
                else:
                    self.a = None
        except BaseException:
            self.c.close()
            raise

    def __iter__(self):
        import av

        streams = [self.v] + ([self.a] if self.a is not None else [])
        for pkt in self.c.demux(*streams):
            try:
                frames = pkt.decode()
            except av.error.EOFError:
                continue
            except av.error.FFmpegError as e:
                yield ("error", f"{type(e).__name__}: {e}")
                continue
            if pkt.stream is self.v or pkt.stream.index == self.v.index:
                for fr in frames:
                    tb = fr.time_base or self.v.time_base
                    raw = float(fr.pts * tb) if (fr.pts is not None and tb is not None) else None
                    yield ("video", raw, (lambda f=fr: f.to_ndarray(format="rgb24")))
            else:
                for fr in frames:
                    tb = fr.time_base or self.a.time_base
                    raw = float(fr.pts * tb) if (fr.pts is not None and tb is not None) else None
                    outs = self.resampler.resample(fr)
                    if not outs:
                        continue
                    samples = np.concatenate([o.to_ndarray().reshape(-1) for o in outs]).astype(np.float32)
                    yield ("audio", raw, samples, self.audio_rate)

    def close(self) -> None:
        try:
            self.c.close()
        except Exception:
            pass


class _OpenCVReader(_Reader):
    backend = "opencv"

    def __init__(self, spec: SourceSpec, cfg):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # the fallback's failures are reported by us
        import cv2

        ms = int(cfg.socket_timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        api = cv2.CAP_V4L2 if spec.kind == "v4l2" else cv2.CAP_FFMPEG
        old_level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self.cap = cv2.VideoCapture(spec.target, api, params)
        finally:
            cv2.utils.logging.setLogLevel(old_level)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"source {spec.uri}: OpenCV cannot open it either")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and math.isfinite(fps) else None
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.header_frames = int(n) if n and n > 0 and math.isfinite(n) else 0
        self._cv2 = cv2

    def __iter__(self):
        cv2 = self._cv2
        n = 0
        while self.cap.grab():
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC)
            raw = pos / 1000.0 if (pos and pos > 0) or n == 0 else None

            def convert(cap=self.cap):
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise RuntimeError("OpenCV retrieve() failed")
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

            n += 1
            yield ("video", raw, convert)

    def close(self) -> None:
        self.cap.release()


def _capability_error(e: Exception) -> bool:
    """PyAV's FFmpeg lacks something (protocol, demuxer, decoder, option) that OpenCV may have."""
    import av

    names = ("ProtocolNotFoundError", "DemuxerNotFoundError", "DecoderNotFoundError",
             "PatchWelcomeError", "OptionNotFoundError", "FilterNotFoundError")
    return any(isinstance(e, getattr(av.error, n)) for n in names if hasattr(av.error, n))


def open_reader(spec: SourceSpec, cfg, want_audio: bool = True) -> _Reader:
    """PyAV first; OpenCV only when PyAV cannot open the source (not for network errors)."""
    try:
        return _PyAVReader(spec, cfg, want_audio)
    except SourceError:
        raise
    except Exception as e:
        first = f"{type(e).__name__}: {e}"
        if spec.live and spec.kind != "v4l2" and not _capability_error(e):
            # connection/protocol failures: OpenCV would only repeat them (same FFmpeg underneath)
            raise SourceError(f"source {spec.uri}: cannot open ({first})") from None
        try:
            return _OpenCVReader(spec, cfg)
        except Exception:
            raise SourceError(f"source {spec.uri}: cannot open ({first})") from None


def probe(uri: str, cfg=None) -> dict:
    """Open a (file) source once and return its properties: fps, width, height, frames, audio_rate,
    creation_time, backend."""
    if cfg is None:
        from .config import SourceConfig
        cfg = SourceConfig()
    spec = parse_source(uri, cfg)
    r = open_reader(spec, cfg, want_audio=True)
    try:
        return {"fps": r.fps, "width": r.width, "height": r.height, "frames": r.header_frames,
                "audio_rate": r.audio_rate, "creation_time": r.creation_time, "backend": r.backend}
    finally:
        r.close()


def file_anchor(path: str | os.PathLike) -> float:
    """Fixed wall-clock anchor of a file for replay: container ``creation_time`` metadata, else
    the file's mtime."""
    try:
        t = probe(str(path)).get("creation_time")
    except SourceError:
        t = None
    return float(t) if t else float(os.stat(path).st_mtime)


# -------------------------------------------------------------------------------------------
class VideoSource:
    """Decode thread + watchdog + bounded queue. Use :meth:`start`, then :meth:`get` items
    (:class:`Frame`, :class:`AudioChunk`, finally :class:`EndOfStream`), then :meth:`stop`.

    ``realtime``/``speed``: pace frames at ``speed``× their timestamps (replay of files);
    ``loop``: play a file ``loop`` times with indices and timestamps continuing (0 = forever);
    ``overflow``: queue policy override (default ``cfg.overflow`` for live and paced sources,
    ``block`` for files read as fast as possible); ``metrics``: a
    :class:`~fusewatch.stream.metrics.WorkerMetrics` to count into.
    """

    def __init__(self, uri: str, cfg=None, *, wall_anchor: float | None = None, realtime: bool = False,
                 speed: float = 1.0, loop: int = 1, overflow: str | None = None, want_audio: bool = True,
                 metrics=None, log=None, rng: random.Random | None = None):
        if cfg is None:
            from .config import SourceConfig
            cfg = SourceConfig()
        self.cfg = cfg
        self.spec = parse_source(uri, cfg)
        self.uri = uri
        self.live = self.spec.live
        self.wall_anchor = wall_anchor
        self.realtime = bool(realtime)
        self.speed = float(speed) if speed and speed > 0 else 1.0
        self.loop = int(loop)
        self.want_audio = want_audio
        self.metrics = metrics
        self.log = log or get_logger("fusewatch.stream.sources", source=uri)
        self._rng = rng or random.Random()
        if overflow is None:
            # a file read as fast as possible would only drop frames: it blocks unless it is paced
            overflow = cfg.overflow if (self.live or self.realtime) else "block"
        self.queue = FrameQueue(cfg.queue_size, overflow, on_drop=self._count_drop)
        self.info: dict[str, Any] = {"fps": None, "width": 0, "height": 0, "audio_rate": None,
                                     "backend": None, "header_frames": 0}
        self.counts = {"decoded": 0, "sampled": 0, "dropped": 0, "reconnects": 0, "decode_errors": 0}
        self._sampler = FrameSampler(cfg.sample_fps)
        self._stop = threading.Event()
        self._gen = 0
        self._progress = time.monotonic()
        self._results: dict[int, tuple[str, str | None]] = {}
        self._conn_frames = 0
        self._pts_offset = 0.0
        self._last_pts: float | None = None
        self._pace_t0: float | None = None
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- counters -----------------------------------------------------------------------------
    def _count(self, key: str, metric: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n
        if self.metrics is not None:
            self.metrics.inc(metric, n)

    def _count_drop(self, n: int) -> None:
        self._count("dropped", "frames_dropped", n)

    # -- public -------------------------------------------------------------------------------
    def start(self) -> "VideoSource":
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                                name=f"source-{Path(self.spec.target).name}")
            self._supervisor.start()
        return self

    def stop(self, join: float = 5.0) -> None:
        self._stop.set()
        self._gen = -1
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(join)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def get(self, timeout: float | None = 0.5) -> Any:
        return self.queue.get(timeout)

    def __iter__(self) -> Iterator[Any]:
        """Frames and audio chunks until the end; raises SourceError on a failed source."""
        self.start()
        while True:
            item = self.get(0.5)
            if item is None:
                if self._stop.is_set() and self._supervisor is not None and not self._supervisor.is_alive():
                    return
                continue
            if isinstance(item, EndOfStream):
                if item.error:
                    raise SourceError(item.error)
                return
            yield item

    # -- supervisor / watchdog ----------------------------------------------------------------
    def _end(self, error: str | None = None, warning: str | None = None) -> None:
        self.queue.put(EndOfStream(error=error, warning=warning), force=True)

    def _supervise(self) -> None:
        failures = 0  # consecutive connection attempts without a frame
        loops_done = 0
        gen = 0
        try:
            while not self._stop.is_set():
                gen += 1
                self._gen = gen
                self._conn_frames = 0
                self._progress = time.monotonic()
                t = threading.Thread(target=self._decode_once, args=(gen,), daemon=True,
                                     name=f"decode-{gen}")
                t.start()
                stalled = False
                limit = self.cfg.stall_timeout
                while t.is_alive():
                    t.join(0.1)
                    if self._stop.is_set():
                        break
                    limit = self.cfg.stall_timeout
                    if self._conn_frames == 0:  # still opening/probing: allow the open timeout too
                        limit += self._open_timeout()
                    if time.monotonic() - self._progress > limit:
                        stalled = True
                        self._gen = -gen  # abandon: its output is ignored from now on
                        break
                if self._stop.is_set():
                    break
                if stalled:
                    outcome, msg = "stall", (f"no frame for {limit:g} s" if self._conn_frames
                                             else f"no first frame within {limit:g} s")
                else:
                    outcome, msg = self._results.pop(gen, ("error", "decoder thread died"))
                if not self.live:
                    if outcome == "eof":
                        loops_done += 1
                        if self.loop <= 0 or loops_done < self.loop:
                            if self.counts["decoded"] == 0:
                                self._end(error=f"source {self.uri}: no frames decoded")
                                return
                            dur = 1.0 / (self.info["fps"] or self.cfg.sample_fps)
                            self._pts_offset = (self._last_pts or 0.0) + dur
                            continue
                        if self.counts["decoded"] == 0:
                            self._end(error=f"source {self.uri}: no frames decoded (empty or unreadable video)")
                        else:
                            if msg:
                                self.log.warning("file ended early", extra={"fields": {"reason": msg}})
                            self._end(warning=f"source {self.uri}: {msg}" if msg else None)
                        return
                    if self.counts["decoded"] == 0:
                        self._end(error=f"source {self.uri}: {msg}")
                    else:
                        self._count("decode_errors", "decode_errors")
                        w = f"source {self.uri}: stopped after {self.counts['decoded']} frames ({msg})"
                        self.log.warning("file ended early", extra={"fields": {"reason": msg}})
                        self._end(warning=w)
                    return
                # live source: reconnect
                if self._conn_frames > 0:
                    failures = 0
                    self.queue.put(Discontinuity(reason=outcome), force=True)
                if self.cfg.max_reconnects >= 0 and failures >= self.cfg.max_reconnects:
                    self._end(error=f"source {self.uri}: gave up after {failures} reconnect attempts ({msg})")
                    return
                delay = backoff_delay(failures, self.cfg.reconnect_initial, self.cfg.reconnect_max, self._rng)
                failures += 1
                self._count("reconnects", "reconnects")
                self.log.warning("source lost, reconnecting",
                                 extra={"fields": {"reason": outcome, "detail": msg, "attempt": failures,
                                                   "delay_s": round(delay, 3)}})
                if self._stop.wait(delay):
                    break
                if self._last_pts is not None and self.wall_anchor is not None:
                    # live timeline: pts = wall-clock seconds since the first frame
                    elapsed = time.time() - self.wall_anchor
                    self._pts_offset = max(elapsed, self._last_pts + 1.0 / self.cfg.sample_fps)
                self._sampler.reset()
        except Exception as e:  # never leave the consumer waiting forever
            self.log.exception("source supervisor failed")
            self._end(error=f"source {self.uri}: internal error ({type(e).__name__}: {e})")
            return
        self._end()

    def _open_timeout(self) -> float:
        return 2.0 * max(self.cfg.socket_timeout, 1.0) if self.live else 0.0

    # -- decoding -----------------------------------------------------------------------------
    def _alive(self, gen: int) -> bool:
        return self._gen == gen and not self._stop.is_set()

    def _touch(self) -> None:
        self._progress = time.monotonic()

    def _emit(self, item: Any, gen: int) -> bool:
        return self.queue.put(item, alive=lambda: self._alive(gen), on_wait=self._touch)

    def _pace(self, pts: float, gen: int) -> None:
        if not self.realtime:
            return
        if self._pace_t0 is None:
            self._pace_t0 = time.monotonic() - pts / self.speed
        target = self._pace_t0 + pts / self.speed
        while self._alive(gen):
            left = target - time.monotonic()
            if left <= 0:
                return
            self._touch()
            time.sleep(min(left, 0.1))

    def _decode_once(self, gen: int) -> None:
        result: tuple[str, str | None] = ("eof", None)
        reader: _Reader | None = None
        try:
            reader = open_reader(self.spec, self.cfg, self.want_audio)
            self.info.update(fps=reader.fps, width=reader.width, height=reader.height,
                             audio_rate=reader.audio_rate, backend=reader.backend)
            if not self.info["header_frames"]:
                self.info["header_frames"] = reader.header_frames
            result = self._decode_loop(reader, gen)
        except SourceError as e:
            result = ("error", str(e).split(": ", 1)[-1] if str(e).startswith("source ") else str(e))
        except Exception as e:
            result = ("error", f"{type(e).__name__}: {e}")
        finally:
            if reader is not None:
                reader.close()
            self._results[gen] = result

    def _decode_loop(self, reader: _Reader, gen: int) -> tuple[str, str | None]:
        fps = reader.fps or self.cfg.sample_fps
        dur = 1.0 / fps
        slot = 1.0 / self.cfg.sample_fps
        ref: float | None = None
        conn_t0 = time.monotonic()
        pending_audio: list[tuple] = []
        held: deque[Frame] = deque()
        audio_end = float("-inf")
        has_audio = reader.audio_rate is not None
        consecutive_errors = 0
        n_conn = 0
        first_error: str | None = None

        def release(all_: bool = False) -> bool:
            while held and (all_ or not has_audio or held[0].pts + slot <= audio_end
                            or held[-1].pts - held[0].pts > AUDIO_HOLD_S):
                f = held.popleft()
                self._pace(f.pts, gen)
                if not self._emit(f, gen):
                    return False
            return True

        def audio_item(raw, samples, rate) -> AudioChunk | None:
            if raw is None:
                start = audio_end if math.isfinite(audio_end) else self._pts_offset
            else:
                start = self._pts_offset + (raw - ref)
            return AudioChunk(pts=start, samples=samples, rate=rate)

        try:
            for ev in reader:
                if not self._alive(gen):
                    return ("stopped", None)
                kind = ev[0]
                if kind == "error":
                    consecutive_errors += 1
                    first_error = first_error or ev[1]
                    self._count("decode_errors", "decode_errors")
                    if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS:
                        return ("error", f"{consecutive_errors} consecutive decode errors ({ev[1]})")
                    continue
                if kind == "audio":
                    if ref is None:
                        pending_audio.append(ev)
                        continue
                    chunk = audio_item(ev[1], ev[2], ev[3])
                    if chunk is not None:
                        audio_end = chunk.pts + chunk.samples.size / chunk.rate
                        if not self._emit(chunk, gen):
                            return ("stopped", None)
                    if not release():
                        return ("stopped", None)
                    continue
                # video frame
                consecutive_errors = 0
                raw = ev[1]
                now_mono = time.monotonic()
                if ref is None:
                    ref = raw if raw is not None else 0.0
                    if self.wall_anchor is None:
                        self.wall_anchor = time.time()
                    for a in pending_audio:
                        if a[1] is not None and a[1] < ref:
                            cut = int(round((ref - a[1]) * a[3]))
                            if cut >= a[2].size:
                                continue
                            a = ("audio", ref, a[2][cut:], a[3])
                        chunk = audio_item(a[1], a[2], a[3])
                        audio_end = chunk.pts + chunk.samples.size / chunk.rate
                        if not self._emit(chunk, gen):
                            return ("stopped", None)
                    pending_audio.clear()
                if raw is not None:
                    pts = self._pts_offset + (raw - ref)
                elif self.live:
                    pts = self._pts_offset + (now_mono - conn_t0)
                else:
                    pts = self._pts_offset + n_conn * dur
                if self._last_pts is not None and pts <= self._last_pts:
                    # timestamp discontinuity (wrap, splice, bad PTS): continue the timeline
                    fix = self._last_pts + dur - pts
                    self._pts_offset += fix
                    pts += fix
                self._last_pts = pts
                index = self.counts["decoded"]
                self._count("decoded", "frames_decoded")
                n_conn += 1
                self._conn_frames += 1
                self._touch()
                if not self._sampler.keep(pts):
                    continue
                image = ev[2]()
                self._count("sampled", "frames_sampled")
                frame = Frame(index=index, pts=pts, wall=self.wall_anchor + pts, image=image, mono=now_mono)
                held.append(frame)
                if not release():
                    return ("stopped", None)
        except SourceError:
            raise
        except Exception as e:
            if not release(all_=True):
                return ("stopped", None)
            return ("error", f"{type(e).__name__}: {e}")
        if not release(all_=True):
            return ("stopped", None)
        if n_conn == 0:
            return ("error", first_error or "no frames decoded")
        if not self.live:
            hdr = self.info.get("header_frames") or 0
            if self.counts["decoded"] == n_conn and hdr and hdr - n_conn > max(2, hdr // 100):
                self._count("decode_errors", "decode_errors")
                return ("eof", f"decoded {n_conn} of {hdr} frames announced by the header (truncated?)")
            if first_error:
                return ("eof", f"decode errors ({first_error})")
        return ("eof", None)
