"""Replay video files as if they were live cameras (demos, tests, benchmarks, backfills).

One :class:`~fusewatch.stream.worker.Worker` per file, each in its own thread, camera id = file stem unless
given. Frames are paced at ``speed``× real time (``speed=None``: as fast as possible); the queue
policy is ``block`` so nothing is dropped. Output is deterministic: the wall-clock anchor of a file
is fixed (container ``creation_time`` metadata, else the file's mtime) and ``produced`` = the
clip's ``wall_end``, so two replays of the same files produce byte-identical feature messages
per camera. With ``loop=N`` clip indices and timestamps continue monotonically across loops.

The result is a :class:`~fusewatch.stream.stats.ReplayResult`: ``clips_published`` counts only
acknowledged clips, ``clips_lost`` what was finally not delivered (the CLI exits 1 on any loss).
A message too large for a size limit stops every worker at once (:class:`RecordTooLargeError`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Sequence

from .logs import get_logger
from .metrics import MetricSet
from .sources import SourceError, file_anchor, parse_source
from .stats import ReplayResult
from .transport.base import DeliveryError, RecordTooLargeError


class _Serialized:
    """Proxy making one extractor instance safe to share between worker threads."""

    def __init__(self, inner, lock: threading.Lock):
        self._inner, self._lock = inner, lock
        self.name, self.dim, self.version = inner.name, inner.dim, inner.version
        self.needs_audio = getattr(inner, "needs_audio", False)

    def extract(self, frames, audio, audio_rate):
        with self._lock:
            return self._inner.extract(frames, audio, audio_rate)


def replay(
    files: Sequence[str],
    cfg,
    transport=None,
    speed: float | None = 1.0,
    loop: int = 1,
    camera_ids: Sequence[str] | None = None,
    *,
    extractors=None,
    handle_signals: bool = False,
    raise_errors: bool = True,
    anchors: Sequence[float] | None = None,
    max_clips: int | None = None,
) -> ReplayResult:
    """Replay ``files`` concurrently; returns a :class:`ReplayResult` (per-camera
    :class:`~fusewatch.stream.stats.WorkerStats`, wall time, per-camera errors).

    ``transport``: shared by all workers (default ``make_transport(cfg)``, closed at the end);
    ``extractors``: None (each worker builds ``build_extractors(cfg.features)``), a callable
    returning a fresh list per worker, or one list shared (calls serialised by a lock);
    ``anchors``: explicit wall-clock anchors per file; ``max_clips``: stop each worker once it has
    produced that many clips (checked every 0.2 s: a few more may follow) — with it a live source
    (RTSP, HTTP, a device) is accepted too, read from now on like a live camera (wall-clock anchor
    at its first frame, ``source.overflow`` policy). Raises :class:`SourceError` (after all
    workers finished) when a file failed, unless ``raise_errors`` is False, and
    :class:`RecordTooLargeError` when a message exceeds a size limit (all workers are stopped).
    Lost clips do not raise: they are in the result (``clips_lost``, ``lost_summary()``).
    """
    from .signals import install_signal_handlers
    from .worker import Worker

    files = [str(f) for f in files]
    if not files:
        raise SourceError("replay: no files given")
    live = []
    for f in files:
        spec = parse_source(f, cfg.source)
        if spec.live and not max_clips:
            raise SourceError(f"replay {f}: only video files can be replayed (got a {spec.kind} source)")
        live.append(spec.live)
    if camera_ids:
        camera_ids = [str(c) for c in camera_ids]
        if len(camera_ids) != len(files):
            raise SourceError(f"replay: {len(camera_ids)} camera ids for {len(files)} files")
    else:
        camera_ids = [Path(f).stem for f in files]
    dup = sorted({c for c in camera_ids if camera_ids.count(c) > 1})
    if dup:
        raise SourceError(f"replay: duplicate camera ids {dup} (pass one --camera per file)")
    if anchors is None:
        anchors = [None if lv else file_anchor(f) for f, lv in zip(files, live)]
    log = get_logger("fusewatch.stream.replay")

    own_transport = transport is None
    if own_transport:
        from .transport import make_transport

        transport = make_transport(cfg, consume=False)

    lock = threading.Lock()

    def extractors_for_worker():
        if extractors is None:
            return None
        if callable(extractors):
            return extractors()
        return [_Serialized(e, lock) for e in extractors]

    metric_set = MetricSet()
    workers: list[Worker] = []
    try:
        for f, cam, anchor, lv in zip(files, camera_ids, anchors, live):
            workers.append(
                Worker(
                    cfg,
                    cam,
                    f,
                    transport=transport,
                    extractors=extractors_for_worker(),
                    wall_anchor=None if lv else float(anchor),
                    realtime=speed is not None and not lv,
                    speed=speed or 1.0,
                    loop=loop,
                    overflow=None if lv else "block",
                    metric_set=metric_set,
                    serve_metrics=False,
                )
            )
        if cfg.worker.metrics_port is not None:
            port = metric_set.serve(cfg.worker.metrics_port)
            log.info("metrics server listening", extra={"fields": {"port": port}})

        errors: dict[str, str] = {}
        fatal: list[DeliveryError] = []

        def stop_all() -> None:
            for w in workers:
                w.stop()

        def run_one(w: Worker) -> None:
            try:
                w.run()
            except RecordTooLargeError as e:  # cannot succeed by waiting: stop every worker now
                fatal.append(e)
                errors[w.camera] = str(e)
                stop_all()
            except Exception as e:  # SourceError and anything unexpected: report per camera
                errors[w.camera] = str(e) if isinstance(e, SourceError) else f"{type(e).__name__}: {e}"
                log.error("replay worker failed", extra={"fields": {"camera": w.camera, "error": errors[w.camera]}})

        restore = install_signal_handlers(stop_all) if handle_signals else (lambda: None)
        t0 = time.monotonic()
        threads = [threading.Thread(target=run_one, args=(w,), name=f"replay-{w.camera}", daemon=True) for w in workers]
        try:
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
                    for w in workers if max_clips else ():
                        if w.counters["clips_produced"] >= max_clips:
                            w.stop()
        finally:
            restore()
        wall = time.monotonic() - t0
    finally:
        if own_transport:
            try:
                transport.close()  # records lost here reach the workers' counters (on_delivery)
            except DeliveryError as e:
                log.error("transport close", extra={"fields": {"error": str(e)}})
        metric_set.shutdown()
    # stats after close: every clip's outcome (acknowledged / lost) is known now
    stats = ReplayResult(cameras={w.camera: w.stats() for w in workers}, wall_s=wall, errors=errors)
    if fatal:
        raise fatal[0]
    if errors and raise_errors:
        cam, msg = next(iter(errors.items()))
        raise SourceError(msg if msg.startswith("source ") else f"replay {cam}: {msg}")
    return stats
