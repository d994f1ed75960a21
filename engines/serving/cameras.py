"""Per-camera engine state held in a bounded store, and the per-camera admission of a clip.

:class:`CameraStore` keeps at most ``engine.max_cameras`` cameras (cameras on probation, with fewer
than :data:`ESTABLISHED_CLIPS` clips, evicted first, then the least recently used) and evicts cameras idle for ``engine.camera_idle_s``; a camera that comes back starts cold
(its window refills before alerts resume; counted by reason).

:func:`admit` decides, for one decoded clip of a held camera, whether it continues the camera's
stream, restarts it, is a duplicate to drop, or is rejected (:class:`SchemaError` with a stable
reason, dead-lettered by the caller). A camera's stream is identified by ``(camera, epoch)``: a new
epoch (worker restart) restarts the camera's graphs and alert state; inside one epoch clip indices
must increase by 1..``max_clip_step``, capture times may not jump by more than
``max_time_jump`` s nor go backwards (a clip's end may not precede its predecessor's end). ``resync_after`` consecutive rejected clips that are in order among
themselves restart the camera from them, so one absurd clip never blinds a camera for good.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from fusewatch.engines.serving.alerts import AlertTracker
from fusewatch.stream.config import EngineConfig
from fusewatch.stream.schema import FeatureMessage, SchemaError

ACCEPT, RESTART, DROP = "accept", "restart", "drop"


@dataclass
class Camera:
    graphs: object
    """CameraGraphState (graphs-in models) or FeatureWindow (features-in models)."""
    tracker: AlertTracker
    exact: bool = False
    """True once this camera's window holds the same clips an uninterrupted engine would hold."""
    seen: int = 0
    epoch: int = 0
    last_clip: int = -1
    last_pts: float = 0.0
    last_wall: float = 0.0
    touched: float = 0.0
    """Engine monotonic time of the last record (idle eviction)."""
    alt: tuple | None = None
    """(clip, pts_end, wall_end) of the last rejected clip; ``alt_run`` consecutive ones in order."""
    alt_run: int = 0
    model: object = None
    """ServingModel whose state ``graphs`` is (live model rollout: cameras switch one by one)."""
    shadow: object = None
    """State of the engine's new model, warming up beside ``graphs`` during a rollout."""
    shadow_model: object = None
    tp: tuple | None = None
    """(topic, partition) of the camera's last record."""

    def accept(self, msg: FeatureMessage) -> None:
        self.epoch, self.last_clip = msg.epoch, msg.clip
        self.last_pts, self.last_wall = msg.pts_end, msg.wall_end
        self.alt, self.alt_run = None, 0


TIME_SLACK_S = 1.0
"""How far a clip's capture (wall) end may fall behind the previous clip's (clock adjustments on the
worker); its stream (pts) end may not fall behind at all: a later clip ends later."""


def _continues(cfg: EngineConfig, clip: int, pts: float, wall: float, msg: FeatureMessage) -> str | None:
    """None when ``msg`` continues a stream whose last clip was (clip, pts end, wall end), else the reason."""
    if msg.clip == clip:
        return "duplicate_clip"
    if msg.clip < clip:
        return "clip_regression"
    if msg.clip - clip > cfg.max_clip_step:
        return "clip_jump"
    if abs(msg.pts_start - pts) > cfg.max_time_jump or abs(msg.wall_start - wall) > cfg.max_time_jump:
        return "time_jump"
    if msg.pts_end < pts or msg.wall_end < wall - TIME_SLACK_S:
        return "time_regression"
    return None


def admit(cam: Camera, msg: FeatureMessage, cfg: EngineConfig) -> tuple[str, str]:
    """→ ``(ACCEPT, "")``, ``(RESTART, reason)`` (``new_epoch`` | ``legacy_restart`` | ``resync``:
    the caller resets the camera, then accepts), ``(DROP, "duplicate_clip")``; raises
    :class:`SchemaError` (``clip_regression`` | ``clip_jump`` | ``time_jump`` | ``time_regression``
    | ``epoch_regression``) for a rejected clip. Epochs are the workers' start times, so only a
    later epoch restarts the camera at once; a clip of an earlier epoch is rejected (one stray clip
    cannot restart a camera twice) until ``resync_after`` of them in order resync it."""
    if msg.pts_end - msg.pts_start > cfg.max_time_jump or msg.wall_end - msg.wall_start > cfg.max_time_jump:
        raise SchemaError(
            "time_jump",
            f"camera {msg.camera!r} clip {msg.clip} spans more than engine.max_time_jump = {cfg.max_time_jump:g} s",
        )
    if cam.seen == 0:
        return ACCEPT, ""
    if msg.epoch > cam.epoch:
        return RESTART, "new_epoch"
    why = (
        "epoch_regression"
        if msg.epoch < cam.epoch
        else _continues(cfg, cam.last_clip, cam.last_pts, cam.last_wall, msg)
    )
    if why is None:
        return ACCEPT, ""
    if why == "duplicate_clip":
        return DROP, why
    if why == "clip_regression" and msg.epoch == 0 and msg.clip == 0:
        return RESTART, "legacy_restart"  # a worker without epochs restarted: it numbers from 0 again
    if cam.alt is not None and _continues(cfg, *cam.alt, msg) is None:
        cam.alt_run += 1
    else:
        cam.alt_run = 1
    cam.alt = (msg.clip, msg.pts_end, msg.wall_end)
    if cam.alt_run >= cfg.resync_after:
        return RESTART, "resync"
    raise SchemaError(
        why,
        f"camera {msg.camera!r} epoch {msg.epoch}: clip {msg.clip} (pts {msg.pts_start:g}, "
        f"wall {msg.wall_start:.3f}) after clip {cam.last_clip} (pts end {cam.last_pts:g}, "
        f"wall end {cam.last_wall:.3f})",
    )


