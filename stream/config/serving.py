"""The engine-side configuration sections: ``[engine]`` (scoring, robustness, rollout) and ``[alerts]``
(hysteresis), plus :data:`CORE_SECTIONS` (every core section in ``fusewatch.toml`` order)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass

from fusewatch.stream.config.sections import (
    SCHEMA,
    ClipsConfig,
    FeaturesConfig,
    KafkaConfig,
    ModelConfig,
    Opt,
    Port,
    SourceConfig,
    TopicsConfig,
    TrainConfig,
    WorkerConfig,
    _rng,
    _Section,
)


@dataclass(config=SCHEMA)
class EngineConfig(_Section):
    SECTION: ClassVar[str] = "engine"

    model: str = ""
    """Path to a trained checkpoint (.pt) or exported ONNX; empty: the demo's cached default model."""
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = "auto"
    group_id: str = Field(default="fusewatch-engine", min_length=1)
    max_batch: int = _rng(64, ge=1, le=65536)
    max_wait_ms: float = _rng(20.0, ge=0, le=60_000)
    threads: int = _rng(0, ge=0, le=256)
    """Scoring threads (ONNX Runtime intra-op / torch; 0 = runtime default)."""
    stall_timeout: float = _rng(60.0, ge=0, le=86400)
    """Liveness: ``fusewatch engine`` exits with status 75 when one poll/score/commit cycle has been
    stuck this long (s), so its supervisor restarts it (at-least-once: no alert is lost). 0 = off."""
    rebuild_history: int = _rng(64, ge=0, le=1_000_000)
    """Clips beyond the window re-read per camera on partition assignment to rebuild alert state."""
    # -- hostile / unlucky input (issue 10) ------------------------------------------------------
    rebuild_max_seconds: float = _rng(10.0, gt=0, le=86400)
    """Wall-time bound of one partition's state rebuild (s); cameras whose history was not reached
    start cold (counted)."""
    max_cameras: int = _rng(512, ge=1, le=10_000_000)
    """Cameras held in memory (cameras with fewer than 8 clips evicted first, then the least recently
    used; a returning camera starts cold)."""
    camera_idle_s: float = _rng(3600.0, ge=0, le=31_536_000)
    """Evict a camera without records for this long (engine wall clock, s; 0 = never)."""
    max_clip_step: int = _rng(10000, ge=1, le=2**62)
    """Within one stream epoch a clip index may advance by at most this much (else ``clip_jump``)."""
    max_time_jump: float = _rng(3600.0, gt=0, le=31_536_000)
    """Within one stream epoch a clip's pts/wall start may differ from the previous clip's end by at
    most this much (s; else ``time_jump``)."""
    resync_after: int = _rng(4, ge=1, le=1_000_000)
    """This many consecutive rejected (regression / jump) clips that are in order among themselves
    restart the camera from them (``resync``): one absurd clip cannot blind a camera for good."""
    late_after_s: float = _rng(0.0, ge=0, le=31_536_000)
    """Clips whose capture end (``wall_end``) is older than this when scored are scored, but their
    alerts carry ``late = true`` (s; 0 = off)."""
    check_partition: bool = True
    """Dead-letter (``wrong_partition``) records not on the partition the transport's partitioner
    gives their key (Kafka: murmur2, as the Java client and kafka-python)."""
    metrics_port: Port = 0
    """Prometheus ``/metrics`` plus ``/healthz`` and ``/readyz`` HTTP port (0 = off)."""
    # -- live model rollout (issue 13) -----------------------------------------------------------
    deployment: str = Field(default="default", min_length=1, max_length=200)
    """Model deployment this engine follows: the key of its manifests on ``topics.models``."""
    watch_models: bool = True
    """Follow ``topics.models``: load, warm and switch to each new manifest of ``deployment``."""
    model_poll_s: float = _rng(1.0, gt=0, le=3600)
    """How often the model watcher polls ``topics.models`` (s)."""
    publish_scores: bool = True
    """Publish every live clip score to ``topics.scores`` (the web UI's sparklines and timelines)."""


@dataclass(config=SCHEMA)
class AlertsConfig(_Section):
    """Hysteresis alerting per camera, in stream (capture) time so replays are deterministic."""

    SECTION: ClassVar[str] = "alerts"

    thresholds: Literal["model", "config"] = "model"
    """``model``: use the on/off thresholds calibrated at training time and stored in the model
    (99th / 95th percentile of scores on normal training videos) when it has them; ``config``:
    always use ``on``/``off`` below."""
    on: float = _rng(0.6, ge=0, le=1)
    off: float = _rng(0.4, ge=0, le=1)
    min_duration: float = _rng(1.6, ge=0, le=86400)
    """Seconds the score must stay above ``on`` before an alert opens."""
    cooldown: float = _rng(5.0, ge=0, le=86400)
    """Seconds after an alert ends before a new one may open."""
    update_interval: float = _rng(5.0, ge=0, le=86400)
    """Minimum seconds between ``update`` messages of one alert."""
    camera_thresholds_file: Annotated[str | None, Opt] = None
    """JSON file ``{camera: {"on": x, "off": y}}`` (``fusewatch calibrate``): per-camera thresholds
    that win over ``on``/``off`` and the model's for the cameras listed."""
    zones_file: Annotated[str | None, Opt] = None
    """JSON file ``{"v": 1, "cameras": {camera: [polygon, ...]}}`` of allowed alert regions
    (normalised ``[x, y]`` points), written by the web UI's zone editor; per camera it wins over the
    ``[zones]`` table. The engine re-reads it when it changes (no restart)."""

    @model_validator(mode="after")
    def _check(self) -> AlertsConfig:
        if not self.off <= self.on:
            raise ValueError(f"alerts.off/on: need 0 <= off <= on <= 1 (got off={self.off}, on={self.on})")
        return self


CORE_SECTIONS: dict[str, type] = {
    c.SECTION: c
    for c in (
        KafkaConfig,
        TopicsConfig,
        SourceConfig,
        ClipsConfig,
        FeaturesConfig,
        WorkerConfig,
        ModelConfig,
        TrainConfig,
        EngineConfig,
        AlertsConfig,
    )
}
