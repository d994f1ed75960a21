"""The camera worker: source → sampled frames → clip windows → extractors → FeatureMessage → topic.

::

    w = Worker(cfg, camera="cam1", source="rtsp://10.0.0.5/stream")
    w.run()          # blocks until the source ends, fails (SourceError) or stop() is called

One :class:`Worker` per camera. Feature messages go to ``cfg.topics.features`` keyed by the camera
id (so one camera maps to one partition), or to a ``sink`` callable (offline extraction uses the
same pipeline with a collecting sink). With a fixed ``wall_anchor`` (replay) the message's
``produced`` field is the clip's ``wall_end``, so re-running the same input yields byte-identical
messages.

CLI: :func:`add_commands` registers ``worker``, ``replay`` and ``extract`` subcommands.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import Callable

import numpy as np

from .clips import AudioChunk, Clip, ClipBuilder, Frame
from .logs import get_logger
from .metrics import MetricSet, WorkerMetrics
from .schema import FeatureMessage, Representation
from .sources import Discontinuity, EndOfStream, SourceError, VideoSource, parse_source

Sink = Callable[[FeatureMessage, Clip], None]

__all__ = ["Worker", "SourceError", "add_commands", "install_signal_handlers"]


class Worker:
    """One camera: decode, sample, window, extract, publish.

    ``transport``: where messages are produced (default: ``make_transport(cfg)``, owned and closed
    by the worker); ``extractors``: list of :class:`~stream.extractors.base.Extractor` (default:
    ``build_extractors(cfg.features)``); ``wall_anchor``: fixed wall clock of the first frame
    (replay; default: ``time.time()`` at the first frame); ``realtime``: pace a file at ``speed``×
    its timestamps; ``loop``: play a file that many times (0 = forever); ``overflow``: queue policy
    override; ``sink``: ``f(message, clip)`` called instead of producing to the transport;
    ``metric_set``: shared :class:`~stream.metrics.MetricSet` (default: a private registry);
    ``serve_metrics``: start the Prometheus server when ``cfg.worker.metrics_port`` is set.
    """

    def __init__(self, cfg, camera: str, source: str, transport=None, extractors=None,
                 wall_anchor: float | None = None, realtime: bool = False, *, speed: float = 1.0,
                 loop: int = 1, overflow: str | None = None, sink: Sink | None = None,
                 metric_set: MetricSet | None = None, serve_metrics: bool = True):
        if not camera or len(camera) > 256:
            raise SourceError(f"camera id must be 1..256 characters (got {camera!r})")
        self.cfg = cfg
        self.camera = camera
        self.source_uri = str(source)
        parse_source(self.source_uri, cfg.source)  # unsupported URI / missing file: fail fast
        self.log = get_logger("stream.worker", camera=camera)
        self.metrics = WorkerMetrics(camera, metric_set)
        self.deterministic = wall_anchor is not None
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
        self.want_audio = any(getattr(e, "needs_audio", False) for e in self.extractors)
        # parse the URI now: unsupported schemes / missing files fail before run()
        self.source = VideoSource(self.source_uri, cfg.source, wall_anchor=wall_anchor, realtime=realtime,
                                  speed=speed, loop=loop, overflow=overflow, want_audio=self.want_audio,
                                  metrics=self.metrics, log=self.log)
        self.serve_metrics = serve_metrics
        self.metrics_port: int | None = None
        self.warning: str | None = None
        self.messages = 0
        self._stop = threading.Event()
        self._extract_failed: set[str] = set()
        self._publish_error_logged = 0.0
        self._done = threading.Event()

    # -- control ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to return soon (safe from signal handlers and other threads)."""
        self._stop.set()
        self.source.stop(join=0)

    @property
    def counters(self) -> dict:
        """Plain counters (frames_decoded, frames_dropped, reconnects, clips_published, ...)."""
        return self.metrics.snapshot()

    def stats(self) -> dict:
        out = self.metrics.snapshot()
        out.update(camera=self.camera, source=self.source_uri, fps=self.source.info.get("fps"),
                   width=self.source.info.get("width"), height=self.source.info.get("height"),
                   backend=self.source.info.get("backend"), warning=self.warning)
        return out

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Process the source until it ends or :meth:`stop`; returns :meth:`stats`.

        Raises :class:`SourceError` when the source fails (no frames, gave up reconnecting)."""
        cfg = self.cfg
        if self.serve_metrics and cfg.worker.metrics_port is not None:
            self.metrics_port = self.metrics.set.serve(cfg.worker.metrics_port)
            self.log.info("metrics server listening", extra={"fields": {"port": self.metrics_port}})
        builder = ClipBuilder.from_config(cfg)
        self.log.info("worker started", extra={"fields": {
            "source": self.source_uri, "extractors": ",".join(e.name for e in self.extractors)}})
        self.source.start()
        try:
            while not self._stop.is_set():
                item = self.source.get(0.2)
                if item is None:
                    continue
                if isinstance(item, Frame):
                    self.metrics.inc("frames_processed")
                    for clip in builder.push(item):
                        self.process_clip(clip)
                elif isinstance(item, AudioChunk):
                    builder.add_audio(item)
                elif isinstance(item, Discontinuity):
                    builder.reset()
                elif isinstance(item, EndOfStream):
                    if item.error:
                        raise SourceError(item.error)
                    if item.warning:
                        self.warning = item.warning
                    break
        finally:
            self.source.stop()
            self._flush()
            if self._own_transport and self.transport is not None:
                try:
                    self.transport.close()
                except Exception as e:
                    self.log.error("transport close failed", extra={"fields": {"error": str(e)}})
            self._done.set()
        st = self.stats()
        self.log.info("worker finished", extra={"fields": {
            k: st[k] for k in ("frames_decoded", "frames_sampled", "frames_dropped", "reconnects",
                               "decode_errors", "clips_published")}})
        return st

    def _flush(self) -> None:
        if self.transport is None:
            return
        try:
            self.transport.flush(timeout=30.0)
        except Exception as e:
            self.log.error("flush failed", extra={"fields": {"error": f"{type(e).__name__}: {e}"}})

    # -- per clip -----------------------------------------------------------------------------
    def extract(self, clip: Clip) -> list[Representation]:
        """Run every extractor on ``clip``; absent (None) or failed representations are omitted."""
        reps: list[Representation] = []
        for e in self.extractors:
            t0 = time.perf_counter()
            try:
                arr = e.extract(clip.frames, clip.audio, clip.audio_rate)
            except Exception as ex:
                arr = None
                if e.name not in self._extract_failed:
                    self._extract_failed.add(e.name)
                    self.log.error("extractor failed", extra={"fields": {
                        "extractor": e.name, "error": f"{type(ex).__name__}: {ex}"}})
            self.metrics.observe_extract(e.name, time.perf_counter() - t0)
            if arr is None:
                continue
            a = np.asarray(arr)
            if a.dtype != np.float32:
                a = a.astype(np.float32)
            if a.shape != (e.dim,) or not np.isfinite(a).all():
                if e.name not in self._extract_failed:
                    self._extract_failed.add(e.name)
                    self.log.error("extractor returned an invalid vector", extra={"fields": {
                        "extractor": e.name, "shape": str(a.shape), "dim": e.dim}})
                continue
            reps.append(Representation(name=e.name, array=a, extractor=e.name, version=str(e.version)))
        return reps

    def process_clip(self, clip: Clip) -> FeatureMessage | None:
        reps = self.extract(clip)
        if not reps:
            self.log.warning("clip has no representation, not published", extra={"fields": {"clip": clip.index}})
            return None
        msg = FeatureMessage(camera=self.camera, clip=clip.index, pts_start=clip.pts_start,
                             pts_end=clip.pts_end, wall_start=clip.wall_start, wall_end=clip.wall_end,
                             frame_start=clip.frame_start, frame_end=clip.frame_end, reps=reps,
                             produced=clip.wall_end if self.deterministic else time.time())
        try:
            if self.sink is not None:
                self.sink(msg, clip)
            else:
                data = msg.encode()
                if len(data) > self.cfg.max_message_bytes:
                    raise ValueError(f"message of {len(data)} bytes exceeds max_message_bytes "
                                     f"{self.cfg.max_message_bytes}")
                self.transport.produce(self.cfg.topics.features, self.camera, data)
        except Exception as e:
            self.metrics.inc("publish_errors")
            now = time.monotonic()
            if now - self._publish_error_logged > 10:
                self._publish_error_logged = now
                self.log.error("publish failed", extra={"fields": {"clip": clip.index,
                                                                   "error": f"{type(e).__name__}: {e}"}})
            return None
        self.metrics.observe_latency(max(0.0, time.monotonic() - clip.ready_mono))
        self.metrics.inc("clips_published")
        self.messages += 1
        return msg


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


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """Call ``stop()`` on SIGINT/SIGTERM (main thread only); returns a function restoring the old
    handlers. A second signal restores the defaults, so a third one kills the process."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    hits = {"n": 0}

    def handler(signum, frame):
        hits["n"] += 1
        get_logger("stream.worker").warning("signal received, stopping",
                                            extra={"fields": {"signal": signal.Signals(signum).name}})
        stop()
        if hits["n"] >= 2:
            for s, h in old.items():
                signal.signal(s, h)

    for s in old:
        signal.signal(s, handler)

    def restore():
        for s, h in old.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):
                pass

    return restore


