"""Kafka transport package (being split by concern; see the modules)."""
from .transport import (_RECORD_OVERHEAD, AuthenticationError, CommitFailedError, KafkaTransport, _redact_secrets,
                        _wrap, admin_client, check_broker, client_config)

__all__ = ["KafkaTransport", "AuthenticationError", "CommitFailedError", "check_broker",
           "client_config", "admin_client", "_RECORD_OVERHEAD", "_redact_secrets", "_wrap"]
