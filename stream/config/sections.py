"""The configuration sections: one pydantic dataclass per ``[section]`` of ``fusewatch.toml``.

Every default is defined here and nowhere else (code reads ``cfg.section.field``, never a
``getattr`` fallback). Every numeric field has an enforced range (NaN/inf rejected everywhere);
choice fields are ``Literal``; passwords are ``SecretStr`` (``.get_secret_value()`` only where a
client library needs the plain value). Sections stay dataclasses, so ``dataclasses.asdict`` /
``replace`` / ``fields`` keep working for callers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.dataclasses import dataclass
from pydantic_settings import NoDecode

from fusewatch.errors import ConfigError

CACHE_DIR = Path(os.environ.get("FUSEWATCH_CACHE", Path.home() / ".cache" / "fusewatch"))

SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False, coerce_numbers_to_str=True, validate_default=False)
"""Shared pydantic settings: unknown fields are errors, NaN/inf are errors, ``client_id = 5`` is ``"5"``."""

NONE_WORDS = ("", "none", "null")


def _none_word(v: Any) -> Any:
    """``""``/``none``/``null`` (env or ``--set``) mean "unset" for optional fields."""
    return None if isinstance(v, str) and v.strip().lower() in NONE_WORDS else v


def _split_list(v: Any) -> Any:
    """``"a,b"`` (env or ``--set``) → ``["a", "b"]``; TOML arrays pass through."""
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return v


Opt = BeforeValidator(_none_word)
StrList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
FloatList = Annotated[list[float], NoDecode, BeforeValidator(_split_list)]
Port = Annotated[int, Field(ge=0, le=65535)]


def _rng(
    default: Any, ge: float | None = None, le: float | None = None, gt: float | None = None, lt: float | None = None
) -> Any:
    return Field(default, ge=ge, le=le, gt=gt, lt=lt)


class _Section:
    """Mixin: :meth:`validate` re-checks a section after attribute assignment."""

    SECTION: ClassVar[str] = ""

    def validate(self) -> _Section:
        """Re-validate the current values (after ``cfg.section.field = ...``); raise :class:`ConfigError`."""
        from fusewatch.stream.config.errors import config_error

        try:
            type(self)(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})  # type: ignore[arg-type]
        except ValidationError as e:
            raise config_error(e, (self.SECTION,) if self.SECTION else ()) from None
        return self


@dataclass(config=SCHEMA)
class KafkaConfig(_Section):
    """Passed straight through to kafka-python (names match its keyword arguments)."""

    SECTION: ClassVar[str] = "kafka"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("sasl_plain_password",)

    bootstrap_servers: str = "127.0.0.1:9092"
    """Comma-separated ``host:port`` list (port 1..65535)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Annotated[
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None, Opt
    ] = None
    sasl_plain_username: Annotated[str | None, Opt] = None
    sasl_plain_password: Annotated[SecretStr | None, Opt] = None
    ssl_cafile: Annotated[str | None, Opt] = None
    ssl_certfile: Annotated[str | None, Opt] = None
    ssl_keyfile: Annotated[str | None, Opt] = None
    client_id: str = Field(default="fusewatch", min_length=1)
    compression_type: Annotated[Literal["gzip", "snappy", "lz4", "zstd"] | None, Opt] = None
    request_timeout_ms: int = _rng(30000, ge=100, le=3_600_000)
    session_timeout_ms: int = _rng(10000, ge=100, le=3_600_000)
    """Consumer group session timeout: how soon a crashed engine's partitions move to a survivor."""
    heartbeat_interval_ms: int = _rng(3000, ge=1, le=3_600_000)
    connect_timeout_s: float = _rng(15.0, gt=0, le=3600)
    """How long a client waits for the broker at start-up before failing with a clear error (s)."""
    delivery_timeout_s: float = _rng(120.0, gt=0, le=86400)
    """How long a produced record may stay unacknowledged (retried while the broker is away) before
    it counts as lost (s); must exceed ``request_timeout_ms``. kafka-python ``delivery_timeout_ms``."""

    @model_validator(mode="after")
    def _check(self) -> KafkaConfig:
        servers = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        if not servers:
            raise ValueError("kafka.bootstrap_servers: must not be empty")
        for s in servers:
            host, sep, port = s.rpartition(":")
            if sep and not (port.isdigit() and 1 <= int(port) <= 65535 and host):
                raise ValueError(f"kafka.bootstrap_servers: {s!r} is not HOST:PORT with a port in 1..65535")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("kafka.heartbeat_interval_ms: must be > 0 and < kafka.session_timeout_ms")
        if not self.delivery_timeout_s * 1000 > self.request_timeout_ms:
            raise ValueError(
                f"kafka.delivery_timeout_s: must be > kafka.request_timeout_ms/1000 = "
                f"{self.request_timeout_ms / 1000:g} (got {self.delivery_timeout_s!r})"
            )
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for KafkaProducer/KafkaConsumer/KafkaAdminClient (None values dropped;
        the password as plain text: this is the one place it leaves its :class:`SecretStr`)."""
        out = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("connect_timeout_s", "delivery_timeout_s")
        }
        out["bootstrap_servers"] = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        out = {k: (v.get_secret_value() if isinstance(v, SecretStr) else v) for k, v in out.items()}
        return {k: v for k, v in out.items() if v is not None}

    def secrets(self) -> list[str]:
        """The plain values of the secret fields that are set (for log redaction)."""
        vals = (getattr(self, n) for n in self.SECRET_FIELDS)
        return [v.get_secret_value() for v in vals if isinstance(v, SecretStr) and v.get_secret_value()]


@dataclass(config=SCHEMA)
class TopicsConfig(_Section):
    SECTION: ClassVar[str] = "topics"

    features: str = Field(default="fusewatch.features", min_length=1, max_length=249)
    alerts: str = Field(default="fusewatch.alerts", min_length=1, max_length=249)
    dead_letter: str = Field(default="fusewatch.deadletter", min_length=1, max_length=249)
    models: str = Field(default="fusewatch.models", min_length=1, max_length=249)
    """Compacted topic of model manifests (key = deployment name): live model rollout."""
    scores: str = Field(default="fusewatch.scores", min_length=1, max_length=249)
    """Per-clip scores published by the engine (``engine.publish_scores``; JSON, keyed by camera)."""
    thumbnails: str = Field(default="fusewatch.thumbnails", min_length=1, max_length=249)
    """Low-rate JPEG thumbnails published by workers (``worker.thumbnail_interval_s``)."""
    partitions: int = _rng(3, ge=1, le=10_000)
    replication_factor: int = _rng(0, ge=0, le=100)
    """Replicas per partition of the topics ``fusewatch topics create`` makes; 0 = auto:
    min(3, brokers in the cluster) — 3 on a cluster, 1 on a single broker."""
    min_insync_replicas: int = _rng(0, ge=0, le=100)
    """Topic ``min.insync.replicas`` (with the producer's ``acks=all``: how many replicas must have a
    record before it is acknowledged); 0 = auto: 2 when replication_factor >= 3, else 1."""

    @model_validator(mode="after")
    def _check(self) -> TopicsConfig:
        if self.replication_factor and self.min_insync_replicas > self.replication_factor:
            raise ValueError("topics.min_insync_replicas: must be <= topics.replication_factor")
        return self


@dataclass(config=SCHEMA)
class SourceConfig(_Section):
    """Video source handling (decode thread, watchdog, reconnect, sampling, queues)."""

    SECTION: ClassVar[str] = "source"

    stall_timeout: float = _rng(10.0, gt=0, le=3600)
    """Seconds without a decoded frame before the watchdog abandons the decoder and reconnects."""
    reconnect_initial: float = _rng(0.5, gt=0, le=3600)
    reconnect_max: float = _rng(30.0, gt=0, le=86400)
    max_reconnects: int = _rng(-1, ge=-1, le=1_000_000)
    """-1: reconnect forever (live sources); files never reconnect at end of stream."""
    socket_timeout: float = _rng(5.0, gt=0, le=3600)
    """FFmpeg socket/read timeout (s), passed as ``timeout``/``rw_timeout``/``stimeout`` options."""
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    sample_fps: float = _rng(10.0, gt=0, le=1000)
    max_width: int = _rng(384, ge=0, le=16384)
    """Working resolution: decoded frames wider than this many px are downscaled (aspect kept, area
    interpolation, during the decoder's RGB conversion) before any extractor, health check or
    thumbnail sees them; 0 keeps full resolution. The extractors work at ≤ 224 px, so 384 loses
    nothing they use and makes a 1080p camera ~14× cheaper to convert and resize. Evidence clips
    are remuxed from the source's packets and keep full resolution."""
    queue_size: int = _rng(64, ge=1, le=100_000)
    overflow: Literal["drop_oldest", "block"] = "drop_oldest"

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError("source.reconnect_max: must be >= source.reconnect_initial")
        if 0 < self.max_width < 32:
            raise ValueError(f"source.max_width: must be 0 (full resolution) or >= 32 (got {self.max_width})")
        return self


@dataclass(config=SCHEMA)
class ClipsConfig(_Section):
    SECTION: ClassVar[str] = "clips"

    clip_len: int = _rng(16, ge=1, le=1024)
    clip_stride: int = _rng(16, ge=1, le=1024)


DEFAULT_EXTRACTORS = ("mobilenetv2", "flow")
"""What the default model (``model.representations``) reads: a worker or ``extract`` without
``--model`` computes nothing the default model would ignore."""
KNOWN_EXTRACTORS = ("mobilenetv2", "effnet_lite0", "flow", "audio", "flow_grid", "objects", "mnv2_patches")


def _check_extractors(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("at least one extractor is required")
    for e in v:
        if e not in KNOWN_EXTRACTORS and not e.startswith("onnx:"):
            raise ValueError(f"unknown extractor {e!r} (known: {', '.join(KNOWN_EXTRACTORS)}, onnx:<path>)")
    return v


@dataclass(config=SCHEMA)
class FeaturesConfig(_Section):
    SECTION: ClassVar[str] = "features"

    extractors: StrList = field(default_factory=lambda: list(DEFAULT_EXTRACTORS))
    """Names: mobilenetv2, effnet_lite0, flow, audio, flow_grid, objects, mnv2_patches, or
    ``onnx:<path>`` (default: the default model's representations, mobilenetv2 + flow)."""
    pool: Literal["mean", "meanmax"] = "mean"
    """Clip pooling over frames for CNN backbones: ``mean`` or ``meanmax`` (concatenated, 2×D)."""
    model_dir: str = str(CACHE_DIR / "models")
    threads: int = _rng(1, ge=0, le=256)
    """ONNX Runtime intra-op threads per worker (0 = runtime default; 1 scales best: one camera
    per worker process, more cameras rather than more threads)."""
    cnn_frames: int = _rng(8, ge=0, le=1024)
    """CNN backbones see this many frames spread evenly over each clip (0 = every frame)."""
    cnn_input_size: int = _rng(224, ge=32, le=1024)
    """Side of the square image the pooled CNN backbones (``mobilenetv2``, ``effnet_lite0``) see
    (px; ``mnv2_patches`` stays at 224). 224 is the ImageNet recipe; smaller inputs cost about
    (size / 224)² as much (160: ~0.4× the int8 MobileNetV2 time here) and, on Ped2, detect worse."""
    cnn_resize: Literal["squash", "crop"] = "squash"
    """``squash`` (whole frame to 224×224) or ``crop`` (shorter side 256, centre crop 224)."""
    cnn_spatial: Literal["avg", "max"] = "avg"
    """Spatial pooling of the backbones' last 7×7 feature map: ``avg`` (ImageNet recipe) or ``max``
    (strongest response per channel: small objects — a bicycle in a wide shot — are not averaged
    away; UCSD Ped2 weak-label probe 0.93 vs 0.89 frame AUC, see bench/results/ped2.md)."""
    flow_width: int = _rng(120, ge=16, le=1920)
    """Optical flow runs on grey frames downscaled to this width (px, 16..1920)."""
    flow_method: Literal["farneback", "dis"] = "farneback"
    """``farneback`` or ``dis`` (OpenCV DIS ultrafast: faster, noisier)."""
    onnx_input_size: int = _rng(224, ge=8, le=4096)
    onnx_layout: Literal["NCHW", "NHWC"] = "NCHW"
    onnx_mean: FloatList = field(default_factory=lambda: [0.485, 0.456, 0.406])
    onnx_std: FloatList = field(default_factory=lambda: [0.229, 0.224, 0.225])

    # -- multi-camera serving (issue 13 items 5-6) --
    cnn_precision: Literal["fp32", "int8"] = "fp32"
    """``fp32`` or ``int8`` (ONNX Runtime static QDQ quantisation of the backbones, calibrated on
    real frames, cached beside the fp32 export; its own extractor version)."""
    cnn_calibration: StrList = field(default_factory=list)
    """Videos (files or folders) whose frames calibrate the int8 backbones (empty: the shared
    Ped2 training videos + vtest.avi)."""
    motion_gate: bool = False
    """Multi-camera worker: skip the CNNs on a clip without foreground motion and reuse the
    camera's last CNN embedding (off by default)."""
    motion_gate_threshold: float = _rng(0.002, ge=0, le=1)
    """Fraction of pixels whose grey level changes by > 25 between consecutive sampled frames
    (at 160 px wide) below which a clip counts as motionless."""

    @model_validator(mode="after")
    def _check(self) -> FeaturesConfig:
        try:
            _check_extractors(self.extractors)
        except ValueError as e:
            raise ValueError(f"features.extractors: {e}") from None
        if (
            len(self.onnx_mean) not in (1, 3)
            or len(self.onnx_std) not in (1, 3)
            or not all(s > 0 for s in self.onnx_std)
        ):
            raise ConfigError("features.onnx_mean/onnx_std: need 1 or 3 values each, std > 0")
        return self


LogFormat = Literal["text", "json"]


@dataclass(config=SCHEMA)
class WorkerConfig(_Section):
    SECTION: ClassVar[str] = "worker"

    metrics_port: Annotated[Port | None, Opt] = None
    """Prometheus metrics HTTP port (None: no server; 0: any free port)."""
    log_format: Annotated[LogFormat | None, Opt] = None
    """Older name of the top-level ``log_format``; when set it wins (kept for existing configs)."""
    thumbnail_interval_s: float = _rng(5.0, ge=0, le=86400)
    """Seconds of stream time between thumbnails published to ``topics.thumbnails`` (0: none)."""
    thumbnail_width: int = _rng(320, ge=16, le=3840)
    """Thumbnails are downscaled to this width (px; never upscaled)."""
    # -- multi-camera worker (issue 13 item 5) --
    cameras: StrList = field(default_factory=list)
    """``ID=URI`` entries served by one ``fusewatch worker`` process (besides ``--camera/--source``)."""
    pool_threads: int = _rng(2, ge=1, le=256)
    """Threads of the shared extractor pool (each runs whole batches: CNNs batched across cameras)."""
    batch_clips: int = _rng(8, ge=1, le=4096)
    """Most clips (of any cameras) one pool batch takes, i.e. one ONNX Runtime call per backbone."""
    batch_wait_ms: float = _rng(5.0, ge=0, le=60_000)
    """How long a pool thread waits for more clips to fill a batch once it has one."""
    per_frame: bool = True
    """Extract per frame as frames arrive (CNN embeddings, flow fields: :mod:`fusewatch.stream.frame_parts`),
    so a clip's features are ready right after its last frame; false: the whole clip at clip end
    (the CNNs then batch across cameras' clips in the shared pool). Same features either way."""
    batch_frames: bool = False
    """Multi-camera worker with ``per_frame``: CNN embeddings of frames of all cameras batched into
    shared inference calls (:mod:`fusewatch.stream.frame_batcher`, ``pool_threads`` threads,
    ``batch_wait_ms``). Off by default: on the 2-core reference machine it saved no CPU and raised
    live clip end → alert p99 from 227 to 704 ms (bench/latency.py); false: each camera thread
    embeds its own frames as they arrive."""

    @model_validator(mode="after")
    def _check(self) -> WorkerConfig:
        for c in self.cameras:
            if "=" not in c or not c.split("=", 1)[0].strip() or not c.split("=", 1)[1].strip():
                raise ValueError(f"worker.cameras: expected ID=URI entries (got {c!r})")
        return self


@dataclass(config=SCHEMA)
class ModelConfig(_Section):
    """Graph-fusion model hyper-parameters (stored in checkpoints and ONNX metadata)."""

    SECTION: ClassVar[str] = "model"

    fusion: Literal["lego", "concat", "add", "mtn"] = "lego"
    window: int = _rng(32, ge=2, le=4096)
    """N: clip nodes per relationship graph."""
    order_p: int = _rng(2, ge=0, le=16)
    order_q: int = _rng(2, ge=0, le=16)
    expansion: Literal["matrix", "hadamard"] = "matrix"
    softplus: bool = False
    proj_dim: int = _rng(0, ge=0, le=65536)
    """0: no learned projection before cosine similarity; else project each representation to this dim."""
    node_dim: int = _rng(16, ge=0, le=4096)
    """Node branch: per-representation Linear(d_m, node_dim) node signals propagated by the fused
    graph operator and fed to the head beside the rows of G (0: head on rows of G only)."""
    representations: Annotated[StrList, Field(min_length=1)] = field(default_factory=lambda: ["mobilenetv2", "flow"])


@dataclass(config=SCHEMA)
class TrainConfig(_Section):
    SECTION: ClassVar[str] = "train"

    epochs: int = _rng(100, ge=1, le=100_000)
    lr: float = _rng(1e-3, gt=0, le=10)
    weight_decay: float = _rng(5e-4, ge=0, le=10)
    batch_size: int = _rng(16, ge=1, le=65536)
    topk: int = _rng(3, ge=1, le=1024)
    reg: bool = True
    reg_alpha: float = _rng(0.5, ge=0, le=1000)
    reg_lambda: float = _rng(0.1, ge=0, le=1000)
    val_fraction: float = _rng(0.0, ge=0, lt=1)
    """Share of each class's videos held out to validate every epoch; the epoch with the best
    validation AUC is kept. 0 (default): train on every video and keep the last epoch — the recipe
    the inductive Ped2 benchmark measures (0.979 ± 0.003 there, against 0.964 ± 0.013 with 0.2 and
    best-epoch selection on the fold's own training videos)."""
    calibration: Literal["heldout", "insample", "none"] = "heldout"
    """Alert thresholds (99th / 95th percentile of normal clip scores) from normal videos the model
    never trained on: the validation split's, else cross-fitted ones (``calibration_folds``
    calibration models, each trained without one group of the normal videos); ``insample``: the
    training videos' own scores (too low for a model trained to its last epoch); ``none``."""
    calibration_folds: int = _rng(3, ge=2, le=100)
    """Cross-fitting groups of normal training videos for ``calibration = "heldout"`` (that many
    extra training runs)."""
    seed: int = _rng(0, ge=0, le=2**32 - 1)
    random_pair: bool = False
    normalize: Literal["zscore", "none"] = "zscore"
    motion_prior: Literal["context", "product", "none"] = "context"
    """Local-motion prior (:mod:`fusewatch.engines.fusion.motion_prior`; needs a ``flow`` /
    ``flow_grid`` representation, otherwise none): ``context`` = the largest model score over the
    clip's window × the clip's local motion relative to the training clips' largest; ``product`` =
    the clip's own model score × that motion factor; ``none``: the model's score alone."""


"""Section name → class, in ``fusewatch.toml`` order (the notify sections follow, see
:data:`fusewatch.stream.config.SECTIONS`)."""