def _setup_logs(cfg) -> None:
    from .logs import setup_from_config
    setup_from_config(cfg)


def cmd_worker(args, cfg) -> int:
    """``fusewatch worker --camera ID --source URI``."""
    if getattr(args, "metrics_port", None) is not None:
        cfg.worker.metrics_port = args.metrics_port
    _setup_logs(cfg)
    if cfg.transport == "bus":
        get_logger("stream.worker", camera=args.camera).warning(
            "transport=bus: the in-process bus lives inside this process, so no engine elsewhere sees "
            "these messages; use --transport kafka (or `fusewatch demo` / `replay` for an embedded run)")
    w = Worker(cfg, camera=args.camera, source=args.source)
    restore = install_signal_handlers(w.stop)
    try:
        st = w.run()
    finally:
        restore()
    if st.get("warning"):
        get_logger("stream.worker", camera=args.camera).warning(st["warning"])
    return 0


def _parse_speed(s: str) -> float | None:
    if str(s).strip().lower() in ("max", "inf", "0"):
        return None
    try:
        v = float(s)
    except ValueError:
        raise SourceError(f"--speed: expected a number or 'max' (got {s!r})") from None
    if not v > 0:
        raise SourceError(f"--speed: must be > 0 or 'max' (got {s!r})")
    return v


