"""Many cameras in one process: one decode/clip thread per camera, one shared extractor pool.

::

    mw = MultiWorker(cfg, [("cam1", "rtsp://10.0.0.5/a"), ("cam2", "/videos/b.mp4")])
    res = mw.run()       # ReplayResult: per-camera WorkerStats, per-camera errors, wall time
    res.errors           # {"cam2": "SourceError: ..."}: a dead camera does not stop the others

Each camera is a :class:`~fusewatch.stream.worker.Worker` (same source handling, watchdog,
reconnects, clip windows, metrics labelled by camera, delivery accounting and FeatureMessage
bytes) whose clips are extracted by a shared :class:`~fusewatch.stream.extractor_pool.ExtractorPool`
instead of in its own thread: the CNN backbones run batched across the cameras' clips — with
per-frame extraction (``worker.per_frame``, the default) each camera embeds its frames as they
arrive, or, with ``worker.batch_frames``, through a shared
:class:`~fusewatch.stream.frame_batcher.FrameBatcher`. A camera's
messages are published in clip order. A camera whose source cannot be opened, fails or gives up
reconnecting is recorded in ``errors`` and the others keep running; a message over a size limit
(:class:`RecordTooLargeError`) still stops everything, as in :func:`~fusewatch.stream.replay.replay`.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

from .extractor_pool import ExtractorPool, is_batchable
from .frame_batcher import FrameBatcher
from .logs import get_logger
from .metrics import MetricSet
from .schema import Representation
from .stats import ReplayResult, WorkerStats
from .transport.base import RecordTooLargeError
from .worker import Worker, default_extractors

__all__ = ["MultiWorker", "parse_cameras"]


def parse_cameras(entries: Sequence[str]) -> list[tuple[str, str]]:
    """``["ID=URI", ...]`` (``worker.cameras``, lines of a ``--cameras`` file; ``#`` comments and
    blank lines skipped; ``ID URI`` also accepted) → ``[(id, uri), ...]``."""
    from .config import ConfigError

    out = []
    for raw in entries:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        sep = "=" if "=" in line.split()[0] else None
        parts = line.split(sep, 1) if sep else line.split(None, 1)
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ConfigError(f"cameras: expected 'ID=URI' (got {raw!r})")
        out.append((parts[0].strip(), parts[1].strip()))
    ids = [c for c, _ in out]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"cameras: duplicate camera ids in {ids}")
    return out


class _PooledCamera(Worker):
    """A Worker whose clips go to the shared pool; results are published in clip order."""

    def __init__(self, *a, pool: ExtractorPool, batcher: FrameBatcher | None = None, **kw):
        super().__init__(*a, **kw)
        self.pool = pool
        self._seq = 0
        self._next = 0
        self._ready: dict[int, tuple] = {}
        self._order = threading.Lock()
        self._idle = threading.Condition(self._order)
        self.clips_gated = 0
        if pool.motion_gate:  # the gate decides per clip whether the CNNs run: not per frame
            self.frame_parts = self._frame_parts(exclude=tuple(e.name for e in self.extractors if is_batchable(e)))
        elif batcher is not None:  # CNN frames of every camera share inference calls
            self.frame_parts = self._frame_parts(batcher=batcher)

    def process_clip(self, clip):
        seq = self._seq
        self._seq += 1
        ready = self.frame_parts.outcomes(clip) if self.frame_parts is not None else {}
        if all(e.name in ready for e in self.extractors):  # every feature is done: publish from here
            self._pool_done(seq, clip, [ready[e.name] for e in self.extractors], False)
            return None
        self.pool.submit(
            self.camera, clip, lambda outcomes, gated: self._pool_done(seq, clip, outcomes, gated), ready=ready
        )
        return None

    def _pool_done(self, seq, clip, outcomes, gated) -> None:
        with self._order:
            self._ready[seq] = (clip, outcomes, gated)
            while self._next in self._ready:
                c, outs, g = self._ready.pop(self._next)
                try:
                    self.clips_gated += int(g)
                    self.publish(c, self._reps(outs))
                except RecordTooLargeError as e:
                    if self._fatal is None:
                        self._fatal = e
                except Exception as e:
                    self._lost(c.index, e, produce_failed=True)
                self._next += 1
            self._idle.notify_all()

    def _reps(self, outcomes) -> list[Representation]:
        """The same checks as :meth:`Worker.extract` on the pool's outcomes."""
        by_name = {e.name: e for e in self.extractors}
        return [r for name, arr, err, sec in outcomes if (r := self.accept(by_name[name], arr, err, sec)) is not None]

    def _flush(self) -> None:
        with self._order:  # every clip handed to the pool is published (or lost) first
            while self._next < self._seq:
                self._idle.wait(0.5)
        super()._flush()


