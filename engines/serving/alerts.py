"""Per-camera alert state machine: hysteresis, minimum duration, cool-down, rate-limited updates.

Driven only by clip indices, scores and capture times (``pts`` seconds of the stream), never by
the wall clock of the engine, so a replayed or re-processed stream yields the same alerts, and
alert ids are deterministic: ``alert_id(camera, start_clip, model_version)``.

States: ``idle`` → (score ≥ on) ``pending`` → (above ``on`` for ≥ ``min_duration`` s) ``open``
[emit *new*] → (every ≥ ``update_interval`` s while open) [emit *update*] → (score < off)
[emit *end*] → ``cooldown`` for ``cooldown`` s → ``idle``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.config import AlertsConfig
from fusewatch.stream.schema import Evidence


def alert_id(camera: str, start_clip: int, model_version: str, epoch: int = 0) -> str:
    """Stable id: same camera, stream epoch, start clip and model version → same id (consumers
    deduplicate). Epoch 0 (producers without epochs) keeps the original ``sha1(camera, start_clip,
    model)``; a restarted worker (new epoch) numbering clips from 0 again gets new ids."""
    key = f"{camera}\x00{start_clip}\x00{model_version}" + (f"\x00{epoch}" if epoch else "")
    return hashlib.sha1(key.encode()).hexdigest()[:20]


@dataclass
class ClipScore:
    """One scored clip. ``pts_*`` in stream seconds, ``wall_*`` Unix seconds."""

    clip: int
    score: float
    pts_start: float
    pts_end: float
    wall_start: float
    wall_end: float
    evidence: Evidence
    epoch: int = 0
    """Run epoch of the camera stream (part of the alert id when non-zero; carried into the record)."""
    late: bool = False
    """Scored after ``engine.late_after_s``: alerts it causes are flagged ``late``."""
    anomaly_map: list | None = None
    """Rows × columns of region scores in [0, 1] (:mod:`.anomaly_map`), or None (no location)."""


@dataclass
class _Open:
    id: str
    start: ClipScore
    peak: float
    last_emit_pts: float
    first_evidence: Evidence
    peak_map: list | None = None
    """The anomaly map of the peak clip (what the alert record carries)."""


@dataclass
class AlertTracker:
    """Alert state of one camera. :meth:`step` returns the alert messages a clip causes (0 or 1)."""

    camera: str
    cfg: AlertsConfig
    model_name: str
    model_version: str
    backend: str
    pending: ClipScore | None = None
    open: _Open | None = None
    cooldown_until: float = float("-inf")
    history: list = field(default_factory=list)
    last: ClipScore | None = None
    """The last clip stepped (the end of an alert closed by :meth:`close`)."""

    @property
    def state(self) -> str:
        if self.open:
            return "open"
        if self.pending:
            return "pending"
        return "idle"

    def _msg(self, typ: str, cur: ClipScore) -> AlertMessage:
        o = self.open
        assert o is not None
        return AlertMessage(
            id=o.id,
            type=typ,
            camera=self.camera,
            score=float(cur.score),
            peak=float(o.peak),
            start_clip=o.start.clip,
            end_clip=cur.clip,
            start_time=o.start.wall_start,
            end_time=cur.wall_end,
            model_name=self.model_name,
            model_version=self.model_version,
            backend=self.backend,
            evidence=[o.first_evidence, cur.evidence] if cur.evidence != o.first_evidence else [cur.evidence],
            produced=cur.wall_end,
            epoch=o.start.epoch,
            late=cur.late,
            anomaly_map=o.peak_map,
        )

    def close(self) -> list[AlertMessage]:
        """The stream ended (a new epoch, eviction): end an open alert at the last clip seen and go
        back to idle. Returns the ``end`` message (0 or 1)."""
        out = [self._msg("end", self.last)] if self.open is not None and self.last is not None else []
        self.open = self.pending = None
        return out

    def step(self, c: ClipScore) -> list[AlertMessage]:
        """Advance by one scored clip. Raises ValueError (state unchanged) for a non-finite score
        or time: the caller must reject such clips before they get here."""
        if not (
            math.isfinite(c.score)
            and math.isfinite(c.pts_start)
            and math.isfinite(c.pts_end)
            and math.isfinite(c.wall_start)
            and math.isfinite(c.wall_end)
        ):
            raise ValueError(f"alert tracker {self.camera}: non-finite score or time in clip {c.clip}")
        self.last = c
        cfg = self.cfg
        if self.open is not None:
            if c.score > self.open.peak:
                self.open.peak, self.open.peak_map = c.score, c.anomaly_map
            if c.score < cfg.off:
                msg = self._msg("end", c)
                self.open = None
                self.cooldown_until = c.pts_end + cfg.cooldown
                return [msg]
            if c.pts_end - self.open.last_emit_pts >= cfg.update_interval:
                self.open.last_emit_pts = c.pts_end
                return [self._msg("update", c)]
            return []
        if c.score < cfg.on or c.pts_start < self.cooldown_until:
            self.pending = None
            return []
        if self.pending is None:
            self.pending = c
        if c.pts_end - self.pending.pts_start + 1e-9 >= cfg.min_duration:
            start = self.pending
            self.pending = None
            self.open = _Open(
                id=alert_id(self.camera, start.clip, self.model_version, start.epoch),
                start=start,
                peak=c.score,
                last_emit_pts=c.pts_end,
                first_evidence=start.evidence,
                peak_map=c.anomaly_map,
            )
            return [self._msg("new", c)]
        return []
