"""The engine service: features topic → per-camera incremental graphs → batched scoring → alerts.

Loop (one consumer in group ``cfg.engine.group_id``; scale out by running more, Kafka spreads
partitions, and a camera id key keeps each camera on one partition):

1. ``poll`` up to ``max_batch`` records (waiting at most ``max_wait_ms``).
2. Decode each record; malformed ones (:class:`~fusewatch.stream.schema.SchemaError`, wrong dims) go to the
   dead-letter topic with the reason, and the engine goes on.
3. Push each clip into its camera's :class:`~fusewatch.engines.serving.state.CameraGraphState` (O(N·d) update),
   snapshot the window graphs, and score all snapshots of the poll in one batch
   (``scorer.score_graphs``: B×M×N×N → B×N; the clip's score is the newest node's, index N-1).
4. Feed scores to each camera's :class:`~fusewatch.engines.serving.alerts.AlertTracker`; produce alerts keyed by camera.
5. Flush the producer, then commit the consumed offsets (at-least-once; alert ids are
   deterministic so re-processing yields the same ids).

On partition assignment the cameras' state is rebuilt by seeking back and re-reading their last
``window + rebuild_history`` clips silently (no alerts emitted for offsets below the committed
one), so a restarted or rebalanced engine scores like an uninterrupted one.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from fusewatch.stream.config import Config
from fusewatch.stream.live import encode_score
from fusewatch.stream.schema import (ALERT_HEADERS, Evidence, FeatureMessage, SchemaError, dead_letter_payload,
                                     decode_features)
from fusewatch.stream.transport import Record, TopicPartition, Transport, TransportError

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.serving.alerts import AlertTracker, ClipScore
from fusewatch.engines.serving.runtime import ServingModel

log = logging.getLogger("fusewatch.engine")


@dataclass
class EngineStats:
    records: int = 0
    scored: int = 0
    dead_letters: int = 0
    alerts: int = 0
    batches: int = 0
    rebuilt_records: int = 0
    commit_failures: int = 0
    dead_letter_reasons: dict = field(default_factory=dict)
    score_seconds: float = 0.0
    backend: str = ""
    """Backend that scores (``onnxruntime`` | ``tensorrt`` | ``torch``)."""
    backend_requested: str = ""
    """Backend asked for (``auto`` …)."""
    backend_fallback: str = ""
    """Why ``auto`` did not get TensorRT (empty: no fallback)."""


@dataclass
class _Camera:
    graphs: object
    """CameraGraphState (graphs-in models) or FeatureWindow (features-in models)."""
    tracker: AlertTracker
    exact: bool = False
    """True once this camera's window holds the same clips an uninterrupted engine would hold."""
    seen: int = 0
    last_clip: int = -1


def effective_alerts(cfg: Config, meta: ModelMeta):
    """``cfg.alerts`` with on/off replaced by the model's calibrated thresholds when
    ``alerts.thresholds == "model"`` and the model carries ``alert_thresholds``."""
    a = copy.copy(cfg.alerts)
    th = meta.alert_thresholds
    if a.thresholds == "model" and isinstance(th, Mapping) and "on" in th and "off" in th:
        a.on, a.off = float(th["on"]), float(th["off"])
    return a


class ScoreSink:
    """Optional observer of every clip score (the demo's HTML report, streamed evaluation)."""

    def on_score(self, camera: str, msg: FeatureMessage, score: float) -> None:  # pragma: no cover
        pass

    def on_alert(self, alert) -> None:  # pragma: no cover
        pass


