"""Configuration sections of ``fusewatch notify``: ``[notify]``, ``[mqtt]``, ``[webhook]``.

Part of the one schema of :mod:`fusewatch.stream.config` (same loading order, ``--set``, environment
variables ``FUSEWATCH_MQTT_HOST`` …); kept in its own module so that config.py stays small.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field


class SinkConfigError(ValueError):
    """A bad ``notify``/``mqtt``/``webhook`` value: one line naming the field (the CLI exits 2).
    (Not :class:`~fusewatch.stream.config.ConfigError` itself: config.py imports this module.)"""


def _err(msg: str) -> Exception:
    return SinkConfigError(msg)


def _pos(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise _err(f"{name}: must be {'>= 0' if allow_zero else '> 0'} (got {value!r})")


@dataclass
class NotifyConfig:
    """``fusewatch notify``: alerts topic → every configured sink, offsets committed after delivery."""

    group_id: str = "fusewatch-notify"
    max_batch: int = 100
    retry_initial: float = 0.5
    """Seconds before re-reading records a sink could not take (MQTT broker down), doubled per try."""
    retry_max: float = 30.0

    def validate(self) -> None:
        if not self.group_id:
            raise _err("notify.group_id: must not be empty")
        _pos("notify.max_batch", self.max_batch)
        _pos("notify.retry_initial", self.retry_initial)
        _pos("notify.retry_max", self.retry_max)


@dataclass
class MqttConfig:
    """MQTT sink (paho-mqtt, MQTT 3.1.1, QoS 1); disabled while ``host`` is empty."""

    host: str = ""
    port: int = 1883
    topic_prefix: str = "fusewatch"
    client_id: str = "fusewatch-notify"
    username: str | None = None
    password: str | None = None
    tls_cafile: str | None = None
    """CA bundle: connect with TLS (port 8883 usually)."""
    keepalive: int = 30
    publish_timeout: float = 10.0
    """Seconds to wait for the broker's PUBACK before the batch is retried."""

    SECRET_FIELDS: typing.ClassVar[tuple[str, ...]] = ("password",)

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise _err(f"mqtt.port: must be 1..65535 (got {self.port})")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#\0"):
            raise _err(f"mqtt.topic_prefix: must be non-empty without + # or NUL (got {self.topic_prefix!r})")
        _pos("mqtt.keepalive", self.keepalive)
        _pos("mqtt.publish_timeout", self.publish_timeout)


@dataclass
class WebhookConfig:
    """HTTP webhook sink: POST of the alert record, HMAC-SHA256 signed; disabled while ``urls`` is empty."""

    urls: list[str] = field(default_factory=list)
    secret: str | None = None
    """HMAC-SHA256 key (required with ``urls``)."""
    retries: int = 5
    """Attempts after the first one before the record goes to ``dead_letter_file``."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 10.0
    dead_letter_file: str = "~/.cache/fusewatch/notify/webhook-dead-letters.jsonl"

    SECRET_FIELDS: typing.ClassVar[tuple[str, ...]] = ("secret",)

    def validate(self) -> None:
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise _err(f"webhook.urls: {u!r} is not an http(s) URL")
        if self.urls and not self.secret:
            raise _err("webhook.secret: required when webhook.urls is set (receivers verify the signature)")
        _pos("webhook.retries", self.retries, allow_zero=True)
        _pos("webhook.backoff_initial", self.backoff_initial, allow_zero=True)
        _pos("webhook.backoff_max", self.backoff_max, allow_zero=True)
        _pos("webhook.timeout", self.timeout)
        if not self.dead_letter_file:
            raise _err("webhook.dead_letter_file: must not be empty")
