"""Transports: :class:`BusTransport` (in-process, default) and ``KafkaTransport`` (real broker)."""

from __future__ import annotations

from .base import DeliveryError, Record, TopicPartition, Transport, TransportError
from .bus import BusTransport, InProcessBus, default_bus

__all__ = [
    "DeliveryError",
    "Record",
    "TopicPartition",
    "Transport",
    "TransportError",
    "BusTransport",
    "InProcessBus",
    "default_bus",
    "make_transport",
]


def make_transport(
    cfg, group_id: str | None = None, bus: InProcessBus | None = None, consume: bool = True, produce: bool = True
) -> Transport:
    """Build the transport selected by ``cfg.transport`` (``bus`` or ``kafka``)."""
    if cfg.transport == "kafka":
        from .kafka import KafkaTransport  # kafka-python imported only when used

        return KafkaTransport(cfg, group_id=group_id, consume=consume, produce=produce)
    return BusTransport(bus)