class EngineService:
    """Consume features, score with ``model`` (:class:`~fusewatch.engines.serving.runtime.ServingModel`), publish alerts.

    ``delay_s``: artificial per-batch delay (fault tests: a slow engine)."""

    def __init__(self, cfg: Config, model: ServingModel, transport: Transport,
                 sink: ScoreSink | None = None, delay_s: float = 0.0):
        self.cfg = cfg
        self.model = model
        self.meta = meta = model.meta
        self.t = transport
        self.sink = sink
        self.delay_s = delay_s
        self.names: list[str] = list(meta.representations)
        self.dims: dict[str, int] = dict(meta.dims)
        self.window: int = meta.window
        self.versions: dict[str, str] = {k: str(v) for k, v in (meta.extractor_versions or {}).items() if v}
        """Extractor version per representation of the training features (empty: not checked)."""
        self.cams: dict[str, _Camera] = {}
        self.stats = EngineStats()
        self._stop = threading.Event()
        self._pending_rebuild: set[TopicPartition] = set()
        self.last_progress = time.monotonic()
        """Monotonic time at which the last step completed (liveness watchdog)."""
        self._uncommitted: dict[TopicPartition, int] = {}
        """Offsets whose alerts are flushed but whose commit failed (broker down): retried next step."""
        self.backend_name = model.scorer.backend
        self.stats.backend = self.backend_name
        self.stats.backend_requested = getattr(model.scorer, "requested_backend", "") or self.backend_name
        self.stats.backend_fallback = getattr(model.scorer, "fallback_reason", "")
        self.alerts_cfg = effective_alerts(cfg, meta)
        from fusewatch.engines.serving.site import camera_thresholds
        self.camera_thresholds = camera_thresholds(cfg)
        """Per-camera on/off from ``alerts.camera_thresholds_file`` (``fusewatch calibrate``)."""

    # -- state ----------------------------------------------------------------------------------
    def _camera(self, cam: str) -> _Camera:
        c = self.cams.get(cam)
        if c is None:
            a = self.alerts_cfg
            if cam in self.camera_thresholds:
                a = copy.copy(a)
                a.on, a.off = self.camera_thresholds[cam]
            c = _Camera(self.model.new_state(),
                        AlertTracker(cam, a, self.meta.get("name", "lego"),
                                     self.meta.get("model_version", ""), self.backend_name))
            self.cams[cam] = c
        return c

    def _validate_dims(self, msg: FeatureMessage) -> dict[str, np.ndarray]:
        feats = {}
        for r in msg.reps:
            want = self.versions.get(r.name)
            if want and r.version and r.version != want:
                raise SchemaError("extractor_mismatch",
                                  f"{r.name}: features from extractor {r.version}, the model was trained "
                                  f"on {want} (same settings on workers and training, or retrain)")
        for name in self.names:
            a = msg.rep(name)
            if a is None:
                continue
            a = a.reshape(-1)
            if a.shape[0] != self.dims[name]:
                raise SchemaError("dim_mismatch", f"{name}: got {a.shape[0]} values, model expects {self.dims[name]}")
            feats[name] = a.astype(np.float32, copy=False)
        if not feats:
            raise SchemaError("no_known_representation",
                              f"message has {[r.name for r in msg.reps]}, model needs any of {self.names}")
        return feats

    def _dead_letter(self, rec: Record, err: SchemaError) -> None:
        self.stats.dead_letters += 1
        if err.reason not in self.stats.dead_letter_reasons:  # first of its kind: say why, once
            log.warning("dead-lettering %s[%d]@%d: %s: %s (further messages with this reason are "
                        "counted, not logged)", rec.topic, rec.partition, rec.offset, err.reason, err.detail)
        self.stats.dead_letter_reasons[err.reason] = self.stats.dead_letter_reasons.get(err.reason, 0) + 1
        self.t.produce(self.cfg.topics.dead_letter, rec.key,
                       dead_letter_payload(rec.value, err.reason, err.detail, rec.topic, rec.partition,
                                           rec.offset, rec.key),
                       headers=[("reason", err.reason.encode())])

    # -- rebalance ------------------------------------------------------------------------------
    def on_assign(self, tps: set[TopicPartition]) -> None:
        self._pending_rebuild |= set(tps)

    def on_revoke(self, tps: set[TopicPartition]) -> None:
        # bookkeeping only (the transport may run this on its I/O thread): offsets whose commit
        # failed are dropped; the partition's next owner re-processes them → the same alert ids
        self._pending_rebuild -= set(tps)
        for tp in tps:
            self._uncommitted.pop(tp, None)

    def _commit(self) -> None:
        """Commit processed offsets; on a transport failure keep them and retry with the next step
        (at-least-once: a restart in between re-processes them and yields the same alert ids)."""
        if not self._uncommitted:
            return
        try:
            self.t.commit(dict(self._uncommitted))
            self._uncommitted.clear()
        except TransportError as e:
            self.stats.commit_failures += 1
            log.warning("commit failed, will retry: %s", e)

    def _rebuild(self, tp: TopicPartition) -> None:
        """Re-read enough history before the committed offset to restore this partition's cameras."""
        committed = self.t.committed(tp)
        begin = self.t.beginning_offset(tp)
        if committed is None or committed <= begin:
            self.t.seek(tp, begin if committed is None else committed)
            return
        need = self.window + self.cfg.engine.rebuild_history
        span = need * 4
        while True:
            start = max(begin, committed - span)
            recs = self._read_range(tp, start, committed)
            counts: dict[str, int] = {}
            for r in recs:
                k = (r.key or b"").decode(errors="replace")
                counts[k] = counts.get(k, 0) + 1
            if start == begin or not counts or min(counts.values()) >= need or span > 10_000_000:
                break
            span *= 2
        # drop cameras of this partition (their state is rebuilt from the log)
        for r in recs:
            self.cams.pop((r.key or b"").decode(errors="replace"), None)
        self._process(recs, live=False, first_clip_exact=(start == begin))
        self.stats.rebuilt_records += len(recs)
        self.t.seek(tp, committed)
        log.info("rebuilt %s[%d] from %d records before offset %d", tp[0], tp[1], len(recs), committed)

    def _read_range(self, tp: TopicPartition, start: int, stop: int) -> list[Record]:
        """Read [start, stop) of one partition (other partitions are paused by seeking back)."""
        others = {o: self.t.position(o) for o in self.t.assignment() if o != tp}
        self.t.seek(tp, start)
        out: list[Record] = []
        deadline = time.monotonic() + 60
        while (not out or out[-1].offset < stop - 1) and time.monotonic() < deadline:
            for r in self.t.poll(max_records=1000, timeout=0.5):
                if r.tp == tp and start <= r.offset < stop:
                    out.append(r)
                elif r.tp != tp:
                    others[r.tp] = min(others.get(r.tp, r.offset), r.offset)
        for o, pos in others.items():
            self.t.seek(o, pos)
        return out

    # -- main loop ------------------------------------------------------------------------------
    def _process(self, recs: list[Record], live: bool = True, first_clip_exact: bool = False) -> None:
        snaps, items = [], []
        for rec in recs:
            try:
                msg = decode_features(rec.value, self.cfg.max_message_bytes)
                feats = self._validate_dims(msg)
            except SchemaError as e:
                if live:
                    self._dead_letter(rec, e)
                continue
            cam = self._camera(msg.camera)
            if msg.clip <= cam.last_clip:
                continue  # duplicate delivery of a clip already in this camera's state
            if cam.seen == 0:
                cam.exact = live or first_clip_exact or msg.clip == 0
            cam.seen += 1
            cam.last_clip = msg.clip
            cam.graphs.push(feats)
            if not cam.exact and cam.graphs.count >= self.window:
                cam.exact = True
            snaps.append(cam.graphs.window())  # (R, mask, present[, U]) or a features window
            items.append((rec, msg, cam))
        if not snaps:
            return
        t0 = time.perf_counter()
        scores = np.empty(len(snaps), np.float32)
        bs = self.cfg.engine.max_batch
        for i in range(0, len(snaps), bs):
            scores[i:i + bs] = self.model.score(snaps[i:i + bs])
        self.stats.score_seconds += time.perf_counter() - t0
        self.stats.batches += 1
        for (rec, msg, cam), s in zip(items, scores):
            if not cam.exact:
                continue
            cs = ClipScore(msg.clip, float(s), msg.pts_start, msg.pts_end, msg.wall_start, msg.wall_end,
                           Evidence(rec.topic, rec.partition, rec.offset),
                           epoch=int(getattr(msg, "epoch", 0) or 0))  # the stream epoch, once features carry one
            alerts = cam.tracker.step(cs)
            if not live:
                continue
            self.stats.scored += 1
            if self.sink:
                self.sink.on_score(msg.camera, msg, float(s))
            if self.cfg.engine.publish_scores:  # compact per-clip record for dashboards (stream/live.py)
                self.t.produce(self.cfg.topics.scores, msg.camera,
                               encode_score(msg.camera, msg.clip, msg.wall_end, float(s), self.meta.get("model_version", ""),
                                            msg.frame_start, msg.frame_end))
            for a in alerts:
                a.produced = time.time()
                self.t.produce(self.cfg.topics.alerts, msg.camera, a.encode(), headers=list(ALERT_HEADERS))
                self.stats.alerts += 1
                if self.sink:
                    self.sink.on_alert(a)

    def step(self, timeout: float | None = None) -> int:
        """One poll → score → produce → flush → commit cycle. Returns records consumed."""
        for tp in sorted(self._pending_rebuild):
            if tp in self.t.assignment():
                self._rebuild(tp)
        self._pending_rebuild.clear()
        wait = self.cfg.engine.max_wait_ms / 1000 if timeout is None else timeout
        recs = self.t.poll(max_records=self.cfg.engine.max_batch, timeout=wait)
        if self._pending_rebuild:  # a rebalance happened inside poll: rebuild first, then re-read
            firsts: dict[TopicPartition, int] = {}
            for r in recs:
                firsts.setdefault(r.tp, r.offset)
            assigned = self.t.assignment()
            for tp, off in firsts.items():
                if tp in assigned:
                    self.t.seek(tp, off)
            return 0
        if not recs:
            self._commit()
            return 0
        self.stats.records += len(recs)
        if self.delay_s:
            time.sleep(self.delay_s)
        self._process(recs, live=True)
        self.t.flush()  # DeliveryError propagates: never commit records whose alerts were not delivered
        for r in recs:
            self._uncommitted[r.tp] = max(self._uncommitted.get(r.tp, 0), r.offset + 1)
        self._commit()
        return len(recs)

    def start(self) -> None:
        self.t.subscribe([self.cfg.topics.features], self.cfg.engine.group_id,
                         on_assign=self.on_assign, on_revoke=self.on_revoke, from_beginning=True,
                         callbacks_use_transport=False)

    def run(self, idle_exit_s: float | None = None, max_records: int | None = None) -> EngineStats:
        """Run until :meth:`stop` (or ``idle_exit_s`` without records / ``max_records`` consumed)."""
        self.start()
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                n = self.step()
                now = self.last_progress = time.monotonic()
                if n:
                    last = now
                elif idle_exit_s is not None and now - last > idle_exit_s:
                    break
                if max_records is not None and self.stats.records >= max_records:
                    break
        finally:
            self.t.flush()
        return self.stats

    def stop(self) -> None:
        self._stop.set()