class MultiWorker:
    """Serve ``cameras`` (``[(id, uri)]``) from one process (see the module docstring).

    ``transport`` (shared; default ``make_transport(cfg)``, owned and closed here), ``extractors``
    (shared; default ``build_extractors(cfg.features)``), ``wall_anchor`` (float or ``{camera:
    float}``), ``realtime``/``speed``/``loop``/``overflow``/``sink``: as for :class:`Worker`.
    Pool settings: ``cfg.worker.pool_threads``, ``batch_clips``, ``batch_wait_ms``;
    ``cfg.features.motion_gate`` / ``motion_gate_threshold``."""

    def __init__(
        self,
        cfg,
        cameras: Sequence[tuple[str, str]],
        transport=None,
        extractors=None,
        wall_anchor=None,
        realtime: bool = False,
        *,
        speed: float = 1.0,
        loop: int = 1,
        overflow: str | None = None,
        sink=None,
        metric_set: MetricSet | None = None,
        serve_metrics: bool = True,
        start_delays: Sequence[float] | None = None,
    ):
        from .config import ConfigError

        self.cfg = cfg
        self.cameras = [(str(c), str(u)) for c, u in cameras]
        if not self.cameras:
            raise ConfigError("worker: no cameras to serve")
        ids = [c for c, _ in self.cameras]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"worker: duplicate camera ids in {ids}")
        self.log = get_logger("fusewatch.stream.multi_worker")
        self.metric_set = metric_set or MetricSet()
        self.serve_metrics = serve_metrics
        self.extractors = list(extractors) if extractors is not None else default_extractors(cfg)
        self._own_transport = transport is None and sink is None
        if self._own_transport:
            from .transport import make_transport

            transport = make_transport(cfg, consume=False)
        self.transport = transport
        w = cfg.worker
        f = cfg.features
        self.pool = ExtractorPool(
            self.extractors,
            threads=getattr(w, "pool_threads", 2),
            batch_clips=getattr(w, "batch_clips", 8),
            batch_wait_ms=getattr(w, "batch_wait_ms", 5.0),
            motion_gate=f.motion_gate,
            gate_threshold=f.motion_gate_threshold,
        )
        self.batcher = (
            FrameBatcher(threads=w.pool_threads, batch_wait_ms=w.batch_wait_ms)
            if w.per_frame and w.batch_frames and not f.motion_gate and any(is_batchable(e) for e in self.extractors)
            else None
        )
        self.start_delays = list(start_delays or [])
        self.workers: dict[str, _PooledCamera] = {}
        self.errors: dict[str, str] = {}
        self._stop = threading.Event()
        for cam, uri in self.cameras:
            anchor = wall_anchor.get(cam) if isinstance(wall_anchor, dict) else wall_anchor
            try:
                self.workers[cam] = _PooledCamera(
                    cfg,
                    cam,
                    uri,
                    transport=self.transport,
                    extractors=self.extractors,
                    wall_anchor=anchor,
                    realtime=realtime,
                    speed=speed,
                    loop=loop,
                    overflow=overflow,
                    sink=sink,
                    metric_set=self.metric_set,
                    serve_metrics=False,
                    pool=self.pool,
                    batcher=self.batcher,
                )
            except Exception as e:  # a camera that cannot even be opened: recorded, the others run
                self.errors[cam] = f"{type(e).__name__}: {e}"
                self.log.error("camera failed", extra={"fields": {"camera": cam, "error": self.errors[cam]}})

    def stop(self) -> None:
        """Ask every camera to stop (safe from signal handlers)."""
        self._stop.set()
        for w in self.workers.values():
            w.stop()

    @property
    def clips_gated(self) -> int:
        return self.pool.clips_gated

    def run(self) -> ReplayResult:
        """Run every camera until its source ends or fails (or :meth:`stop`); raises
        :class:`RecordTooLargeError` when a message exceeds a size limit."""
        t0 = time.perf_counter()
        if self.serve_metrics and self.cfg.worker.metrics_port is not None:
            port = self.metric_set.serve(self.cfg.worker.metrics_port)
            self.log.info("metrics server listening", extra={"fields": {"port": port}})
        fatal: list[BaseException] = []

        def serve(cam: str, w: _PooledCamera, delay: float) -> None:
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                w.run()
            except RecordTooLargeError as e:
                fatal.append(e)
                self.errors[cam] = f"{type(e).__name__}: {e}"
                self.stop()
            except Exception as e:
                self.errors[cam] = f"{type(e).__name__}: {e}"
                self.log.error("camera failed", extra={"fields": {"camera": cam, "error": self.errors[cam]}})

        threads = []
        for i, (cam, w) in enumerate(self.workers.items()):
            delay = self.start_delays[i] if i < len(self.start_delays) else 0.0
            t = threading.Thread(target=serve, args=(cam, w, delay), name=f"fusewatch-cam-{cam}", daemon=True)
            t.start()
            threads.append(t)
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        finally:
            if self.batcher is not None:  # the cameras have stopped: nothing more is queued
                self.batcher.close()
            self.pool.close()
            if self._own_transport and self.transport is not None:
                try:
                    self.transport.close()
                except Exception as e:
                    self.log.error("transport close failed", extra={"fields": {"error": str(e)}})
        if fatal:
            raise fatal[0]
        stats = {cam: w.stats() for cam, w in self.workers.items()}
        for cam, _ in self.cameras:
            stats.setdefault(cam, WorkerStats(camera=cam, source=dict(self.cameras)[cam]))
        return ReplayResult(cameras=stats, wall_s=time.perf_counter() - t0, errors=dict(self.errors))
