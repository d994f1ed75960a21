"""kafka-python client settings from the fusewatch config, error wrapping, and secret redaction.

Every ``cfg.kafka.client_kwargs()`` setting (security protocol, SASL, TLS, client id, compression,
request timeout) is passed straight through, filtered to what each client class accepts. Secrets
never reach log records: :func:`_redact_secrets` installs a filter on kafka-python's loggers.
"""

from __future__ import annotations

import logging
from typing import Any

import kafka.errors as kerr

from fusewatch.stream.config import Config
from fusewatch.stream.transport.base import TransportError

_RECORD_OVERHEAD = 65536
"""Bytes allowed on top of ``cfg.max_message_bytes`` for batch/record headers."""

_RECONNECT = {"reconnect_backoff_max_ms": 1000}
"""Java client default (kafka-python's is 30 s): reconnect within ~1 s once a restarted broker is back."""


from fusewatch.errors import AuthenticationError, CommitFailedError  # noqa: E402,F401 - re-exported

# ---------------------------------------------------------------------------------------------
# configuration helpers


def client_config(cfg: Config, cls: type, **extra: Any) -> dict[str, Any]:
    """kafka-python kwargs for ``cls`` (KafkaProducer/KafkaConsumer/KafkaAdminClient): every
    ``cfg.kafka`` setting plus ``extra``, keeping only the keys ``cls`` accepts."""
    kw = {**cfg.kafka.client_kwargs(), **extra}
    allowed = getattr(cls, "DEFAULT_CONFIG", None)
    if allowed is not None:
        kw = {k: v for k, v in kw.items() if k in allowed}
    return kw


def _describe(cfg: Config) -> str:
    k = cfg.kafka
    s = f"{k.bootstrap_servers} ({k.security_protocol}"
    if k.security_protocol.startswith("SASL"):
        s += f", {k.sasl_mechanism or 'PLAIN'} user {k.sasl_plain_username!r}"
    return s + ")"


class _RedactFilter(logging.Filter):
    """Replaces configured secrets in kafka-python log records (its DEBUG logs print SASL tokens)."""

    def __init__(self) -> None:
        super().__init__("fusewatch-redact")
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not ours to fix
            return True
        red = msg
        for s in self.secrets:
            red = red.replace(s, "***")
        if red != msg:
            record.msg, record.args = red, ()
        return True


_REDACT = _RedactFilter()
_REDACT_LOGGERS = (
    "kafka",
    "kafka.protocol.parser",
    "kafka.net.connection",
    "kafka.net.transport",
    "kafka.net.manager",
    "kafka.net.sasl.plain",
    "kafka.conn",
    "kafka.client_async",
    "kafka.producer.kafka",
    "kafka.consumer.group",
    "kafka.admin.client",
)


def _redact_secrets(cfg: Config) -> None:
    """Install the redaction filter for cfg's secrets on kafka-python's loggers (idempotent)."""
    for val in cfg.kafka.secrets():
        _REDACT.secrets.add(val)
        _REDACT.secrets.add(repr(val.encode())[2:-1])  # as it appears inside a bytes repr
    if _REDACT.secrets:
        names = set(_REDACT_LOGGERS) | {
            n for n in logging.root.manager.loggerDict if n == "kafka" or n.startswith("kafka.")
        }
        for name in sorted(names):
            lg = logging.getLogger(name)
            if _REDACT not in lg.filters:
                lg.addFilter(_REDACT)


def _wrap(e: BaseException, what: str) -> TransportError:
    if isinstance(e, TransportError):
        return e
    name = type(e).__name__
    text = str(e) if str(e) and str(e) != name else ""
    if isinstance(e, (kerr.SaslAuthenticationFailedError, kerr.UnsupportedSaslMechanismError)):
        return AuthenticationError(f"Kafka authentication failed: {what}: {name} {text}".strip())
    if isinstance(e, kerr.CommitFailedError):
        return CommitFailedError(f"{what}: {name} {text}".strip())
    return TransportError(f"{what}: {name} {text}".strip())
