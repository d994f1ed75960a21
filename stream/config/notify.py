"""Configuration sections of ``fusewatch notify``: ``[notify]``, ``[mqtt]``, ``[webhook]``.

Part of the one schema (:mod:`fusewatch.stream.config`: same loading order, ``--set``, environment
variables ``FUSEWATCH_MQTT_HOST`` …); secrets are ``SecretStr`` like Kafka's password.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr, model_validator
from pydantic.dataclasses import dataclass

from fusewatch.stream.config.sections import SCHEMA, Opt, Port, StrList, _rng, _Section


@dataclass(config=SCHEMA)
class NotifyConfig(_Section):
    """``fusewatch notify``: alerts topic → every configured sink, offsets committed after delivery."""

    SECTION: ClassVar[str] = "notify"

    group_id: str = Field(default="fusewatch-notify", min_length=1)
    max_batch: int = _rng(100, ge=1, le=100_000)
    retry_initial: float = _rng(0.5, gt=0, le=3600)
    """Seconds before re-reading records a sink could not take (MQTT broker down), doubled per try."""
    retry_max: float = _rng(30.0, gt=0, le=86400)


@dataclass(config=SCHEMA)
class MqttConfig(_Section):
    """MQTT sink (paho-mqtt, MQTT 3.1.1, QoS 1); disabled while ``host`` is empty."""

    SECTION: ClassVar[str] = "mqtt"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password",)

    host: str = ""
    port: Port = 1883
    topic_prefix: str = "fusewatch"
    client_id: str = Field(default="fusewatch-notify", min_length=1)
    username: Annotated[str | None, Opt] = None
    password: Annotated[SecretStr | None, Opt] = None
    tls_cafile: Annotated[str | None, Opt] = None
    """CA bundle: connect with TLS (port 8883 usually)."""
    keepalive: int = _rng(30, ge=1, le=86400)
    publish_timeout: float = _rng(10.0, gt=0, le=3600)
    """Seconds to wait for the broker's PUBACK before the batch is retried."""

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.port < 1:
            raise ValueError(f"mqtt.port: must be 1..65535 (got {self.port})")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#\0"):
            raise ValueError(f"mqtt.topic_prefix: must be non-empty without + # or NUL (got {self.topic_prefix!r})")
        return self

    def password_value(self) -> str | None:
        """The plain password, for the MQTT client only."""
        return self.password.get_secret_value() if self.password else None


@dataclass(config=SCHEMA)
class WebhookConfig(_Section):
    """HTTP webhook sink: POST of the alert record, HMAC-SHA256 signed; disabled while ``urls`` is empty."""

    SECTION: ClassVar[str] = "webhook"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("secret",)

    urls: StrList = Field(default_factory=list)
    secret: Annotated[SecretStr | None, Opt] = None
    """HMAC-SHA256 key (required with ``urls``)."""
    retries: int = _rng(5, ge=0, le=1000)
    """Attempts after the first one before the record goes to ``dead_letter_file``."""
    backoff_initial: float = _rng(0.5, ge=0, le=3600)
    backoff_max: float = _rng(30.0, ge=0, le=86400)
    timeout: float = _rng(10.0, gt=0, le=3600)
    dead_letter_file: str = Field(default="~/.cache/fusewatch/notify/webhook-dead-letters.jsonl", min_length=1)

    @model_validator(mode="after")
    def _check(self) -> WebhookConfig:
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"webhook.urls: {u!r} is not an http(s) URL")
        if self.urls and not self.secret:
            raise ValueError("webhook.secret: required when webhook.urls is set (receivers verify the signature)")
        return self

    def secret_value(self) -> str:
        """The plain HMAC key, for signing only."""
        return self.secret.get_secret_value() if self.secret else ""


def secret_values(*sections: Any) -> list[str]:
    """Plain values of the set secret fields of ``sections`` (for log redaction)."""
    out = []
    for s in sections:
        for n in s.SECRET_FIELDS:
            v = getattr(s, n)
            if isinstance(v, SecretStr) and v.get_secret_value():
                out.append(v.get_secret_value())
    return out
