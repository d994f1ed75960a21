"""Kafka admin client construction (bounded by the pre-flight check)."""

from __future__ import annotations

import kafka.errors as kerr
from kafka import KafkaAdminClient

from fusewatch.stream.config import Config

from .client_config import _describe, _redact_secrets, _wrap, client_config
from .preflight import check_broker


def admin_client(cfg: Config) -> KafkaAdminClient:
    """A KafkaAdminClient for ``cfg`` after a bounded :func:`check_broker`."""
    _redact_secrets(cfg)
    check_broker(cfg)
    try:
        return KafkaAdminClient(
            **client_config(cfg, KafkaAdminClient, bootstrap_timeout_ms=int(cfg.kafka.connect_timeout_s * 1000))
        )
    except kerr.KafkaError as e:
        raise _wrap(e, f"admin client for {_describe(cfg)}") from None
