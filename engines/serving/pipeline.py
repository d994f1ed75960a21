"""The streaming path in one call: replay videos → workers → transport → engine → alerts.

Used by ``fusewatch demo``, ``fusewatch eval --videos DIR --stream`` and ``bench/ped2.py`` so that
every figure they report comes from the same code that serves live cameras.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from fusewatch.engines.serving.runtime import ServingModel
from fusewatch.engines.serving.service import EngineService, ScoreSink
from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.config import Config
from fusewatch.stream.schema import FeatureMessage
from fusewatch.stream.stats import ReplayResult
from fusewatch.stream.transport import BusTransport, DeliveryError, InProcessBus, make_transport


@dataclass
class ClipRecord:
    """One scored clip as the engine saw it."""

    clip: int
    score: float
    frame_start: int
    frame_end: int
    pts_start: float
    pts_end: float
    latency_s: float
    """Engine scoring time minus the clip's capture end (wall clock); meaningful for real-time replays."""


@dataclass
class StreamResult:
    clips: dict[str, list[ClipRecord]] = field(default_factory=dict)
    alerts: list[AlertMessage] = field(default_factory=list)
    replay: ReplayResult | None = None
    engine: dict = field(default_factory=dict)
    wall_s: float = 0.0
    topics: dict = field(default_factory=dict)
    """Topic names used (``features``, ``alerts``, ``dead_letter``; suffixed with fresh_topics)."""
    evidence: list = field(default_factory=list)
    """``evidence`` records written for the alerts (``evidence.enabled``), as dicts."""

    def scores(self, camera: str) -> np.ndarray:
        """Clip scores of ``camera`` in clip order (T,)."""
        return np.array([c.score for c in sorted(self.clips.get(camera, []), key=lambda c: c.clip)], np.float32)


class _Collector(ScoreSink):
    def __init__(self, res: StreamResult, on_alert: Callable[[AlertMessage], None] | None):
        self.res = res
        self.cb = on_alert
        self.lock = threading.Lock()

    def on_score(self, camera: str, msg: FeatureMessage, score: float) -> None:
        with self.lock:
            self.res.clips.setdefault(camera, []).append(
                ClipRecord(
                    msg.clip,
                    score,
                    msg.frame_start,
                    msg.frame_end,
                    msg.pts_start,
                    msg.pts_end,
                    time.time() - msg.wall_end,
                )
            )

    def on_alert(self, alert: AlertMessage) -> None:
        with self.lock:
            self.res.alerts.append(alert)
        if self.cb:
            self.cb(alert)


def stream_videos(
    videos: Sequence[str | Path],
    cfg: Config,
    model: ServingModel,
    *,
    speed: float | None = None,
    camera_ids: Sequence[str] | None = None,
    extractors=None,
    on_alert: Callable[[AlertMessage], None] | None = None,
    fresh_topics: bool = False,
    drain_timeout: float = 120.0,
    on_evidence: Callable[[dict], None] | None = None,
    bus: InProcessBus | None = None,
    max_clips: int | None = None,
) -> StreamResult:
    """Replay ``videos`` as cameras through the configured transport into an engine; collect scores.

    ``speed``: None = as fast as possible, 1.0 = real time. On Kafka (``cfg.transport == "kafka"``)
    the topics are created if missing; ``fresh_topics`` suffixes them with a random id (tests,
    benchmarks) and a private consumer group is always used. Returns when every published clip has
    been consumed by the engine; raises :class:`DeliveryError` when a clip was lost on the way or
    the engine had not consumed every published clip ``drain_timeout`` s after the replay finished
    (scores of part of a stream are never returned as a complete result). With
    ``cfg.evidence.enabled`` an evidence writer cuts a clip per alert (``on_evidence(record)``). ``bus``: the
    in-process bus to use (``fusewatch demo --ui`` shares it with the web UI; default: a new one).
    ``max_clips``: stop each camera after that many clips (a few more may follow); with it
    ``videos`` may be live sources (RTSP, HTTP, devices), which never end otherwise.
    """
    cb = (lambda _name, a: on_alert(a)) if on_alert else None
    return stream_videos_multi(
        videos,
        cfg,
        {"": model},
        speed=speed,
        camera_ids=camera_ids,
        extractors=extractors,
        on_alert=cb,
        fresh_topics=fresh_topics,
        drain_timeout=drain_timeout,
        on_evidence=on_evidence,
        bus=bus,
        max_clips=max_clips,
    )[""]


