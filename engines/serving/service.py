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
one), so a restarted or rebalanced engine scores like an uninterrupted one; the read-back is
bounded in records and time (:mod:`~fusewatch.engines.serving.rebuild`).

Hostile and unlucky input never ends the engine: every record is scored with a finite score,
dropped (counted: ``duplicate_clip``) or dead-lettered with a stable reason (schema violations,
``key_mismatch``, ``wrong_partition``, ``non_finite_after_cast``, ``invalid_features``, per-camera
sequence checks of :mod:`~fusewatch.engines.serving.cameras`, ``non_finite_score``, and
``internal_error`` for any other exception while processing it). Transport errors still propagate
(never commit what was not delivered).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Mapping

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.serving.alerts import AlertTracker
from fusewatch.engines.serving.cameras import Camera, CameraStore
from fusewatch.engines.serving.health import EngineMetrics, HealthServer, healthy_since
from fusewatch.engines.serving.processing import RecordProcessing
from fusewatch.engines.serving.rebuild import read_range, rebuild_partition
from fusewatch.engines.serving.rollout import Rollout
from fusewatch.engines.serving.runtime import ServingModel
from fusewatch.stream.config import Config
from fusewatch.stream.schema import FeatureMessage
from fusewatch.stream.transport import Record, TopicPartition, Transport, TransportError

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
    dropped: dict = field(default_factory=dict)
    """Records dropped without a dead letter, by reason (``duplicate_clip``)."""
    restarts: dict = field(default_factory=dict)
    """Camera streams restarted, by reason (``new_epoch``, ``legacy_restart``, ``resync``)."""
    cold_starts: dict = field(default_factory=dict)
    """Cameras starting without history, by reason (``evicted_lru``, ``evicted_idle``,
    ``unknown_history``, ``rebuild_partial``)."""
    evictions: dict = field(default_factory=dict)
    late_clips: int = 0
    warmup: int = 0
    """Live clips pushed into a camera starting cold (window not yet full), not scored."""
    rebuild_seconds: float = 0.0
    rebuilds: int = 0
    """Partition state rebuilds (one per assignment of a partition with committed history)."""
    rebuild_max_records: int = 0
    """Most records one rebuild read."""
    model_version: str = ""
    """Version of the model new cameras get (the rollout target)."""
    model_loads: int = 0
    """Models staged by a live rollout."""
    model_switches: int = 0
    """Cameras switched to a staged model at a clip boundary."""
    model_load_failures: dict = field(default_factory=dict)
    """Rollouts refused (the old model kept), by reason."""


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
        """One clip score; during the call ``EngineService.scored_by`` is the version of the model
        that produced it (during a rollout a camera's model can change within one batch)."""
        pass

    def on_alert(self, alert) -> None:  # pragma: no cover
        pass


