"""Typed results of a worker run (:class:`WorkerStats`) and of a replay (:class:`ReplayResult`).

``clips_published`` counts only clips the transport acknowledged (the broker, for Kafka);
``clips_lost`` counts clips finally not delivered (retries exhausted within
``kafka.delivery_timeout_s``, rejected, or too large). A run that lost anything is not a success:
:meth:`WorkerStats.lost_summary` / :meth:`ReplayResult.lost_summary` give the one line the CLI
prints before exiting with status 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerStats:
    """Counters and source info of one camera worker (a snapshot)."""

    camera: str
    source: str
    frames_decoded: int = 0
    frames_sampled: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    reconnects: int = 0
    decode_errors: int = 0
    clips_produced: int = 0
    """Feature messages handed to the transport."""
    clips_published: int = 0
    """Feature messages acknowledged by the transport (on the topic)."""
    clips_lost: int = 0
    """Feature messages finally not delivered (never counted as published)."""
    publish_errors: int = 0
    """Clips whose produce call itself failed (a subset of ``clips_lost``)."""
    health_events: int = 0
    """Camera health state changes published (``health`` records on the alerts topic)."""
    input_fps: float = 0.0
    processed_fps: float = 0.0
    extract_ms_per_clip: dict[str, float] = field(default_factory=dict)
    publish_latency_p50: float | None = None
    publish_latency_max: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    backend: str | None = None
    warning: str | None = None
    lost_error: str | None = None
    """The first delivery error of a lost clip (None when nothing was lost)."""

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any], **info: Any) -> WorkerStats:
        """From :meth:`WorkerMetrics.snapshot` plus ``info`` (camera, source, fps, ...)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**snap, **info}.items() if k in names})

    @property
    def clips_pending(self) -> int:
        """Clips handed to the transport with no outcome yet (0 after a finished run)."""
        return max(0, self.clips_produced - self.clips_published - self.clips_lost + self.publish_errors)

    def lost_summary(self) -> str | None:
        """One line naming what was lost, or None."""
        if not self.clips_lost:
            return None
        why = f": {self.lost_error}" if self.lost_error else ""
        return (
            f"camera {self.camera}: {self.clips_lost} clip(s) lost (not delivered), "
            f"{self.clips_published} published{why}"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ReplayResult:
    """Per-camera :class:`WorkerStats` of a replay, its wall time and per-camera errors."""

    cameras: dict[str, WorkerStats]
    wall_s: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def clips_produced(self) -> int:
        return sum(s.clips_produced for s in self.cameras.values())

    @property
    def clips_published(self) -> int:
        return sum(s.clips_published for s in self.cameras.values())

    @property
    def clips_lost(self) -> int:
        return sum(s.clips_lost for s in self.cameras.values())

    @property
    def frames_decoded(self) -> int:
        return sum(s.frames_decoded for s in self.cameras.values())

    def lost_summary(self) -> str | None:
        """One line naming the cameras that lost clips, or None."""
        lost = {c: s for c, s in self.cameras.items() if s.clips_lost}
        if not lost:
            return None
        first = next((s.lost_error for s in lost.values() if s.lost_error), None)
        per = ", ".join(f"{c}: {s.clips_lost}" for c, s in lost.items())
        return (
            f"{self.clips_lost} clip(s) lost (not delivered; {per}), {self.clips_published} of "
            f"{self.clips_produced} published" + (f"; first error: {first}" if first else "")
        )
