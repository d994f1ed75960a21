"""Per-record processing of the engine: admission (decode, key / partition / dims / sequence
checks), incremental state update, batched scoring and alert tracking — one record never ends the
engine: it is scored with a finite score, dropped (counted) or dead-lettered with a reason.

A mixin of :class:`~fusewatch.engines.serving.service.EngineService` (uses its ``cfg``, ``t``,
``model``, ``store``, ``stats``, ``metrics``, ``sink``, ``window``, ``names``, ``dims``, ``versions``).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from fusewatch.engines.serving.alerts import ClipScore
from fusewatch.engines.serving.anomaly_map import scaled_map
from fusewatch.engines.serving.cameras import DROP, RESTART, admit
from fusewatch.engines.serving.site import zone_score
from fusewatch.stream.alert_schema import ALERT_HEADERS
from fusewatch.stream.live import encode_score
from fusewatch.stream.schema import (
    DEAD_LETTER_KEY_BYTES,
    Evidence,
    FeatureMessage,
    SchemaError,
    dead_letter_payload,
    decode_features,
    short_repr,
)
from fusewatch.stream.transport import Record, TransportError
from fusewatch.stream.transport.base import RecordTooLargeError

log = logging.getLogger("fusewatch.engine")


class RecordProcessing:
    """Mixin: :meth:`_process` a batch of feature records (live, or silently while rebuilding)."""

    def _count(self, kind: str, reason: str, n: int = 1) -> None:
        """Count ``n`` events of ``kind`` (dropped | restarts | cold_starts | evictions) by reason."""
        d = getattr(self.stats, kind)
        d[reason] = d.get(reason, 0) + n
        getattr(self.metrics, kind).labels(reason).inc(n)

    def _validate_dims(self, msg: FeatureMessage) -> dict[str, np.ndarray]:
        feats = {}
        for r in msg.reps:
            want = self.versions.get(r.name)
            if want and r.version and r.version != want:
                raise SchemaError(
                    "extractor_mismatch",
                    f"{r.name}: features from extractor {r.version}, the model was trained "
                    f"on {want} (same settings on workers and training, or retrain)",
                )
        for name in self.names:
            a = msg.rep(name)
            if a is None:
                continue
            a = a.reshape(-1)
            if a.shape[0] != self.dims[name]:
                raise SchemaError("dim_mismatch", f"{name}: got {a.shape[0]} values, model expects {self.dims[name]}")
            with np.errstate(over="ignore"):
                a = a.astype(np.float32, copy=False)
            if not np.isfinite(a).all():
                raise SchemaError(
                    "non_finite_after_cast",
                    f"{name}: values beyond float32's range "
                    f"(max |x| {np.abs(msg.rep(name)).max():.3g}) in the model's dtype float32",
                )
            feats[name] = a
        if not feats:
            raise SchemaError(
                "no_known_representation", f"message has {[r.name for r in msg.reps]}, model needs any of {self.names}"
            )
        self.rollout.observe(msg)
        return feats

    def _dead_letter(self, rec: Record, err: SchemaError, exc: BaseException | None = None) -> None:
        """Publish ``rec`` with its reason to the dead-letter topic. The dead letter keeps at most
        :data:`DEAD_LETTER_KEY_BYTES` of the key (also as its record key) and 64 KiB of the payload;
        should a size limit still refuse it, it goes again without the payload, so a hostile record
        can never make its own dead-lettering fail (and with it the engine, on every retry)."""
        self.stats.dead_letters += 1
        if err.reason not in self.stats.dead_letter_reasons:  # first of its kind: say why, once
            log.warning(
                "dead-lettering %s[%d]@%d: %s: %s (further messages with this reason are counted, not logged)",
                rec.topic,
                rec.partition,
                rec.offset,
                err.reason,
                err.detail[:500],
                exc_info=exc,
            )
        self.stats.dead_letter_reasons[err.reason] = self.stats.dead_letter_reasons.get(err.reason, 0) + 1
        self.metrics.dead_letters.labels(err.reason).inc()
        key = None if rec.key is None else bytes(rec.key)[:DEAD_LETTER_KEY_BYTES]
        headers = [("reason", err.reason.encode())]
        args = (err.reason, err.detail, rec.topic, rec.partition, rec.offset, rec.key)
        try:
            self.t.produce(self.cfg.topics.dead_letter, key, dead_letter_payload(rec.value, *args), headers=headers)
        except RecordTooLargeError as e:
            log.warning("dead letter of %s[%d]@%d too large (%s): sent without its payload", *rec.tp, rec.offset, e)
            self.t.produce(
                self.cfg.topics.dead_letter, key, dead_letter_payload(rec.value, *args, keep_bytes=0), headers=headers
            )

    def _partitions(self, topic: str) -> int:
        n = self._nparts.get(topic)
        if n is None:
            n = self._nparts[topic] = self.t.partition_count(topic)
        return n

    def _admit(self, rec: Record, live: bool, first_clip_exact: bool, items: list) -> None:
        """Decode, validate and push one record into its camera's state; appends
        ``("score", rec, msg, cam, tracker, snapshot, late)`` (and ``("close", cam, tracker)`` for
        trackers ended on the way) to ``items``. Raises SchemaError for a rejected record."""
        msg = decode_features(rec.value, self.cfg.max_message_bytes)
        feats = self._validate_dims(msg)  # what the message says first, then where it came from
        try:
            key = None if rec.key is None else bytes(rec.key).decode("utf-8")
        except UnicodeDecodeError:
            key = None
        if key != msg.camera:
            raise SchemaError(
                "key_mismatch", f"record key {short_repr(rec.key)} != camera {msg.camera!r} (the key is the camera)"
            )
        if self.cfg.engine.check_partition:
            n = self._partitions(rec.topic)
            want = self.t.partition_of(rec.key, n) if n else None
            if want is not None and want != rec.partition:
                if (
                    live
                    and msg.camera not in self._wrong_partition_logged
                    and len(self._wrong_partition_logged) < 10000
                ):
                    self._wrong_partition_logged.add(msg.camera)
                    log.warning(
                        "camera %r: record on partition %d, its key hashes to %d of %d (a producer with "
                        "another partitioner, e.g. kcat's default); use murmur2 (Java / kafka-python)",
                        msg.camera,
                        rec.partition,
                        want,
                        n,
                    )
                raise SchemaError(
                    "wrong_partition",
                    f"camera {msg.camera!r} on partition {rec.partition}, murmur2 gives {want} of {n}",
                )
        cam, cold = self.store.get(msg.camera)
        cam.tp = rec.tp
        action, why = admit(cam, msg, self.cfg.engine)
        if action == DROP:
            if live:
                self._count("dropped", why)
            return
        if action == RESTART:
            self._count("restarts", why)
            self._closing.append((msg.camera, cam.tracker))
            cam.graphs, cam.tracker, cam.seen = self.model.new_state(), self._tracker(msg.camera), 0
            cam.model, cam.shadow, cam.shadow_model = self.model, None, None
            cam.exact = True  # a new stream: an uninterrupted engine restarts it the same way
        items.extend(("close",) + c for c in self._closing)
        self._closing.clear()
        if cam.seen == 0 and action != RESTART:
            if cold:
                self._count("cold_starts", cold)
            elif live and msg.clip != 0:
                self._count("cold_starts", "unknown_history")
            cam.exact = msg.clip == 0 or (live and not cold) or first_clip_exact
        try:
            cam.graphs.push(feats)
        except ValueError as e:
            raise SchemaError("invalid_features", str(e)[:300]) from None
        cam.accept(msg)
        cam.seen += 1
        if not cam.exact and cam.graphs.count >= cam.model.window:
            cam.exact = True
        self.rollout.advance(msg.camera, cam, feats, items)  # live model rollout: switch at this boundary?
        late = live and self.cfg.engine.late_after_s > 0 and time.time() - msg.wall_end > self.cfg.engine.late_after_s
        where = cam.model.mapper.relative(feats) if cam.model.mapper is not None else None
        gate = cam.model.motion_factor(feats)  # the model's local-motion prior (1 without one)
        items.append(("score", rec, msg, cam, cam.tracker, cam.graphs.window(), late, cam.model, where, gate))

    def _score(self, snaps: list, models: list | None = None) -> np.ndarray:
        """Scores of window snapshots (B,), float32, each with its camera's model (``models``;
        default the engine's); inf for a snapshot whose scoring raised."""
        if models is None:
            return self._score_with(self.model, snaps)
        out = np.full(len(snaps), np.nan, np.float32)
        groups: dict[int, tuple] = {}
        for i, m in enumerate(models):
            groups.setdefault(id(m), (m, []))[1].append(i)
        for m, idx in groups.values():
            out[idx] = self._score_with(m, [snaps[i] for i in idx])
        return out

    def _score_with(self, model, snaps: list) -> np.ndarray:
        out = np.full(len(snaps), np.nan, np.float32)
        bs = self.cfg.engine.max_batch
        for i in range(0, len(snaps), bs):
            try:
                out[i : i + bs] = model.score(snaps[i : i + bs])
            except Exception as e:  # noqa: BLE001 - score one by one; failures become internal_error
                log.debug("batch scoring failed (%s), scoring one by one", e)
                for k in range(i, min(i + bs, len(snaps))):
                    try:
                        out[k] = model.score(snaps[k : k + 1])[0]
                    except Exception:  # noqa: BLE001
                        out[k] = np.inf
        return out

    def _emit(self, camera: str, alerts: list) -> None:
        for a in alerts:
            a.produced = time.time()
            self.t.produce(self.cfg.topics.alerts, camera, a.encode(), headers=list(ALERT_HEADERS))
            self.stats.alerts += 1
            self.metrics.alerts.inc()
            if self.sink:
                self.sink.on_alert(a)

    def _process(self, recs: list[Record], live: bool = True, first_clip_exact: bool = False) -> None:
        items: list = []
        self._live = live
        for rec in recs:
            try:
                self._admit(rec, live, first_clip_exact, items)
            except TransportError:
                raise
            except SchemaError as e:
                if live:
                    self._dead_letter(rec, e)
            except Exception as e:  # noqa: BLE001 - one record never ends the engine
                if live:
                    self._dead_letter(rec, SchemaError("internal_error", f"{type(e).__name__}: {e}"[:300]), exc=e)
        items.extend(("close",) + c for c in self._closing)
        self._closing.clear()
        scored = [it for it in items if it[0] == "score" and it[3].exact]
        t0 = time.perf_counter()
        scores = self._score([it[5] for it in scored], [it[7] for it in scored]) if scored else np.empty(0, np.float32)
        self.stats.score_seconds += time.perf_counter() - t0
        self.stats.batches += bool(scored)
        score_of = {id(it): float(s) for it, s in zip(scored, scores)}
        for it in items:
            if it[0] == "close":
                alerts = it[2].close()
                if live and alerts:
                    self._emit(it[1], alerts)
                continue
            _, rec, msg, cam, tracker, _, late = it[:7]
            if id(it) not in score_of:
                if live:
                    self.stats.warmup += 1  # absorbed into a cold camera's window, not yet scored
                continue
            s = score_of[id(it)]
            if not math.isfinite(s):
                if live:
                    self._dead_letter(
                        rec,
                        SchemaError(
                            "non_finite_score" if math.isnan(s) else "internal_error",
                            f"camera {msg.camera!r} clip {msg.clip}: model gave {s}",
                        ),
                    )
                continue
            s *= it[9]
            amap = scaled_map(it[8], s)
            polys = self.zones.for_camera(msg.camera)
            if polys:
                s = zone_score(s, amap, polys)  # only what happens inside the camera's zones alerts
            cs = ClipScore(
                msg.clip,
                s,
                msg.pts_start,
                msg.pts_end,
                msg.wall_start,
                msg.wall_end,
                Evidence(rec.topic, rec.partition, rec.offset),
                epoch=msg.epoch,
                late=late,
                anomaly_map=amap,
            )
            try:
                alerts = tracker.step(cs)
            except Exception as e:  # noqa: BLE001
                if live:
                    self._dead_letter(
                        rec, SchemaError("internal_error", f"alert tracker: {type(e).__name__}: {e}"[:300]), exc=e
                    )
                continue
            if not live:
                continue
            self.stats.scored += 1
            self.metrics.scored.inc()
            if late:
                self.stats.late_clips += 1
                self.metrics.late.inc()
            if self.cfg.engine.publish_scores:  # compact per-clip record for dashboards (stream/live.py)
                self.t.produce(
                    self.cfg.topics.scores,
                    msg.camera,
                    encode_score(
                        msg.camera,
                        msg.clip,
                        msg.wall_end,
                        s,
                        it[7].meta.model_version,
                        msg.frame_start,
                        msg.frame_end,
                        amap,
                    ),
                )
            self._emit(msg.camera, alerts)
            if self.sink:
                self.scored_by = it[7].meta.model_version  # what a sink may read during on_score
                self.sink.on_score(msg.camera, msg, s)
        self._live = True
