"""Transport interface: keyed produce, batched poll, manual commit, seek.

Two implementations share it: :mod:`fusewatch.stream.transport.bus` (in-process, the embedded default) and
:mod:`fusewatch.stream.transport.kafka` (kafka-python against a real Apache Kafka broker).

Offsets follow Kafka's convention: ``commit({tp: n})`` stores *n* = the offset of the next record to
read, i.e. last processed offset + 1.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Iterable

from fusewatch.errors import DeliveryError, TransportError  # noqa: F401 - re-exported

TopicPartition = tuple[str, int]
"""(topic, partition) pair."""


class RecordTooLargeError(DeliveryError):
    """A record exceeds a size limit (ours or the broker's): it can never be delivered as is."""


@dataclass(frozen=True)
class Record:
    """One consumed message.

    ``timestamp_ms`` is the broker/bus append time (ms since epoch); ``headers`` is a tuple of
    ``(name, bytes)`` pairs.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


RebalanceCallback = Callable[[set[TopicPartition]], None]

DeliveryCallback = Callable[[BaseException | None], None]
"""Called once per produced record: ``None`` when acknowledged, the final error (a
:class:`DeliveryError`) when the record is lost. May run on a transport thread."""


class Transport(abc.ABC):
    """Minimal pub/sub contract used by workers and the engine.

    Producer side: :meth:`produce` (async, keyed; same key -> same partition), :meth:`flush`
    (blocks until every pending record is acknowledged or raises :class:`DeliveryError`).
    Consumer side: :meth:`subscribe` with a consumer group, :meth:`poll` batches,
    :meth:`commit` after processing, :meth:`seek`, :meth:`committed`, :meth:`beginning_offset`,
    :meth:`end_offset`.
    """

    # -- producer -----------------------------------------------------------------------------
    @abc.abstractmethod
    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]] | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Queue one record; ``on_delivery`` learns its outcome (acknowledged / finally lost).

        A record that can never be delivered (e.g. :class:`RecordTooLargeError`) raises here and
        ``on_delivery`` is not called. Records lost later are reported by :meth:`flush`."""

    @abc.abstractmethod
    def flush(self, timeout: float | None = None) -> None:
        """Wait until all queued records are acknowledged or finally lost (``timeout`` None: as long
        as the transport's delivery timeout allows); raise :class:`DeliveryError` naming how many
        were lost or are still unacknowledged."""

    # -- consumer -----------------------------------------------------------------------------
    @abc.abstractmethod
    def subscribe(
        self,
        topics: list[str],
        group_id: str,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        from_beginning: bool = True,
        callbacks_use_transport: bool = True,
    ) -> None:
        """Join ``group_id`` on ``topics``. Callbacks get the set of (topic, partition) changed.

        ``callbacks_use_transport=False`` promises that the callbacks only record state (no
        commit/seek/offset calls), which lets a transport run them inline on its I/O thread."""

    @abc.abstractmethod
    def poll(self, max_records: int = 500, timeout: float = 0.1) -> list[Record]:
        """Return up to ``max_records`` records (possibly none) within ``timeout`` seconds."""

    @abc.abstractmethod
    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit next-offsets-to-read for the group (synchronous)."""

    @abc.abstractmethod
    def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed next offset for ``tp`` or None."""

    @abc.abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Make the next poll of ``tp`` start at ``offset``."""

    @abc.abstractmethod
    def position(self, tp: TopicPartition) -> int:
        """Offset of the next record poll will return for ``tp``."""

    @abc.abstractmethod
    def beginning_offset(self, tp: TopicPartition) -> int:
        """Earliest available offset of ``tp``."""

    @abc.abstractmethod
    def end_offset(self, tp: TopicPartition) -> int:
        """Offset one past the last record of ``tp`` (high watermark)."""

    @abc.abstractmethod
    def assignment(self) -> set[TopicPartition]:
        """Partitions currently assigned to this consumer."""

    def partition_of(self, key: bytes, partitions: int) -> int | None:
        """The partition this transport's producer puts ``key`` on, among ``partitions``
        (None: unknown). Consumers use it to spot records of foreign producers with another
        partitioner (a camera split over two partitions loses its ordering)."""
        return None

    def partition_count(self, topic: str) -> int:
        """Number of partitions of ``topic`` (0: unknown)."""
        return 0

    @abc.abstractmethod
    def close(self) -> None:
        """Flush producer, leave the group, release resources. Idempotent."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_bytes(key: str | bytes | None) -> bytes | None:
    """Normalise a record key (camera id) to bytes."""
    if key is None or isinstance(key, bytes):
        return key
    return key.encode("utf-8")