class EngineService(RecordProcessing):
    """Consume features, score with ``model`` (:class:`~fusewatch.engines.serving.runtime.ServingModel`), publish alerts.

    ``delay_s``: artificial per-batch delay (fault tests: a slow engine). ``watcher``: a
    :class:`~fusewatch.engines.serving.manifest.ModelWatcher` (live model rollout; started and
    stopped by :meth:`run`); :meth:`stage_model` stages a model directly."""

    def __init__(
        self,
        cfg: Config,
        model: ServingModel,
        transport: Transport,
        sink: ScoreSink | None = None,
        delay_s: float = 0.0,
        watcher=None,
    ):
        self.cfg = cfg
        self.model = model
        self.meta = meta = model.meta
        self.scored_by = meta.model_version
        """Model version of the score being reported to the sink (see :meth:`ScoreSink.on_score`)."""
        self.t = transport
        self.sink = sink
        self.delay_s = delay_s
        self.names: list[str] = list(meta.representations)
        self.dims: dict[str, int] = dict(meta.dims)
        self.window: int = meta.window
        self.versions: dict[str, str] = {k: str(v) for k, v in (meta.extractor_versions or {}).items() if v}
        """Extractor version per representation of the training features (empty: not checked)."""
        self.stats = EngineStats()
        self.store = CameraStore(cfg.engine, self._new_camera, self._on_evict)
        self.metrics = EngineMetrics(model.scorer.backend, f"{meta.extra.get('name', 'lego')} {meta.model_version}")
        self.http: HealthServer | None = None
        self.ready = False
        """True once partitions are assigned and their state rebuilt (``/readyz``)."""
        self._assigned_once = False
        self._nparts: dict[str, int] = {}
        self._wrong_partition_logged: set[str] = set()
        self._closing: list = []
        """Alert trackers of evicted / restarted cameras to close in order (see :meth:`_process`)."""
        self._live = True
        self._lag_at = 0.0
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
        self.rollout = Rollout(self, watcher)
        self.stats.model_version = meta.model_version
        self.metrics.set_model(meta.model_version)
        from fusewatch.engines.serving.site import SiteZones, camera_thresholds

        self.camera_thresholds = camera_thresholds(cfg)
        """Per-camera on/off from ``alerts.camera_thresholds_file`` (``fusewatch calibrate``)."""
        self.zones = SiteZones(cfg)
        """Allowed alert regions per camera (``[zones]`` + ``alerts.zones_file``), applied to anomaly maps."""

    # -- state ----------------------------------------------------------------------------------
    @property
    def cams(self) -> dict[str, Camera]:
        """Cameras held (least recently used first)."""
        return self.store.cams

    def _tracker(self, cam: str) -> AlertTracker:
        a = self.alerts_cfg
        if cam in self.camera_thresholds:  # fusewatch calibrate: this camera's own on/off
            a = copy.copy(a)
            a.on, a.off = self.camera_thresholds[cam]
        return AlertTracker(cam, a, self.meta.extra.get("name", "lego"), self.meta.model_version, self.backend_name)

    def _new_camera(self, cam: str) -> Camera:
        return Camera(self.model.new_state(), self._tracker(cam), model=self.model)

    def _on_evict(self, cam: str, c: Camera, reason: str) -> None:
        self._count("evictions", reason)
        self._closing.append((cam, c.tracker))

    def alerts_for(self, meta: ModelMeta):
        """Alert settings for a model (:func:`effective_alerts`)."""
        return effective_alerts(self.cfg, meta)

    def stage_model(self, model: ServingModel, manifest=None) -> bool:
        """Live rollout: ``model`` (loaded, warmed) becomes the target; held cameras switch at a clip
        boundary once its window is warm (:mod:`~fusewatch.engines.serving.rollout`). False when
        it cannot score the features on the topic (counted, the current model kept)."""
        return self.rollout.stage(model, manifest)

    # -- rebalance ------------------------------------------------------------------------------
    def on_assign(self, tps: set[TopicPartition]) -> None:
        self._pending_rebuild |= set(tps)
        self._assigned_once = True
        self._nparts.clear()

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
        """Re-read enough history before the committed offset to restore this partition's cameras
        (bounded in records and time: :func:`~fusewatch.engines.serving.rebuild.rebuild_partition`)."""
        rebuild_partition(self, tp)

    def _read_range(self, tp: TopicPartition, start: int, stop: int) -> list[Record]:
        """Read [start, stop) of one partition (other partitions are paused by seeking back)."""
        return read_range(self.t, tp, start, stop, time.monotonic() + 60)[0]

    # -- main loop ------------------------------------------------------------------------------
    def step(self, timeout: float | None = None) -> int:
        """One poll → score → produce → flush → commit cycle. Returns records consumed."""
        self.rollout.poll()  # a model loaded in the background is staged between two steps
        for tp in sorted(self._pending_rebuild):
            if tp in self.t.assignment():
                self._rebuild(tp)
        self._pending_rebuild.clear()
        self.ready = self._assigned_once
        self.store.sweep()
        if self._closing:  # idle evictions: end their open alerts
            self._process([], live=True)
        self.metrics.cameras.set(len(self.store))
        self._update_lag()
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
        self.metrics.records.inc(len(recs))
        if self.delay_s:
            time.sleep(self.delay_s)
        self._process(recs, live=True)
        self.t.flush()  # DeliveryError propagates: never commit records whose alerts were not delivered
        for r in recs:
            self._uncommitted[r.tp] = max(self._uncommitted.get(r.tp, 0), r.offset + 1)
        self._commit()
        self.rollout.check()
        return len(recs)

    def _update_lag(self, every_s: float = 5.0) -> None:
        now = time.monotonic()
        if now - self._lag_at < every_s:
            return
        self._lag_at = now
        try:
            for tp in self.t.assignment():
                self.metrics.lag.labels(f"{tp[0]}[{tp[1]}]").set(max(0, self.t.end_offset(tp) - self.t.position(tp)))
        except TransportError as e:  # metrics only: the next poll surfaces a real failure
            log.debug("lag: %s", e)

    def serve_http(self, port: int | None = None, addr: str = "0.0.0.0") -> int:
        """Start ``/metrics``, ``/healthz``, ``/readyz`` (``port`` default ``engine.metrics_port``; 0 →
        any free port); returns the bound port."""
        if self.http is None:
            limit = self.cfg.engine.stall_timeout or 60.0
            self.http = HealthServer(
                self.metrics,
                lambda: healthy_since(self.last_progress, limit),
                lambda: self.ready,
                self.cfg.engine.metrics_port if port is None else port,
                addr,
            )
        return self.http.port

    def start(self) -> None:
        if self.cfg.engine.metrics_port and self.http is None:
            self.serve_http()
        w = self.rollout.watcher
        if w is not None and w._thread is None:
            w.start()
        self.t.subscribe(
            [self.cfg.topics.features],
            self.cfg.engine.group_id,
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            from_beginning=True,
            callbacks_use_transport=False,
        )

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
            if self.rollout.watcher is not None:
                self.rollout.watcher.stop()
            self.t.flush()
            if self.http is not None:
                self.http.close()
                self.http = None
        return self.stats

    def stop(self) -> None:
        self._stop.set()
