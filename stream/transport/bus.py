"""In-process message bus: the embedded default transport (demo, unit tests, no broker).

Semantics mirror Kafka closely enough that the worker and engine code is identical on both:
topics with a fixed number of partitions, key-hash partitioning (one camera → one partition),
append-only logs with offsets, consumer groups with committed offsets and partition assignment
split among a group's members (rebalance on join/leave). Thread-safe; one :class:`InProcessBus`
is shared by all :class:`BusTransport` handles of a process.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict
from typing import Iterable

from .base import DeliveryCallback, RebalanceCallback, Record, TopicPartition, Transport, TransportError, key_bytes


class InProcessBus:
    """Shared state: logs per (topic, partition), committed offsets per group, group members."""

    def __init__(self, partitions: int = 3, max_records_per_partition: int | None = None):
        self.partitions = partitions
        self.max_records = max_records_per_partition
        self._logs: dict[TopicPartition, list[Record]] = {}
        self._base: dict[TopicPartition, int] = defaultdict(int)  # offset of first retained record
        self._committed: dict[tuple[str, TopicPartition], int] = {}
        self._groups: dict[tuple[str, tuple[str, ...]], list[BusTransport]] = defaultdict(list)
        self._lock = threading.Condition()

    # -- topics -------------------------------------------------------------------------------
    def create_topic(self, topic: str, partitions: int | None = None) -> None:
        with self._lock:
            if (topic, 0) in self._logs:
                return
            for p in range(partitions or self.partitions):
                self._logs[(topic, p)] = []

    def partitions_for(self, topic: str) -> list[int]:
        with self._lock:
            if (topic, 0) not in self._logs:
                self.create_topic(topic)
            return sorted(p for (t, p) in self._logs if t == topic)

    @staticmethod
    def partition_for_key(key: bytes | None, n: int, counter: int) -> int:
        """crc32 of the key (stable across processes); round-robin for keyless records."""
        return (zlib.crc32(key) if key is not None else counter) % n

    def append(self, topic: str, key: bytes | None, value: bytes, headers: tuple) -> Record:
        with self._lock:
            parts = self.partitions_for(topic)
            p = self.partition_for_key(key, len(parts), sum(len(v) for v in self._logs.values()))
            log = self._logs[(topic, p)]
            off = self._base[(topic, p)] + len(log)
            rec = Record(topic, p, off, key, bytes(value), int(time.time() * 1000), headers)
            log.append(rec)
            if self.max_records and len(log) > self.max_records:
                drop = len(log) - self.max_records
                del log[:drop]
                self._base[(topic, p)] += drop
            self._lock.notify_all()
            return rec

    def read(self, tp: TopicPartition, offset: int, n: int) -> list[Record]:
        with self._lock:
            log = self._logs.get(tp, [])
            i = max(0, offset - self._base[tp])
            return log[i : i + n]

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        with self._lock:
            b = self._base[tp]
            return b, b + len(self._logs.get(tp, []))

    # -- groups -------------------------------------------------------------------------------
    def join(self, member: BusTransport) -> None:
        with self._lock:
            self._groups[member._gkey].append(member)
            self._rebalance(member._gkey)

    def leave(self, member: BusTransport) -> None:
        with self._lock:
            members = self._groups.get(member._gkey, [])
            if member in members:
                members.remove(member)
                self._rebalance(member._gkey)

    def _rebalance(self, gkey: tuple[str, tuple[str, ...]]) -> None:
        members = self._groups[gkey]
        tps = sorted(tp for t in gkey[1] for tp in ((t, p) for p in self.partitions_for(t)))
        for i, m in enumerate(members):
            m._pending_assignment = {tp for j, tp in enumerate(tps) if j % len(members) == i}

    def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            for tp, off in offsets.items():
                self._committed[(group, tp)] = off

    def committed(self, group: str, tp: TopicPartition) -> int | None:
        with self._lock:
            return self._committed.get((group, tp))

    def wait(self, timeout: float) -> None:
        with self._lock:
            self._lock.wait(timeout)


_DEFAULT_BUS: InProcessBus | None = None


def default_bus() -> InProcessBus:
    """The process-wide bus shared by every BusTransport created without an explicit bus."""
    global _DEFAULT_BUS
    if _DEFAULT_BUS is None:
        _DEFAULT_BUS = InProcessBus()
    return _DEFAULT_BUS


class BusTransport(Transport):
    """A client handle on an :class:`InProcessBus` (producer and/or consumer)."""

    def __init__(self, bus: InProcessBus | None = None):
        self.bus = bus or default_bus()
        self._group: str | None = None
        self._gkey: tuple[str, tuple[str, ...]] = ("", ())
        self._assignment: set[TopicPartition] = set()
        self._pending_assignment: set[TopicPartition] | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._from_beginning = True
        self._closed = False
        self._rr = 0

    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]] | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        if self._closed:
            raise TransportError("transport is closed")
        self.bus.append(topic, key_bytes(key), value, tuple(headers or ()))
        if on_delivery is not None:
            on_delivery(None)  # appended: acknowledged

    def flush(self, timeout: float | None = None) -> None:
        return None  # appends are synchronous

    def subscribe(
        self,
        topics: list[str],
        group_id: str,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        from_beginning: bool = True,
        callbacks_use_transport: bool = True,
    ) -> None:
        self._group = group_id
        self._gkey = (group_id, tuple(sorted(topics)))
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._from_beginning = from_beginning
        self.bus.join(self)

    def _apply_rebalance(self) -> None:
        new = self._pending_assignment
        if new is None:
            return
        self._pending_assignment = None
        revoked = self._assignment - new
        added = new - self._assignment
        if revoked and self._on_revoke:
            self._on_revoke(revoked)
        for tp in revoked:
            self._positions.pop(tp, None)
        self._assignment = set(new)
        for tp in added:
            c = self.bus.committed(self._group or "", tp)
            lo, hi = self.bus.bounds(tp)
            self._positions[tp] = c if c is not None else (lo if self._from_beginning else hi)
        if added and self._on_assign:
            self._on_assign(added)

    def poll(self, max_records: int = 500, timeout: float = 0.1) -> list[Record]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self._apply_rebalance()
            out: list[Record] = []
            tps = sorted(self._assignment)
            if tps:
                start = self._rr % len(tps)
                self._rr += 1
                for tp in tps[start:] + tps[:start]:
                    if len(out) >= max_records:
                        break
                    recs = self.bus.read(tp, self._positions[tp], max_records - len(out))
                    if recs:
                        self._positions[tp] = recs[-1].offset + 1
                        out.extend(recs)
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            self.bus.wait(min(left, 0.05))

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._group is None:
            raise TransportError("commit() before subscribe()")
        self.bus.commit(self._group, {tp: o for tp, o in offsets.items() if tp in self._assignment})

    def committed(self, tp: TopicPartition) -> int | None:
        return self.bus.committed(self._group or "", tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self._assignment:
            raise TransportError(f"seek on unassigned partition {tp}")
        self._positions[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

    def beginning_offset(self, tp: TopicPartition) -> int:
        return self.bus.bounds(tp)[0]

    def end_offset(self, tp: TopicPartition) -> int:
        return self.bus.bounds(tp)[1]

    def partition_of(self, key: bytes, partitions: int) -> int | None:
        return InProcessBus.partition_for_key(key, partitions, 0)

    def partition_count(self, topic: str) -> int:
        return len(self.bus.partitions_for(topic))

    def assignment(self) -> set[TopicPartition]:
        self._apply_rebalance()
        return set(self._assignment)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._group is not None:
                self.bus.leave(self)
