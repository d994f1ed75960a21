"""The camera worker: source → sampled frames → clip windows → extractors → FeatureMessage → topic.

::

    w = Worker(cfg, camera="cam1", source="rtsp://10.0.0.5/stream")
    st = w.run()     # blocks until the source ends, fails (SourceError) or stop() is called
    st.clips_lost    # WorkerStats: clips_published counts only acknowledged messages


One :class:`Worker` per camera. Feature messages go to ``cfg.topics.features`` keyed by the camera
id (so one camera maps to one partition), or to a ``sink`` callable (offline extraction uses the
same pipeline with a collecting sink). With a fixed ``wall_anchor`` (replay) the message's
``produced`` field is the clip's ``wall_end``, so re-running the same input yields byte-identical
messages.

Delivery: a clip counts as published only when the transport acknowledges it (``on_delivery``);
clips finally lost are counted (``clips_lost``) and reported, never published. A message too large
for a size limit ends the run at once with :class:`RecordTooLargeError` (waiting cannot help).

CLI: :func:`add_commands` registers ``worker``, ``replay`` and ``extract`` subcommands.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from .clips import AudioChunk, Clip, ClipBuilder, Frame
from .frame_parts import FrameParts
from .logs import get_logger
from .metrics import MetricSet, WorkerMetrics
from .schema import FeatureMessage, Representation
from .sources import Discontinuity, EndOfStream, SourceError, VideoSource, parse_source
from .stats import WorkerStats
from .transport.base import DeliveryError, RecordTooLargeError

Sink = Callable[[FeatureMessage, Clip], None]

__all__ = ["Worker", "WorkerStats", "SourceError", "RecordTooLargeError"]


class Worker:
    """One camera: decode, sample, window, extract, publish.

    ``transport``: where messages are produced (default: ``make_transport(cfg)``, owned and closed
    by the worker); ``extractors``: list of :class:`~fusewatch.stream.extractors.base.Extractor` (default:
    ``build_extractors(cfg.features)``); ``wall_anchor``: fixed wall clock of the first frame
    (replay; default: ``time.time()`` at the first frame); ``realtime``: pace a file at ``speed``×
    its timestamps; ``loop``: play a file that many times (0 = forever); ``overflow``: queue policy
    override; ``sink``: ``f(message, clip)`` called instead of producing to the transport;
    ``metric_set``: shared :class:`~fusewatch.stream.metrics.MetricSet` (default: a private registry);
    ``serve_metrics``: start the Prometheus server when ``cfg.worker.metrics_port`` is set.
    """

    def __init__(
        self,
        cfg,
        camera: str,
        source: str,
        transport=None,
        extractors=None,
        wall_anchor: float | None = None,
        realtime: bool = False,
        *,
        speed: float = 1.0,
        loop: int = 1,
        overflow: str | None = None,
        sink: Sink | None = None,
        metric_set: MetricSet | None = None,
        serve_metrics: bool = True,
    ):
        if not camera or len(camera) > 256:
            raise SourceError(f"camera id must be 1..256 characters (got {camera!r})")
        self.cfg = cfg
        self.camera = camera
        self.source_uri = str(source)
        parse_source(self.source_uri, cfg.source)  # unsupported URI / missing file: fail fast
        self.log = get_logger("fusewatch.stream.worker", camera=camera)
        self.metrics = WorkerMetrics(camera, metric_set)
        self.deterministic = wall_anchor is not None
        self.epoch = 0 if self.deterministic else time.time_ns()
        """Stream epoch of this run (feature messages' ``epoch``): start time in ns, so a restarted
        worker numbering clips from 0 again is a new stream to the engine; 0 for deterministic replays."""
        self.sink = sink
        self._own_transport = False
        self.transport = transport
        if self.transport is None and sink is None:
            from .transport import make_transport

            self.transport = make_transport(cfg, consume=False)
            self._own_transport = True
        if extractors is None:
            extractors = default_extractors(cfg)
        self.extractors = list(extractors)
        if not self.extractors:
            raise SourceError("worker: no feature extractors configured")
        names = [e.name for e in self.extractors]
        if len(set(names)) != len(names):
            raise SourceError(f"worker: duplicate representation names {names}")
        self.frame_parts = self._frame_parts()
        self.want_audio = any(getattr(e, "needs_audio", False) for e in self.extractors)
        # parse the URI now: unsupported schemes / missing files fail before run()
        self.source = VideoSource(
            self.source_uri,
            cfg.source,
            wall_anchor=wall_anchor,
            realtime=realtime,
            speed=speed,
            loop=loop,
            overflow=overflow,
            want_audio=self.want_audio,
            metrics=self.metrics,
            log=self.log,
        )
        self.serve_metrics = serve_metrics
        self.metrics_port: int | None = None
        self.warning: str | None = None
        self.messages = 0
        self._stop = threading.Event()
        self._extract_failed: set[str] = set()
        self._publish_error_logged = 0.0
        self._lost_error: str | None = None
        self._fatal: DeliveryError | None = None
        self._done = threading.Event()
        self.recorder = self.health = None
        if sink is None:
            self._attach_monitors()
        from .live import ThumbnailPublisher

        self.thumbnails = ThumbnailPublisher(
            None if sink is not None else self.transport,
            cfg.topics.thumbnails,
            camera,
            cfg.worker.thumbnail_interval_s,
            cfg.worker.thumbnail_width,
        )
        """Callback on sampled frames: low-rate JPEGs on ``topics.thumbnails`` (not in offline extraction)."""

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to return soon (safe from signal handlers and other threads)."""
        self._stop.set()
        self.source.stop(join=0)

    @property
    def counters(self) -> dict:
        """Plain counters (frames_decoded, frames_dropped, reconnects, clips_published, ...)."""
        return self.metrics.snapshot()

    def stats(self) -> WorkerStats:
        info = self.source.info
        return WorkerStats.from_snapshot(
            self.metrics.snapshot(),
            camera=self.camera,
            source=self.source_uri,
            fps=info.get("fps"),
            width=info.get("width"),
            height=info.get("height"),
            backend=info.get("backend"),
            warning=self.warning,
            lost_error=self._lost_error,
        )

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> WorkerStats:
        """Process the source until it ends or :meth:`stop`; returns :meth:`stats` once every
        produced clip is acknowledged or finally lost (``clips_lost``; the caller decides the exit).

        Raises :class:`SourceError` when the source fails (no frames, gave up reconnecting) and
        :class:`RecordTooLargeError` as soon as a message exceeds a size limit."""
        cfg = self.cfg
        if self.serve_metrics and cfg.worker.metrics_port is not None:
            self.metrics_port = self.metrics.set.serve(cfg.worker.metrics_port)
            self.log.info("metrics server listening", extra={"fields": {"port": self.metrics_port}})
        builder = ClipBuilder.from_config(cfg)
        self.log.info(
            "worker started",
            extra={"fields": {"source": self.source_uri, "extractors": ",".join(e.name for e in self.extractors)}},
        )
        self.source.start()
        try:
            while not self._stop.is_set():
                if self._fatal is not None:
                    raise self._fatal
                item = self.source.get(0.2)
                if item is None:
                    if self.health is not None:
                        self.health.idle()
                    continue
                if isinstance(item, Frame):
                    self.metrics.inc("frames_processed")
                    if self.health is not None:
                        self.health.frame(item.pts, item.wall, item.image)
                    self.thumbnails(item)
                    if self.frame_parts is not None:
                        self.frame_parts.add(item.image, builder.next_position())
                    for clip in builder.push(item):
                        self.process_clip(clip)
                elif isinstance(item, AudioChunk):
                    builder.add_audio(item)
                elif isinstance(item, Discontinuity):
                    builder.reset()
                    if self.frame_parts is not None:
                        self.frame_parts.reset()
                elif isinstance(item, EndOfStream):
                    if item.error:
                        if self.health is not None:
                            self.health.source_failed(item.error)
                        raise SourceError(item.error)
                    if item.warning:
                        self.warning = item.warning
                    break
            if self._fatal is not None:
                raise self._fatal
        finally:
            self.source.stop()
            if self.recorder is not None:
                self.recorder.close()
            self._flush()
            if self._own_transport and self.transport is not None:
                try:
                    self.transport.close()
                except Exception as e:
                    self.log.error("transport close failed", extra={"fields": {"error": str(e)}})
            self._done.set()
        if self._fatal is not None:
            raise self._fatal
        st = self.stats()
        self.log.info(
            "worker finished",
            extra={
                "fields": {
                    k: getattr(st, k)
                    for k in (
                        "frames_decoded",
                        "frames_sampled",
                        "frames_dropped",
                        "reconnects",
                        "decode_errors",
                        "clips_produced",
                        "clips_published",
                        "clips_lost",
                    )
                }
            },
        )
        if st.clips_lost:
            self.log.error("clips lost", extra={"fields": {"clips_lost": st.clips_lost, "error": st.lost_error or ""}})
        return st

    def _flush(self) -> None:
        """Wait until every produced clip is acknowledged or finally lost (the transport's delivery
        timeout bounds it); the outcome is counted by :meth:`_delivered`."""
        if self.transport is None:
            return
        try:
            self.transport.flush(timeout=None)
        except Exception as e:
            self.log.error("flush failed", extra={"fields": {"error": f"{type(e).__name__}: {e}"}})

    def _frame_parts(self, exclude: tuple[str, ...] = (), batcher=None) -> FrameParts | None:
        """Per-frame extraction (``worker.per_frame``) for the extractors that support it; ``batcher``:
        a shared :class:`~fusewatch.stream.frame_batcher.FrameBatcher` for the CNN frames."""
        if not self.cfg.worker.per_frame:
            return None
        c = self.cfg.clips
        fp = FrameParts([e for e in self.extractors if e.name not in exclude], c.clip_len, c.clip_stride, batcher)
        return fp if fp.extractors else None

    # -- evidence buffer and camera health (hooks) ----------------------------------------------
    def _attach_monitors(self) -> None:
        """The evidence packet buffer (``evidence.enabled``: the source's packets remuxed into
        segments, :mod:`.evidence.segments`) and camera health (``health.enabled``:
        :mod:`.health`, state changes published as ``health`` records on the alerts topic)."""
        if self.cfg.evidence.enabled:
            from .evidence.segments import SegmentRecorder

            self.recorder = self.source.recorder = SegmentRecorder(self.cfg.evidence, self.camera)
        if self.cfg.health.enabled:
            from .health import HealthMonitor

            self.health = HealthMonitor(self.cfg.health, self._publish_health)

    def _publish_health(self, state: str, previous: str, since: float, detail: str) -> None:
        from .records import RECORD_HEADERS, encode_health

        self.metrics.inc("health_events")
        fields = {"state": state, "previous": previous, "detail": detail}
        (self.log.info if state == "ok" else self.log.warning)("camera health", extra={"fields": fields})
        data = encode_health(
            self.camera, state, previous, since, detail, produced=since if self.deterministic else None
        )
        try:
            self.transport.produce(
                self.cfg.topics.alerts,
                self.camera,
                data,
                RECORD_HEADERS["health"],
                on_delivery=lambda e: (
                    e and self.log.error("health record lost", extra={"fields": {**fields, "error": str(e)}})
                ),
            )
        except Exception as e:
            self.log.error("health record not produced", extra={"fields": {**fields, "error": str(e)}})

    # -- per clip -----------------------------------------------------------------------------
    def extract(self, clip: Clip) -> list[Representation]:
        """Run every extractor on ``clip`` (the per-frame ones finish from their frames' parts);
        absent (None) or failed representations are omitted."""
        ready = self.frame_parts.outcomes(clip) if self.frame_parts is not None else {}
        reps: list[Representation] = []
        for e in self.extractors:
            if e.name in ready:
                _, arr, err, seconds = ready[e.name]
            else:
                t0, err = time.perf_counter(), None
                try:
                    arr = e.extract(clip.frames, clip.audio, clip.audio_rate)
                except Exception as ex:
                    arr, err = None, ex
                seconds = time.perf_counter() - t0
            if (rep := self.accept(e, arr, err, seconds)) is not None:
                reps.append(rep)
        return reps

    def accept(self, e, arr, err: BaseException | None, seconds: float) -> Representation | None:
        """One extractor's outcome for a clip → its Representation, or None (absent, failed or
        invalid: logged once per extractor)."""
        self.metrics.observe_extract(e.name, seconds)
        if err is not None and e.name not in self._extract_failed:
            self._extract_failed.add(e.name)
            self.log.error(
                "extractor failed", extra={"fields": {"extractor": e.name, "error": f"{type(err).__name__}: {err}"}}
            )
        if err is not None or arr is None:
            return None
        a = np.asarray(arr)
        if a.dtype != np.float32:
            a = a.astype(np.float32)
        if a.shape != (e.dim,) or not np.isfinite(a).all():
            if e.name not in self._extract_failed:
                self._extract_failed.add(e.name)
                self.log.error(
                    "extractor returned an invalid vector",
                    extra={"fields": {"extractor": e.name, "shape": str(a.shape), "dim": e.dim}},
                )
            return None
        return Representation(name=e.name, array=a, extractor=e.name, version=str(e.version))

    def process_clip(self, clip: Clip) -> FeatureMessage | None:
        return self.publish(clip, self.extract(clip))

    def publish(self, clip: Clip, reps: list[Representation]) -> FeatureMessage | None:
        """Build ``clip``'s FeatureMessage from its extracted ``reps`` and hand it to the sink or
        transport (the multi-camera worker extracts in a shared pool and calls this)."""
        if not reps:
            self.log.warning("clip has no representation, not published", extra={"fields": {"clip": clip.index}})
            return None
        msg = FeatureMessage(
            camera=self.camera,
            clip=clip.index,
            pts_start=clip.pts_start,
            pts_end=clip.pts_end,
            wall_start=clip.wall_start,
            wall_end=clip.wall_end,
            frame_start=clip.frame_start,
            frame_end=clip.frame_end,
            reps=reps,
            produced=clip.wall_end if self.deterministic else time.time(),
            epoch=self.epoch,
        )
        ready = clip.ready_mono
        if self.sink is not None:
            try:
                self.sink(msg, clip)
            except Exception as e:
                self._lost(clip.index, e, produce_failed=True)
                return None
            self.metrics.inc("clips_produced")
            self.metrics.observe_latency(max(0.0, time.monotonic() - ready))
            self._delivered(clip.index, ready, None)
            return msg
        data = msg.encode()
        if len(data) > self.cfg.max_message_bytes:
            err = RecordTooLargeError(
                f"camera {self.camera} clip {clip.index}: feature message of {len(data)} bytes exceeds "
                f"max_message_bytes={self.cfg.max_message_bytes}; raise max_message_bytes (and the topic's "
                f"max.message.bytes) or configure fewer/smaller representations"
            )
            self._lost(clip.index, err, produce_failed=True)
            raise err
        try:
            self.transport.produce(
                self.cfg.topics.features,
                self.camera,
                data,
                on_delivery=lambda e, i=clip.index: self._delivered(i, ready, e),
            )
        except RecordTooLargeError as e:
            self._lost(clip.index, e, produce_failed=True)
            raise
        except Exception as e:
            self._lost(clip.index, e, produce_failed=True)
            return None
        self.metrics.inc("clips_produced")
        self.metrics.observe_latency(max(0.0, time.monotonic() - ready))
        return msg

    def _delivered(self, clip_index: int, ready_mono: float, err: BaseException | None) -> None:
        """Outcome of one produced clip (may run on a transport thread)."""
        if err is None:
            self.metrics.inc("clips_published")
            self.messages += 1
            return
        self._lost(clip_index, err, produce_failed=False)
        if isinstance(err, RecordTooLargeError) and self._fatal is None:
            self._fatal = err

    def _lost(self, clip_index: int, err: BaseException, produce_failed: bool) -> None:
        self.metrics.inc("clips_lost")
        if produce_failed:
            self.metrics.inc("publish_errors")
        text = f"{type(err).__name__}: {err}"
        if self._lost_error is None:
            self._lost_error = text
        now = time.monotonic()
        if now - self._publish_error_logged > 10:
            self._publish_error_logged = now
            self.log.error("clip lost (not delivered)", extra={"fields": {"clip": clip_index, "error": text}})


# -----------------------------------------------------------------------------------------------
def default_extractors(cfg) -> list:
    """``build_extractors(cfg.features)``; its one-line ValueErrors become ConfigError."""
    from .config import ConfigError
    from .extractors import build_extractors

    try:
        return build_extractors(cfg.features)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