def stream_videos_multi(
    videos: Sequence[str | Path],
    cfg: Config,
    models: Mapping[str, ServingModel],
    *,
    speed: float | None = None,
    camera_ids: Sequence[str] | None = None,
    extractors=None,
    on_alert: Callable[[str, AlertMessage], None] | None = None,
    fresh_topics: bool = False,
    delete_fresh_topics: bool = False,
    drain_timeout: float = 120.0,
    on_evidence: Callable[[dict], None] | None = None,
    bus: InProcessBus | None = None,
    max_clips: int | None = None,
) -> dict[str, StreamResult]:
    """:func:`stream_videos` for several models at once: one replay, one
    :class:`~fusewatch.engines.serving.service.EngineService` per model (``{name: ServingModel}``), each in its own
    consumer group on the same features topic. ``on_alert(name, alert)``. Returns
    ``{name: StreamResult}`` (``replay``, ``wall_s`` and ``topics`` shared)."""
    from fusewatch.stream.replay import replay

    cfg = copy.deepcopy(cfg)
    run_id = uuid.uuid4().hex[:8]
    results = {name: StreamResult() for name in models}
    sinks = {
        name: _Collector(results[name], (lambda a, n=name: on_alert(n, a)) if on_alert else None) for name in models
    }
    if cfg.transport == "kafka":
        if fresh_topics:
            for k in ("features", "alerts", "dead_letter", "scores", "thumbnails"):
                setattr(cfg.topics, k, f"{getattr(cfg.topics, k)}-{run_id}")
        from fusewatch.stream.topics import create_topics

        create_topics(cfg)
        producer_t = make_transport(cfg, consume=False)
    else:
        bus = bus or InProcessBus(partitions=cfg.topics.partitions)
        producer_t = BusTransport(bus)
    topics = {k: getattr(cfg.topics, k) for k in ("features", "alerts", "dead_letter", "scores", "thumbnails")}
    transports = [producer_t]
    services: dict[str, EngineService] = {}
    try:
        for name, model in models.items():
            c = copy.deepcopy(cfg)
            c.engine.group_id = f"{cfg.engine.group_id}-{run_id}" + (f"-{name}" if name else "")
            t = make_transport(c, group_id=c.engine.group_id) if cfg.transport == "kafka" else BusTransport(bus)
            transports.append(t)
            services[name] = EngineService(c, model, t, sink=sinks[name])
            services[name].start()
    except BaseException:
        for t in transports:
            t.close()
        raise
    writer = _start_evidence(cfg, bus if cfg.transport != "kafka" else None, run_id, on_evidence, transports)
    stop = threading.Event()
    err: list[BaseException] = []

    def engine_loop():
        try:
            while not stop.is_set():
                for svc in services.values():
                    svc.step()
        except BaseException as e:  # surfaced in the caller
            err.append(e)

    th = threading.Thread(target=engine_loop, name="engine", daemon=True)
    t0 = time.monotonic()
    th.start()
    rep: ReplayResult | None = None
    try:
        # real-time pacing: anchor capture time at "now" so latency_s is clip end → scored;
        # as fast as possible: the files' own deterministic anchors
        anchors = [time.time()] * len(videos) if speed is not None else None
        rep = replay(
            [str(v) for v in videos],
            cfg,
            transport=producer_t,
            speed=speed,
            camera_ids=camera_ids,
            extractors=extractors,
            anchors=anchors,
            max_clips=max_clips,
        )
        producer_t.flush()
        if rep.clips_lost:  # scores of a partial stream would be a false result
            raise DeliveryError(f"stream: {rep.lost_summary()}")
        published = rep.clips_published
        deadline = time.monotonic() + drain_timeout
        while any(s.stats.records < published for s in services.values()) and time.monotonic() < deadline and not err:
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(timeout=30)
        if writer is not None:  # alerts still open at the end of the files are cut as they are
            writer.stop(drain_s=cfg.evidence.wait_s + 60.0, flush_open=True)
        for t in transports:
            t.close()
        if cfg.transport == "kafka" and fresh_topics and delete_fresh_topics:
            _delete_topics(cfg, list(topics.values()))
    if err:
        raise err[0]
    assert rep is not None
    short = {n: s.stats.records for n, s in services.items() if s.stats.records < rep.clips_published}
    if short:  # results from part of the stream would read as a complete run
        raise DeliveryError(
            f"stream: the engine consumed {min(short.values())} of {rep.clips_published} published clips "
            f"within drain_timeout = {drain_timeout:g} s; no partial result is returned"
        )
    wall = time.monotonic() - t0
    for name, res in results.items():
        res.replay, res.wall_s, res.topics = rep, wall, topics
        res.engine = dict(services[name].stats.__dict__)
        res.evidence = list(writer.records) if writer is not None else []
        for v in res.clips.values():
            v.sort(key=lambda c: c.clip)
    return results


def _start_evidence(cfg: Config, bus, run_id: str, on_evidence, transports: list):
    """The evidence writer of a pipeline run (None unless ``cfg.evidence.enabled``), on its own
    transport (appended to ``transports``) and group, reading alerts from now on."""
    if not cfg.evidence.enabled:
        return None
    from fusewatch.stream.evidence.writer import EvidenceWriter

    group = f"{cfg.evidence.group_id}-{run_id}"
    t = BusTransport(bus) if bus is not None else make_transport(cfg, group_id=group)
    transports.append(t)
    w = EvidenceWriter(cfg, t, group_id=group, from_beginning=bus is not None, on_evidence=on_evidence)
    if bus is None:  # Kafka: be assigned (positioned at the end) before any alert of this run
        deadline = time.monotonic() + 30
        while not t.assignment() and time.monotonic() < deadline:
            w.step(0.2)
    return w.start()


def _delete_topics(cfg: Config, names: list[str]) -> None:
    """Best-effort removal of a run's fresh Kafka topics."""
    try:
        from fusewatch.stream.transport.kafka import admin_client

        admin = admin_client(cfg)
        try:
            admin.delete_topics(names, raise_errors=False)
        finally:
            admin.close()
    except Exception:  # noqa: BLE001 - cleanup only
        pass
