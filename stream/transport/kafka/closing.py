"""Closing kafka-python clients so that their I/O threads always stop.

kafka-python 3.0.x can leave a client's background thread running after ``close()`` raised:

- ``KafkaProducer.close(timeout)`` flushes first and raises ``KafkaTimeoutError`` if records are
  still pending (brokers gone), before it tells its sender thread to stop;
- ``KafkaConsumer.close()`` raises when a rebalance listener fails during the close-time revoke,
  before it closes its network client.

Such a thread lives until the process exits, reconnecting to brokers that may be gone for good
(log noise, CPU, sockets): a worker that renews its producer after each outage would collect one
per outage. The helpers below close normally and, when that fails, stop the thread through the
client's own shutdown hooks (``Sender.force_close``, the network client's ``close``).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("fusewatch.stream.transport.kafka")


def close_producer(p: Any, timeout_s: float, what: str = "Kafka producer") -> None:
    """Close producer ``p`` within about ``timeout_s`` seconds; records still pending after that
    are abandoned (the caller's delivery bookkeeping reports them). Never raises."""
    try:
        p.close(timeout=max(0.0, timeout_s))
    except Exception as e:  # noqa: BLE001 - closing: report, then make sure the thread stops
        log.warning("closing %s: %s: %s", what, type(e).__name__, e)
    sender = getattr(p, "_sender", None)
    if sender is not None and sender.is_alive():
        try:
            sender.force_close()
            sender.join(max(1.0, timeout_s))
        except Exception as e:  # noqa: BLE001
            log.warning("stopping %s I/O thread: %s: %s", what, type(e).__name__, e)
        if sender.is_alive():
            log.warning("%s I/O thread still running after close", what)


def close_consumer(c: Any, timeout_ms: int, what: str = "Kafka consumer") -> None:
    """Close consumer ``c`` (leave the group, no auto-commit) within about ``timeout_ms``; if that
    fails part-way, close its network client so its I/O thread stops. Never raises."""
    try:
        c.close(autocommit=False, timeout_ms=timeout_ms)
        return
    except Exception as e:  # noqa: BLE001 - closing: report, then make sure the thread stops
        log.warning("closing %s: %s: %s", what, type(e).__name__, e)
    client = getattr(c, "_client", None)
    if client is not None:
        try:
            client.close()
        except Exception as e:  # noqa: BLE001
            log.warning("stopping %s I/O thread: %s: %s", what, type(e).__name__, e)
