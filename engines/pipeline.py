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
from typing import Callable, Sequence

import numpy as np

from stream.config import Config
from stream.schema import AlertMessage, FeatureMessage
from stream.transport import BusTransport, InProcessBus, make_transport

from .runtime import ServingModel
from .service import EngineService, ScoreSink


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
    replay: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)
    wall_s: float = 0.0
    topics: dict = field(default_factory=dict)
    """Topic names used (``features``, ``alerts``, ``dead_letter``; suffixed with fresh_topics)."""

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
            self.res.clips.setdefault(camera, []).append(ClipRecord(
                msg.clip, score, msg.frame_start, msg.frame_end, msg.pts_start, msg.pts_end,
                time.time() - msg.wall_end))

    def on_alert(self, alert: AlertMessage) -> None:
        with self.lock:
            self.res.alerts.append(alert)
        if self.cb:
            self.cb(alert)


def stream_videos(videos: Sequence[str | Path], cfg: Config, model: ServingModel, *,
                  speed: float | None = None, camera_ids: Sequence[str] | None = None,
                  extractors=None, on_alert: Callable[[AlertMessage], None] | None = None,
                  fresh_topics: bool = False, drain_timeout: float = 120.0) -> StreamResult:
    """Replay ``videos`` as cameras through the configured transport into an engine; collect scores.

    ``speed``: None = as fast as possible, 1.0 = real time. On Kafka (``cfg.transport == "kafka"``)
    the topics are created if missing; ``fresh_topics`` suffixes them with a random id (tests,
    benchmarks) and a private consumer group is always used. Returns when every published clip has
    been consumed by the engine (or ``drain_timeout`` s after the replay finished).
    """
    from stream.replay import replay

    cfg = copy.deepcopy(cfg)
    res = StreamResult()
    sink = _Collector(res, on_alert)
    run_id = uuid.uuid4().hex[:8]
    cfg.engine.group_id = f"{cfg.engine.group_id}-{run_id}"
    if cfg.transport == "kafka":
        if fresh_topics:
            for k in ("features", "alerts", "dead_letter"):
                setattr(cfg.topics, k, f"{getattr(cfg.topics, k)}-{run_id}")
        from stream.topics import create_topics
        create_topics(cfg)
        engine_t = make_transport(cfg, group_id=cfg.engine.group_id)
        producer_t = make_transport(cfg, consume=False)
    else:
        bus = InProcessBus(partitions=cfg.topics.partitions)
        engine_t, producer_t = BusTransport(bus), BusTransport(bus)
    res.topics = {k: getattr(cfg.topics, k) for k in ("features", "alerts", "dead_letter")}
    svc = EngineService(cfg, model, engine_t, sink=sink)
    svc.start()
    stop = threading.Event()
    err: list[BaseException] = []

    def engine_loop():
        try:
            while not stop.is_set():
                svc.step()
        except BaseException as e:  # surfaced in the caller
            err.append(e)

    th = threading.Thread(target=engine_loop, name="engine", daemon=True)
    t0 = time.monotonic()
    th.start()
    try:
        # real-time pacing: anchor capture time at "now" so latency_s is clip end → scored;
        # as fast as possible: the files' own deterministic anchors
        anchors = [time.time()] * len(videos) if speed is not None else None
        res.replay = replay([str(v) for v in videos], cfg, transport=producer_t, speed=speed,
                            camera_ids=camera_ids, extractors=extractors, anchors=anchors)
        producer_t.flush()
        published = int(res.replay.get("clips_published", 0))
        deadline = time.monotonic() + drain_timeout
        while svc.stats.records < published and time.monotonic() < deadline and not err:
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(timeout=30)
        engine_t.close()
        producer_t.close()
    if err:
        raise err[0]
    res.wall_s = time.monotonic() - t0
    res.engine = dict(svc.stats.__dict__)
    for v in res.clips.values():
        v.sort(key=lambda c: c.clip)
    return res
