"""The one configuration schema of fusewatch, validated by pydantic, read by pydantic-settings.

Sources, in increasing precedence: schema defaults (:mod:`.sections`, defined once) < TOML file
(``--config F``) < ``FUSEWATCH_<SECTION>_<FIELD>`` environment variables (e.g.
``FUSEWATCH_KAFKA_BOOTSTRAP_SERVERS``, ``FUSEWATCH_ENGINE_MAX_BATCH``; top-level fields:
``FUSEWATCH_TRANSPORT``; read by pydantic-settings' ``EnvSettingsSource`` with a single ``_``
between section and field) < CLI flags (``--set section.field=value`` for every field, plus
per-command shortcuts).

Invalid values raise :class:`ConfigError` with one line naming the field
(``alerts.on: expected float (got 'high')``); the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, Field, ValidationError
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from fusewatch.errors import ConfigError
from fusewatch.stream.config.errors import config_error
from fusewatch.stream.config.evidence import EvidenceConfig, HealthConfig
from fusewatch.stream.config.notify import MqttConfig, NotifyConfig, WebhookConfig, secret_values
from fusewatch.stream.config.sections import (
    CACHE_DIR,
    SCHEMA,
    ClipsConfig,
    FeaturesConfig,
    KafkaConfig,
    LogFormat,
    ModelConfig,
    SourceConfig,
    TopicsConfig,
    TrainConfig,
    WorkerConfig,
)
from fusewatch.stream.config.serving import CORE_SECTIONS, AlertsConfig, EngineConfig
from fusewatch.stream.config.ui import UiConfig, Zones

__all__ = [
    "CACHE_DIR",
    "SECTIONS",
    "AlertsConfig",
    "ClipsConfig",
    "Config",
    "ConfigError",
    "EngineConfig",
    "FeaturesConfig",
    "KafkaConfig",
    "ModelConfig",
    "SourceConfig",
    "TopicsConfig",
    "TrainConfig",
    "WorkerConfig",
    "NotifyConfig",
    "MqttConfig",
    "WebhookConfig",
    "EvidenceConfig",
    "HealthConfig",
    "UiConfig",
    "load_config",
    "parse_set",
    "NON_CONFIG_ENV",
]

SECTIONS: dict[str, type] = {
    **CORE_SECTIONS,
    **{c.SECTION: c for c in (NotifyConfig, MqttConfig, WebhookConfig, EvidenceConfig, HealthConfig, UiConfig)},
}
"""Section name → class, in ``fusewatch.toml`` order."""

ENV_PREFIX = "FUSEWATCH_"
NON_CONFIG_ENV = ("FUSEWATCH_CACHE", "FUSEWATCH_SHARED")
"""Environment variables of fusewatch that are not configuration fields (cache root, shared data)."""

LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR"],
    BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v),
]


class Config(BaseModel):
    """All settings: top-level fields plus one attribute per section (``cfg.kafka.bootstrap_servers``)."""

    model_config = SCHEMA

    transport: Literal["bus", "kafka"] = "bus"
    """``bus`` (in-process, embedded default) or ``kafka``."""
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    """``text`` lines or ``json`` lines, for every command's ``fusewatch`` logs."""
    max_message_bytes: int = Field(1_048_576, ge=1024, le=256 * 1024 * 1024)
    """Decoder limit (1 KiB..256 MiB); larger messages go to the dead-letter topic."""
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    clips: ClipsConfig = Field(default_factory=ClipsConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    zones: Zones = Field(default_factory=dict)
    """``[zones]``: camera → allowed polygons (normalised ``[x, y]``); alerts outside them are dropped
    where the model gives an anomaly map (:mod:`fusewatch.engines.serving.zones`)."""

    def validate(self) -> Config:  # type: ignore[override]
        """Re-validate after attribute assignment (``cfg.train.epochs = 3``); raise :class:`ConfigError`."""
        try:
            type(self).model_validate(self.model_dump())
        except ValidationError as e:
            raise config_error(e) from None
        return self

    @property
    def effective_log_format(self) -> str:
        """``worker.log_format`` when set (older name), else ``log_format``."""
        return self.worker.log_format or self.log_format

    def secrets(self) -> list[str]:
        """Plain values of every configured secret (for log redaction)."""
        return self.kafka.secrets() + secret_values(self.mqtt, self.webhook, self.ui)

    def redacted(self) -> dict[str, Any]:
        """Dict form safe to log: secrets replaced by ``***``."""
        d = self.model_dump(mode="json")
        for sec in ("kafka", "mqtt", "webhook", "ui"):
            for k in getattr(self, sec).SECRET_FIELDS:
                if d[sec].get(k):
                    d[sec][k] = "***"
        return d


TOP_LEVEL = tuple(n for n in Config.model_fields if n not in SECTIONS)


def _field_names(section: str) -> tuple[str, ...]:
    return tuple(SECTIONS[section].__pydantic_fields__)  # type: ignore[attr-defined]


class _Env(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (``os.environ`` by default):
    ``FUSEWATCH_<SECTION>_<FIELD>`` with one ``_`` (split once) between section and field."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(
            Config,  # type: ignore[arg-type]  # a BaseModel works: only its fields are read
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter="_",
            env_nested_max_split=1,
            env_ignore_empty=False,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)


def _check_env_names(env: Mapping[str, str]) -> None:
    """pydantic-settings ignores unknown variables; a typo'd ``FUSEWATCH_*`` must not be silent."""
    for k in env:
        if not k.upper().startswith(ENV_PREFIX) or k.upper() in NON_CONFIG_ENV:
            continue
        rest = k[len(ENV_PREFIX) :].lower()
        sec, _, name = rest.partition("_")
        if rest in TOP_LEVEL or (sec in SECTIONS and name in _field_names(sec)):
            continue
        raise ConfigError(f"{k}: unknown configuration variable")


def _env_values(env: Mapping[str, str]) -> dict[str, Any]:
    _check_env_names(env)
    try:
        return _Env(env)()
    except Exception as e:  # noqa: BLE001 - SettingsError (bad JSON etc.): name the variable, not a traceback
        raise ConfigError(f"environment: {str(e).splitlines()[0]}") from None


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {p}: is a directory (expected a TOML file)") from None
    except PermissionError:
        raise ConfigError(f"config file {p}: permission denied") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p}: not a text file") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: cannot read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: invalid TOML ({e})") from None


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    """``"kafka.client_id", v`` → ``{"kafka": {"client_id": v}}``; unknown names are errors."""
    parts = dotted.strip().split(".")
    if len(parts) == 1 and parts[0] in TOP_LEVEL:
        return {parts[0]: value}
    if len(parts) == 2 and parts[0] in SECTIONS:
        if parts[1] not in _field_names(parts[0]):
            raise ConfigError(f"{dotted}: unknown configuration field")
        return {parts[0]: {parts[1]: value}}
    raise ConfigError(f"{dotted}: unknown configuration field (sections: {', '.join(SECTIONS)})")


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Two-level merge: ``top`` wins field by field inside sections."""
    out = dict(base)
    for k, v in top.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build a validated :class:`Config` from defaults, TOML file, environment and overrides.

    ``overrides`` maps dotted names (``"kafka.bootstrap_servers"``) to values (strings allowed);
    ``None`` values are skipped. ``env`` replaces ``os.environ`` (tests).
    """
    data = _read_toml(path) if path else {}
    data = _merge(data, _env_values(os.environ if env is None else env))
    items = overrides.items() if isinstance(overrides, Mapping) else (overrides or [])
    for dotted, v in items:
        if v is not None:
            data = _merge(data, _nest(dotted, v))
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise config_error(e) from None


_NAME = re.compile(r"[A-Za-z0-9_.]*")


def parse_set(values: list[str] | None) -> list[tuple[str, str]]:
    """Parse ``--set section.field=value`` flags. A malformed flag is reported by its name part
    only: ``--set kafka.sasl_plain_password:SECRET`` must not echo the secret."""
    out = []
    for s in values or []:
        if "=" not in s:
            name = _NAME.match(s).group(0)  # type: ignore[union-attr]
            shown = name + ("..." if len(name) < len(s) else "")
            raise ConfigError(f"--set {shown}: expected SECTION.FIELD=VALUE")
        k, v = s.split("=", 1)
        out.append((k.strip(), v))
    return out