ESTABLISHED_CLIPS = 8
"""Clips a camera must have had accepted before eviction prefers other cameras (:meth:`CameraStore._victim`)."""


class CameraStore:
    """Cameras by id, least recently used first; bounded by ``max_cameras``, idle ones evicted.

    ``on_evict(camera_id, Camera, reason)`` is called for each eviction (``lru`` | ``idle``)."""

    def __init__(
        self,
        cfg: EngineConfig,
        factory: Callable[[str], Camera],
        on_evict: Callable[[str, Camera, str], None] | None = None,
        remember: int = 65536,
    ):
        self.cfg = cfg
        self.factory = factory
        self.on_evict = on_evict
        self.cams: OrderedDict[str, Camera] = OrderedDict()
        self.evicted: OrderedDict[str, str] = OrderedDict()
        """Recently evicted ids → reason (bounded by ``remember``), to count their cold start."""
        self.remember = remember
        self.probation: OrderedDict[str, None] = OrderedDict()
        """Cameras that may still be on probation (see :meth:`_victim`), oldest admitted first."""

    def __len__(self) -> int:
        return len(self.cams)

    def __contains__(self, cam: str) -> bool:
        return cam in self.cams

    def get(self, cam: str) -> tuple[Camera, str | None]:
        """The camera (created when absent) and, for a camera just created, why it starts without
        history: ``evicted_lru`` / ``evicted_idle`` (it was held before) or ``None`` (new to us)."""
        c = self.cams.get(cam)
        now = time.monotonic()
        if c is not None:
            self.cams.move_to_end(cam)
            c.touched = now
            return c, None
        c = self.factory(cam)
        c.touched = now
        self.cams[cam] = c
        self.probation[cam] = None
        why = self.evicted.pop(cam, None)
        while len(self.cams) > self.cfg.max_cameras:
            old = self._victim()
            self._evict(old, self.cams[old], "lru")
        return c, (f"evicted_{why}" if why else None)

    def _victim(self) -> str:
        """The camera to evict when full: the earliest admitted of those still on probation (fewer
        than :data:`ESTABLISHED_CLIPS` clips accepted), else the least recently used one. A flood
        of new camera ids then evicts its own ids, not the established cameras. Amortised O(1):
        cameras that were promoted or have gone leave ``probation`` when met here."""
        newest = next(reversed(self.cams))
        while self.probation:
            cam = next(iter(self.probation))
            c = self.cams.get(cam)
            if c is None or c.seen >= ESTABLISHED_CLIPS:
                del self.probation[cam]
                continue
            if cam != newest:
                return cam
            break  # the camera being admitted is the only one on probation
        return next(iter(self.cams))

    def _evict(self, cam: str, c: Camera, reason: str) -> None:
        del self.cams[cam]
        self.probation.pop(cam, None)
        self.evicted[cam] = reason
        self.evicted.move_to_end(cam)
        while len(self.evicted) > self.remember:
            self.evicted.popitem(last=False)
        if self.on_evict:
            self.on_evict(cam, c, reason)

    def drop(self, cam: str) -> None:
        """Forget a camera without counting an eviction (its state is rebuilt from the log)."""
        self.cams.pop(cam, None)
        self.probation.pop(cam, None)
        self.evicted.pop(cam, None)

    def sweep(self) -> None:
        """Evict cameras idle for ``camera_idle_s`` (oldest first; O(evicted))."""
        if self.cfg.camera_idle_s <= 0:
            return
        limit = time.monotonic() - self.cfg.camera_idle_s
        while self.cams:
            cam, c = next(iter(self.cams.items()))
            if c.touched > limit:
                break
            self._evict(cam, c, "idle")
