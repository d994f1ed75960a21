"""The one configuration schema of fusewatch.

Sources, in increasing precedence: dataclass defaults < TOML file (``--config F``) <
``FUSEWATCH_<SECTION>_<FIELD>`` environment variables (e.g. ``FUSEWATCH_KAFKA_BOOTSTRAP_SERVERS``,
``FUSEWATCH_ENGINE_MAX_BATCH``; top-level fields: ``FUSEWATCH_TRANSPORT``) < CLI flags
(``--set section.field=value`` for every field, plus per-command shortcuts).

Invalid values raise :class:`ConfigError` with one line naming the field; the CLI prints that line
and exits with status 2.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

CACHE_DIR = Path(os.environ.get("FUSEWATCH_CACHE", Path.home() / ".cache" / "fusewatch"))


class ConfigError(ValueError):
    """A user-facing configuration error: ``str(err)`` is one line naming the field."""


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: must be one of {', '.join(map(str, choices))} (got {value!r})")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}: must be {'>= 0' if allow_zero else '> 0'} (got {value!r})")


@dataclass
class KafkaConfig:
    """Passed straight through to kafka-python (names match its keyword arguments)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str = "fusewatch"
    compression_type: str | None = None
    request_timeout_ms: int = 30000
    session_timeout_ms: int = 30000
    """Consumer group session timeout: how soon a crashed engine's partitions move to a survivor."""
    heartbeat_interval_ms: int = 3000
    connect_timeout_s: float = 15.0
    """How long a client waits for the broker at start-up before failing with a clear error (s)."""
    delivery_timeout_s: float = 120.0
    """How long a produced record may stay unacknowledged (retried while the broker is away) before
    it counts as lost (s); must exceed ``request_timeout_ms``. kafka-python ``delivery_timeout_ms``."""

    SECRET_FIELDS: typing.ClassVar[tuple[str, ...]] = ("sasl_plain_password",)

    def validate(self) -> None:
        _choice("kafka.security_protocol", self.security_protocol,
                ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"))
        if self.sasl_mechanism is not None:
            _choice("kafka.sasl_mechanism", self.sasl_mechanism,
                    ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"))
        if self.compression_type is not None:
            _choice("kafka.compression_type", self.compression_type, ("gzip", "snappy", "lz4", "zstd"))
        if not self.bootstrap_servers.strip():
            raise ConfigError("kafka.bootstrap_servers: must not be empty")
        _positive("kafka.request_timeout_ms", self.request_timeout_ms)
        _positive("kafka.session_timeout_ms", self.session_timeout_ms)
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ConfigError("kafka.heartbeat_interval_ms: must be > 0 and < kafka.session_timeout_ms")
        _positive("kafka.connect_timeout_s", self.connect_timeout_s)
        if not self.delivery_timeout_s * 1000 > self.request_timeout_ms:
            raise ConfigError(f"kafka.delivery_timeout_s: must be > kafka.request_timeout_ms/1000 = "
                              f"{self.request_timeout_ms / 1000:g} (got {self.delivery_timeout_s!r})")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for KafkaProducer/KafkaConsumer/KafkaAdminClient (None values dropped)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("connect_timeout_s", "delivery_timeout_s")}
        out["bootstrap_servers"] = [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class TopicsConfig:
    features: str = "fusewatch.features"
    alerts: str = "fusewatch.alerts"
    dead_letter: str = "fusewatch.deadletter"
    partitions: int = 3
    replication_factor: int = 1

    def validate(self) -> None:
        _positive("topics.partitions", self.partitions)
        _positive("topics.replication_factor", self.replication_factor)
        for n in ("features", "alerts", "dead_letter"):
            if not getattr(self, n):
                raise ConfigError(f"topics.{n}: must not be empty")


@dataclass
class SourceConfig:
    """Video source handling (decode thread, watchdog, reconnect, sampling, queues)."""

    stall_timeout: float = 10.0
    """Seconds without a decoded frame before the watchdog abandons the decoder and reconnects."""
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    max_reconnects: int = -1
    """-1: reconnect forever (live sources); files never reconnect at end of stream."""
    socket_timeout: float = 5.0
    """FFmpeg socket/read timeout (s), passed as ``timeout``/``rw_timeout``/``stimeout`` options."""
    rtsp_transport: str = "tcp"
    sample_fps: float = 10.0
    queue_size: int = 64
    overflow: str = "drop_oldest"

    def validate(self) -> None:
        for n in ("stall_timeout", "reconnect_initial", "reconnect_max", "socket_timeout", "sample_fps"):
            _positive(f"source.{n}", getattr(self, n))
        _positive("source.queue_size", self.queue_size)
        _choice("source.overflow", self.overflow, ("drop_oldest", "block"))
        _choice("source.rtsp_transport", self.rtsp_transport, ("tcp", "udp"))
        if self.reconnect_max < self.reconnect_initial:
            raise ConfigError("source.reconnect_max: must be >= source.reconnect_initial")


@dataclass
class ClipsConfig:
    clip_len: int = 16
    clip_stride: int = 16

    def validate(self) -> None:
        _positive("clips.clip_len", self.clip_len)
        _positive("clips.clip_stride", self.clip_stride)


@dataclass
class FeaturesConfig:
    extractors: list[str] = field(default_factory=lambda: ["mobilenetv2", "effnet_lite0", "flow", "audio"])
    """Names: mobilenetv2, effnet_lite0, flow, audio, or ``onnx:<path>``."""
    pool: str = "mean"
    """Clip pooling over frames for CNN backbones: ``mean`` or ``meanmax`` (concatenated, 2×D)."""
    model_dir: str = str(CACHE_DIR / "models")
    threads: int = 1
    """ONNX Runtime intra-op threads per worker (0 = runtime default; 1 scales best: one camera
    per worker process, more cameras rather than more threads)."""
    cnn_frames: int = 8
    """CNN backbones see this many frames spread evenly over each clip (0 = every frame)."""
    cnn_resize: str = "squash"
    """``squash`` (whole frame to 224×224) or ``crop`` (shorter side 256, centre crop 224)."""
    cnn_spatial: str = "avg"
    """Spatial pooling of the backbones' last 7×7 feature map: ``avg`` (ImageNet recipe) or ``max``
    (strongest response per channel: small objects — a bicycle in a wide shot — are not averaged
    away; UCSD Ped2 weak-label probe 0.93 vs 0.89 frame AUC, see bench/results/ped2.md)."""
    flow_width: int = 160
    """Optical flow runs on grey frames downscaled to this width (px)."""
    flow_method: str = "farneback"
    """``farneback`` or ``dis`` (OpenCV DIS ultrafast: faster, noisier)."""
    onnx_input_size: int = 224
    onnx_layout: str = "NCHW"
    onnx_mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    onnx_std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # -- multi-camera serving (issue 13 items 5-6) --
    cnn_precision: str = "fp32"
    """``fp32`` or ``int8`` (ONNX Runtime static QDQ quantisation of the backbones, calibrated on
    real frames, cached beside the fp32 export; its own extractor version)."""
    cnn_calibration: list[str] = field(default_factory=list)
    """Videos (files or folders) whose frames calibrate the int8 backbones (empty: the shared
    Ped2 training videos + vtest.avi)."""
    motion_gate: bool = False
    """Multi-camera worker: skip the CNNs on a clip without foreground motion and reuse the
    camera's last CNN embedding (off by default)."""
    motion_gate_threshold: float = 0.002
    """Fraction of pixels whose grey level changes by > 25 between consecutive sampled frames
    (at 160 px wide) below which a clip counts as motionless."""

    def validate(self) -> None:
        if not self.extractors:
            raise ConfigError("features.extractors: at least one extractor is required")
        known = ("mobilenetv2", "effnet_lite0", "flow", "audio")
        for e in self.extractors:
            if e not in known and not e.startswith("onnx:"):
                raise ConfigError(f"features.extractors: unknown extractor {e!r} "
                                  f"(known: {', '.join(known)}, onnx:<path>)")
        _choice("features.pool", self.pool, ("mean", "meanmax"))
        _choice("features.onnx_layout", self.onnx_layout, ("NCHW", "NHWC"))
        _positive("features.onnx_input_size", self.onnx_input_size)
        _positive("features.threads", self.threads, allow_zero=True)
        _positive("features.cnn_frames", self.cnn_frames, allow_zero=True)
        _positive("features.flow_width", self.flow_width)
        _choice("features.cnn_resize", self.cnn_resize, ("squash", "crop"))
        _choice("features.cnn_spatial", self.cnn_spatial, ("avg", "max"))
        _choice("features.flow_method", self.flow_method, ("farneback", "dis"))
        _choice("features.cnn_precision", self.cnn_precision, ("fp32", "int8"))
        _positive("features.motion_gate_threshold", self.motion_gate_threshold, allow_zero=True)


@dataclass
class WorkerConfig:
    metrics_port: int | None = None
    """Prometheus metrics HTTP port (None: no server)."""
    log_format: str = "text"
    # -- multi-camera worker (issue 13 item 5) --
    cameras: list[str] = field(default_factory=list)
    """``ID=URI`` entries served by one ``fusewatch worker`` process (besides ``--camera/--source``)."""
    pool_threads: int = 2
    """Threads of the shared extractor pool (each runs whole batches: CNNs batched across cameras)."""
    batch_clips: int = 8
    """Most clips (of any cameras) one pool batch takes, i.e. one ONNX Runtime call per backbone."""
    batch_wait_ms: float = 5.0
    """How long a pool thread waits for more clips to fill a batch once it has one."""

    def validate(self) -> None:
        _choice("worker.log_format", self.log_format, ("text", "json"))
        _positive("worker.pool_threads", self.pool_threads)
        _positive("worker.batch_clips", self.batch_clips)
        _positive("worker.batch_wait_ms", self.batch_wait_ms, allow_zero=True)
        for c in self.cameras:
            if "=" not in c or not c.split("=", 1)[0].strip() or not c.split("=", 1)[1].strip():
                raise ConfigError(f"worker.cameras: expected ID=URI entries (got {c!r})")
        if self.metrics_port is not None and not (0 <= self.metrics_port <= 65535):
            raise ConfigError(f"worker.metrics_port: must be 0..65535 (got {self.metrics_port})")


@dataclass
class ModelConfig:
    """Graph-fusion model hyper-parameters (stored in checkpoints and ONNX metadata)."""

    fusion: str = "lego"
    window: int = 32
    """N: clip nodes per relationship graph."""
    order_p: int = 2
    order_q: int = 2
    expansion: str = "matrix"
    softplus: bool = False
    proj_dim: int = 0
    """0: no learned projection before cosine similarity; else project each representation to this dim."""
    node_dim: int = 16
    """Node branch: per-representation Linear(d_m, node_dim) node signals propagated by the fused
    graph operator and fed to the head beside the rows of G (0: head on rows of G only)."""
    representations: list[str] = field(default_factory=lambda: ["mobilenetv2", "flow"])

    def validate(self) -> None:
        _choice("model.fusion", self.fusion, ("lego", "concat", "add", "mtn"))
        _choice("model.expansion", self.expansion, ("matrix", "hadamard"))
        _positive("model.window", self.window)
        if self.window < 2:
            raise ConfigError("model.window: must be >= 2")
        _positive("model.order_p", self.order_p, allow_zero=True)
        _positive("model.order_q", self.order_q, allow_zero=True)
        _positive("model.proj_dim", self.proj_dim, allow_zero=True)
        _positive("model.node_dim", self.node_dim, allow_zero=True)
        if not self.representations:
            raise ConfigError("model.representations: at least one representation is required")


@dataclass
class TrainConfig:
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 16
    topk: int = 3
    reg: bool = True
    reg_alpha: float = 0.5
    reg_lambda: float = 0.1
    val_fraction: float = 0.2
    seed: int = 0
    random_pair: bool = False

    def validate(self) -> None:
        for n in ("epochs", "lr", "batch_size", "topk"):
            _positive(f"train.{n}", getattr(self, n))
        _positive("train.reg_lambda", self.reg_lambda, allow_zero=True)
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction: must be in [0, 1) (got {self.val_fraction})")


@dataclass
class EngineConfig:
    model: str = ""
    """Path to a trained checkpoint (.pt) or exported ONNX; empty: the demo's cached default model."""
    backend: str = "auto"
    group_id: str = "fusewatch-engine"
    max_batch: int = 64
    max_wait_ms: float = 20.0
    threads: int = 0
    """Scoring threads (ONNX Runtime intra-op / torch; 0 = runtime default)."""
    stall_timeout: float = 60.0
    """Liveness: ``fusewatch engine`` exits with status 75 when one poll/score/commit cycle has been
    stuck this long (s), so its supervisor restarts it (at-least-once: no alert is lost). 0 = off."""
    rebuild_history: int = 64
    """Clips beyond the window re-read per camera on partition assignment to rebuild alert state."""

    def validate(self) -> None:
        _choice("engine.backend", self.backend, ("auto", "torch", "onnxruntime", "tensorrt"))
        _positive("engine.max_batch", self.max_batch)
        _positive("engine.max_wait_ms", self.max_wait_ms, allow_zero=True)
        _positive("engine.threads", self.threads, allow_zero=True)
        _positive("engine.stall_timeout", self.stall_timeout, allow_zero=True)
        _positive("engine.rebuild_history", self.rebuild_history, allow_zero=True)


@dataclass
class AlertsConfig:
    """Hysteresis alerting per camera, in stream (capture) time so replays are deterministic."""

    thresholds: str = "model"
    """``model``: use the on/off thresholds calibrated at training time and stored in the model
    (99th / 95th percentile of scores on normal training videos) when it has them; ``config``:
    always use ``on``/``off`` below."""
    on: float = 0.6
    off: float = 0.4
    min_duration: float = 1.6
    """Seconds the score must stay above ``on`` before an alert opens."""
    cooldown: float = 5.0
    """Seconds after an alert ends before a new one may open."""
    update_interval: float = 5.0
    """Minimum seconds between ``update`` messages of one alert."""

    def validate(self) -> None:
        if not 0 <= self.off <= self.on <= 1:
            raise ConfigError(f"alerts.off/on: need 0 <= off <= on <= 1 (got off={self.off}, on={self.on})")
        _choice("alerts.thresholds", self.thresholds, ("model", "config"))
        for n in ("min_duration", "cooldown", "update_interval"):
            _positive(f"alerts.{n}", getattr(self, n), allow_zero=True)


@dataclass
class Config:
    transport: str = "bus"
    """``bus`` (in-process, embedded default) or ``kafka``."""
    log_level: str = "INFO"
    max_message_bytes: int = 1_048_576
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def validate(self) -> "Config":
        _choice("transport", self.transport, ("bus", "kafka"))
        _choice("log_level", self.log_level.upper(), ("DEBUG", "INFO", "WARNING", "ERROR"))
        _positive("max_message_bytes", self.max_message_bytes)
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if dataclasses.is_dataclass(sub):
                sub.validate()
        return self

    def redacted(self) -> dict[str, Any]:
        """Dict form safe to log: secrets replaced by ``***``."""
        d = dataclasses.asdict(self)
        for k in KafkaConfig.SECRET_FIELDS:
            if d["kafka"].get(k):
                d["kafka"][k] = "***"
        return d


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)  # type: ignore[misc]
                             if isinstance(f.default_factory, type)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, raw: Any, hint: Any) -> Any:
    """Convert ``raw`` (TOML value or env/CLI string) to the field type ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(name, raw, inner)
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if hint is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if hint is str:
            if not isinstance(raw, (str, int, float)):
                raise ValueError
            return str(raw)
        if origin is list:
            (inner,) = args
            items = raw if isinstance(raw, list) else [s for s in str(raw).split(",") if s.strip()]
            return [_coerce(name, x.strip() if isinstance(x, str) else x, inner) for x in items]
    except (TypeError, ValueError):
        tname = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{name}: expected {tname} (got {raw!r})") from None
    raise ConfigError(f"{name}: unsupported type {hint!r}")


def _apply(cfg: Config, dotted: str, raw: Any) -> None:
    parts = dotted.split(".")
    if len(parts) == 1:
        hints = _hints(Config)
        if parts[0] not in hints or parts[0] in SECTIONS:
            raise ConfigError(f"{dotted}: unknown configuration field")
        setattr(cfg, parts[0], _coerce(dotted, raw, hints[parts[0]]))
        return
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(f"{dotted}: unknown configuration field "
                          f"(sections: {', '.join(SECTIONS)})")
    sec = getattr(cfg, parts[0])
    hints = _hints(type(sec))
    if parts[1] not in hints or parts[1] == "SECRET_FIELDS":
        raise ConfigError(f"{dotted}: unknown configuration field")
    setattr(sec, parts[1], _coerce(dotted, raw, hints[parts[1]]))


NON_CONFIG_ENV = ("FUSEWATCH_CACHE", "FUSEWATCH_SHARED")
"""Environment variables of fusewatch that are not configuration fields (cache root, shared data)."""


def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    top = {n for n in _hints(Config) if n not in SECTIONS}
    for k, v in env.items():
        if not k.startswith("FUSEWATCH_") or k in NON_CONFIG_ENV:
            continue
        rest = k[len("FUSEWATCH_"):].lower()
        if rest in top:
            out.append((rest, v))
            continue
        for sec in sorted(SECTIONS, key=len, reverse=True):
            if rest.startswith(sec + "_"):
                out.append((f"{sec}.{rest[len(sec) + 1:].lstrip('_')}", v))
                break
        else:
            raise ConfigError(f"{k}: unknown configuration variable")
    return out


def load_config(path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Build a validated :class:`Config` from defaults, TOML file, environment and overrides.

    ``overrides`` maps dotted names (``"kafka.bootstrap_servers"``) to values (strings allowed).
    """
    cfg = Config()
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p}: not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p}: invalid TOML ({e})") from None
        for key, val in data.items():
            if isinstance(val, dict):
                for sub, v in val.items():
                    _apply(cfg, f"{key}.{sub}", v)
            else:
                _apply(cfg, key, val)
    for dotted, v in _env_overrides(os.environ if env is None else env):
        _apply(cfg, dotted, v)
    items = overrides.items() if isinstance(overrides, Mapping) else (overrides or [])
    for dotted, v in items:
        if v is not None:
            _apply(cfg, dotted, v)
    return cfg.validate()


def parse_set(values: list[str] | None) -> list[tuple[str, str]]:
    """Parse ``--set section.field=value`` flags."""
    out = []
    for s in values or []:
        if "=" not in s:
            raise ConfigError(f"--set {s}: expected section.field=value")
        k, v = s.split("=", 1)
        out.append((k.strip(), v))
    return out
