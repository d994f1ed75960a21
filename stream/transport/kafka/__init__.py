"""Kafka transport (kafka-python 3.x against Apache Kafka 4.x), split by concern:

* :mod:`.client_config` — client settings from the config, error wrapping, secret redaction;
* :mod:`.preflight` — raw-protocol broker check (:func:`check_broker`) bounding start-up;
* :mod:`.admin` — :func:`admin_client`;
* :mod:`.group_join` — the kafka-python rebalance-listener and group-join-race workarounds;
* :mod:`.delivery` — producer delivery tracking (retry until ``kafka.delivery_timeout_s``, lost records);
* :mod:`.transport` — :class:`KafkaTransport`.
"""

from __future__ import annotations

from .admin import admin_client
from .client_config import (
    _RECORD_OVERHEAD,
    AuthenticationError,
    CommitFailedError,
    _redact_secrets,
    _wrap,
    client_config,
)
from .preflight import check_broker
from .transport import KafkaTransport

__all__ = [
    "KafkaTransport",
    "AuthenticationError",
    "CommitFailedError",
    "check_broker",
    "client_config",
    "admin_client",
    "_RECORD_OVERHEAD",
    "_redact_secrets",
    "_wrap",
]
