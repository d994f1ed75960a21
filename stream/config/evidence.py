"""Configuration sections of alert evidence and camera health: ``[evidence]``, ``[health]``.

Part of the one schema (:mod:`fusewatch.stream.config`: same loading order, ``--set``, environment
variables ``FUSEWATCH_EVIDENCE_DIR`` …). Times are seconds, sizes megabytes (10^6 bytes).
"""

from __future__ import annotations

from dataclasses import field
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from fusewatch.stream.config.sections import SCHEMA, StrList, _rng, _Section


@dataclass(config=SCHEMA)
class EvidenceConfig(_Section):
    """Alert evidence: a rolling packet buffer per camera and an MP4 clip + JPEG snapshot per alert."""

    SECTION: ClassVar[str] = "evidence"

    enabled: bool = False
    """Record the packet buffer in the worker and cut evidence (``fusewatch demo`` turns it on)."""
    dir: str = "~/.cache/fusewatch/evidence"
    """Evidence store: ``<dir>/<camera>/<alert id>.mp4|.jpg``; the packet buffer is ``<dir>/.buffer/``."""
    base_url: str = "/evidence"
    """Prefix of the URLs in evidence records (``<base_url>/<camera>/<alert id>.mp4``)."""
    pre_seconds: float = _rng(5.0, ge=0, le=600)
    """Pre-roll: the clip starts this long before the alert opens."""
    max_seconds: float = _rng(60.0, gt=0, le=3600)
    """Cap on a clip's length (pre-roll included); a longer alert is cut at the cap."""
    segment_seconds: float = _rng(2.0, gt=0, le=600)
    """Shortest buffer segment: a new one starts at the first keyframe after this long."""
    buffer_seconds: float = _rng(300.0, gt=0, le=7 * 86400)
    """Buffer retention by capture age (must cover pre_seconds + max_seconds + engine lag)."""
    buffer_max_mb: float = _rng(2000.0, gt=0, le=10_000_000)
    """Buffer retention by size per camera: the oldest segments go first."""
    max_age_days: float = _rng(30.0, gt=0, le=36500)
    """Store retention: clips and snapshots older than this (file time) are deleted."""
    max_total_mb: float = _rng(10_000.0, gt=0, le=100_000_000)
    """Store retention: while the store is larger, the oldest alert's files are deleted."""
    masks: StrList = field(default_factory=list)
    """Privacy masks ``"x:y:w:h"`` (fractions 0..1 of the frame), blurred in clips and snapshots."""
    wait_s: float = _rng(60.0, ge=0, le=86400)
    """How long to wait for the buffer to reach an ended alert's end before cutting what is there."""
    crf: int = _rng(23, ge=0, le=51)
    """libx264 quality when a clip must be re-encoded (lower = better, larger)."""
    group_id: str = Field(default="fusewatch-evidence", min_length=1)
    """Consumer group of the evidence writer on the alerts topic (``-<camera>`` added by ``worker``)."""

    @model_validator(mode="after")
    def _check(self) -> EvidenceConfig:
        from fusewatch.stream.evidence.cut import parse_mask

        for m in self.masks:
            parse_mask(m)  # ValueError → a one-line config error
        return self


@dataclass(config=SCHEMA)
class HealthConfig(_Section):
    """Camera health on the worker's sampled frames; state changes go to the alerts topic."""

    SECTION: ClassVar[str] = "health"

    enabled: bool = True
    offline_after_s: float = _rng(30.0, gt=0, le=86400)
    """No frame from the source for this long (system time) → ``offline``."""
    frozen_after_s: float = _rng(10.0, gt=0, le=86400)
    """Near-identical frames for this long (capture time) → ``frozen``."""
    frozen_diff: float = _rng(0.5, ge=0, le=255)
    """Largest mean absolute grey-level difference (0..255, 64×48 thumbnails) of a frozen frame."""
    black_after_s: float = _rng(3.0, gt=0, le=86400)
    """Dark or featureless frames for this long → ``black``."""
    black_level: float = _rng(20.0, ge=0, le=255)
    """Mean grey level below which a frame is dark."""
    blank_std: float = _rng(3.0, ge=0, le=255)
    """Grey-level standard deviation below which a frame is blank (uniform, covered lens)."""
    tamper_after_s: float = _rng(3.0, gt=0, le=86400)
    """A view that differs from the learned background for this long → ``tamper``."""
    tamper_threshold: float = _rng(0.4, ge=-1, le=1)
    """Edge-map correlation with the background below which the view counts as changed."""
    relearn_s: float = _rng(60.0, gt=0, le=86400)
    """After this long in ``tamper`` the new view becomes the background (state back to ``ok``)."""