def cmd_replay(args, cfg) -> int:
    """``fusewatch replay FILE... [--speed 1.0|max] [--loop N] [--camera ID ...]``."""
    from .replay import replay

    _setup_logs(cfg)
    stats = replay(args.files, cfg, speed=_parse_speed(args.speed), loop=args.loop,
                   camera_ids=args.camera or None, handle_signals=True)
    for cam, st in stats["cameras"].items():
        print(f"{cam}: {st['clips_published']} clips, {st['frames_decoded']} frames decoded, "
              f"{st['frames_dropped']} dropped, {st['decode_errors']} decode errors")
    print(f"replay: {stats['clips_published']} clips from {len(stats['cameras'])} cameras "
          f"in {stats['wall_s']:.1f} s")
    return 0


def cmd_extract(args, cfg) -> int:
    """``fusewatch extract VIDEO_OR_DIR... --out DIR``."""
    from .extract import extract_videos

    _setup_logs(cfg)
    out = extract_videos(args.inputs, args.out, cfg)
    print(out)
    return 0


def add_commands(subparsers) -> None:
    """Register ``worker``, ``replay`` and ``extract`` on an argparse subparsers object. Each
    parser gets ``handler=f(args, cfg) -> int`` via ``set_defaults``; handlers raise
    :class:`SourceError` / ``ConfigError`` for one-line user errors (print, exit 2)."""
    p = subparsers.add_parser("worker", help="run one camera worker (source -> features topic)",
                              description="Decode a camera/video source, extract clip features and "
                                          "produce them to the features topic.")
    p.add_argument("--camera", required=True, help="camera id (message key)")
    p.add_argument("--source", required=True,
                   help="file path, rtsp://, http(s)://, /dev/videoN or v4l2://N")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="Prometheus metrics port (overrides worker.metrics_port)")
    p.set_defaults(handler=cmd_worker)

    p = subparsers.add_parser("replay", help="replay video files as live cameras",
                              description="One worker per file (camera id = file stem), paced in "
                                          "real time or as fast as possible; deterministic output.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--speed", default="1.0", help="playback speed factor, or 'max' (default 1.0)")
    p.add_argument("--loop", type=int, default=1, help="play each file N times (0 = forever)")
    p.add_argument("--camera", action="append", default=None,
                   help="camera id for the corresponding FILE (repeat; default: file stem)")
    p.set_defaults(handler=cmd_replay)

    p = subparsers.add_parser("extract", help="offline feature extraction to .npy files",
                              description="Write FEAT_DIR/<representation>/<video_stem>.npy "
                                          "(clips x dim float32) and FEAT_DIR/meta.json.")
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=cmd_extract)
