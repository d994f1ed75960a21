"""A video source with its supervisor: files, RTSP, HTTP(S) (MJPEG / HLS / MPEG-TS, whatever FFmpeg
reads), V4L2 devices.

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

import random
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ..logs import get_logger
from ..sampling import FrameSampler
from .backoff import backoff_delay
from .decoding import DecodeLoop, DecodeOutcome
from .errors import SourceError
from .queue import Discontinuity, EndOfStream, FrameQueue
from .uri import parse_source


class VideoSource(DecodeLoop):
    """Decode thread + watchdog + bounded queue. Use :meth:`start`, then :meth:`get` items
    (:class:`Frame`, :class:`AudioChunk`, finally :class:`EndOfStream`), then :meth:`stop`.

    ``realtime``/``speed``: pace frames at ``speed``× their timestamps (replay of files);
    ``loop``: play a file ``loop`` times with indices and timestamps continuing (0 = forever);
    ``overflow``: queue policy override (default ``cfg.overflow`` for live and paced sources,
    ``block`` for files read as fast as possible); ``metrics``: a
    :class:`~fusewatch.stream.metrics.WorkerMetrics` to count into.
    """

    def __init__(
        self,
        uri: str,
        cfg=None,
        *,
        wall_anchor: float | None = None,
        realtime: bool = False,
        speed: float = 1.0,
        loop: int = 1,
        overflow: str | None = None,
        want_audio: bool = True,
        metrics=None,
        log=None,
        rng: random.Random | None = None,
    ):
        if cfg is None:
            from ..config import SourceConfig

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
        self.info: dict[str, Any] = {
            "fps": None,
            "width": 0,
            "height": 0,
            "audio_rate": None,
            "backend": None,
            "header_frames": 0,
        }
        self.counts = {
            "decoded": 0,
            "sampled": 0,
            "dropped": 0,
            "reconnects": 0,
            "decode_errors": 0,
            "missing": 0,
            "timestamp_jumps": 0,
            "resolution_changes": 0,
        }
        self._late_logged = 0
        self._sampler = FrameSampler(cfg.sample_fps)
        self._stop = threading.Event()
        self._gen = 0
        self._progress = time.monotonic()
        self._results: dict[int, DecodeOutcome] = {}
        self._conn_frames = 0
        self._pts_offset = 0.0
        self._last_pts: float | None = None
        self._pace_t0: float | None = None
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()
        self._conn_ref: float | None = None
        self.recorder = None
        """Evidence segment recorder (set before :meth:`start`): gets every connection's packets."""

    # -- counters -----------------------------------------------------------------------------
    def _count(self, key: str, metric: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n
        if self.metrics is not None and metric:  # "": counted here only (no worker metric)
            self.metrics.inc(metric, n)

    def _count_drop(self, n: int) -> None:
        self._count("dropped", "frames_dropped", n)

    # -- public -------------------------------------------------------------------------------
    def start(self) -> VideoSource:
        if self._supervisor is None:
            self._supervisor = threading.Thread(
                target=self._supervise, daemon=True, name=f"source-{Path(self.spec.target).name}"
            )
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
                t = threading.Thread(target=self._decode_once, args=(gen,), daemon=True, name=f"decode-{gen}")
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
                    outcome, msg = (
                        "stall",
                        (f"no frame for {limit:g} s" if self._conn_frames else f"no first frame within {limit:g} s"),
                    )
                else:
                    res = self._results.pop(gen, DecodeOutcome("error", "decoder thread died"))
                    outcome, msg = res.kind, res.detail
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
                self.log.warning(
                    "source lost, reconnecting",
                    extra={
                        "fields": {"reason": outcome, "detail": msg, "attempt": failures, "delay_s": round(delay, 3)}
                    },
                )
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
