"""Kafka transport: kafka-python 3.x against a real Apache Kafka (4.x) broker.

* Producer: idempotent, ``acks=all``, record key = camera id (the default murmur2 partitioner keeps
  one camera in one partition, so per-camera order is preserved). Every record is tracked until it
  is acknowledged or finally lost (:mod:`.delivery`): retriable failures are retried while
  ``kafka.delivery_timeout_s`` allows, ``on_delivery`` learns each record's outcome, and
  :meth:`KafkaTransport.flush` raises :class:`~fusewatch.stream.transport.base.DeliveryError` for
  any record lost or not acknowledged in time — errors are never swallowed.
* Consumer: consumer group, ``enable_auto_commit=False``, synchronous :meth:`commit` of
  next-offsets; rebalance callbacks run on a helper thread while kafka-python's IO loop waits
  (:mod:`.group_join`), so they may call :meth:`commit`, :meth:`seek`, :meth:`end_offset` ...
* Client settings: :mod:`.client_config`; start-up bounded by the raw-protocol pre-flight check
  :func:`~.preflight.check_broker` (``cfg.kafka.connect_timeout_s``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

import kafka.errors as kerr
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as _KTP

from fusewatch.stream.config import Config
from fusewatch.stream.transport.base import (
    DeliveryCallback,
    DeliveryError,
    RebalanceCallback,
    Record,
    TopicPartition,
    Transport,
    TransportError,
    key_bytes,
)

from .client_config import _RECONNECT, _RECORD_OVERHEAD, _describe, _redact_secrets, _wrap, client_config
from .closing import close_consumer, close_producer
from .delivery import DeliveryTracker, PendingRecord
from .group_join import _Listener, settle_group
from .preflight import check_broker

log = logging.getLogger("fusewatch.stream.transport.kafka")


class KafkaTransport(Transport):
    """:class:`~fusewatch.stream.transport.base.Transport` over Apache Kafka (see module docstring).

    ``group_id``: consumer group used until :meth:`subscribe` names another one (None: no group,
    offsets-only use). ``consume``/``produce``: create only the clients needed. Extra kafka-python
    settings may be given in ``producer_kwargs``/``consumer_kwargs`` (they override ours).
    """

    def __init__(
        self,
        cfg: Config,
        group_id: str | None = None,
        consume: bool = True,
        produce: bool = True,
        *,
        producer_kwargs: dict[str, Any] | None = None,
        consumer_kwargs: dict[str, Any] | None = None,
    ):
        self.cfg = cfg
        k = cfg.kafka
        self._timeout_ms = int(k.connect_timeout_s * 1000)
        self._req_ms = int(k.request_timeout_ms)
        self._producer_kwargs = dict(producer_kwargs or {})
        self._consumer_kwargs = dict(consumer_kwargs or {})
        self._delivery_s = float(k.delivery_timeout_s)
        self.delivery: DeliveryTracker | None = None
        """Producer delivery bookkeeping (counters ``delivered``, ``lost``, ``resent``)."""
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._consume = consume
        self._group_id = group_id
        self._reset = "earliest"
        self._closed = False
        self._closing = False
        """Set by :meth:`close`: no new records from then on (close-time callbacks included)."""
        self._join_ms: int | None = None
        """Bound on awaiting a pending group join (None: the consumer's ``session_timeout_ms``)."""
        self.lost_joins = 0
        """Group joins whose completion kafka-python lost and :func:`.settle_group` redid."""
        _redact_secrets(cfg)
        check_broker(cfg)
        try:
            if produce:
                self._producer = self._new_producer()
                self.delivery = DeliveryTracker(self._send, self._delivery_s, self._too_large)
            if consume:
                self._consumer = self._new_consumer(group_id, self._reset)
        except BaseException as e:
            self._close_clients()
            if isinstance(e, kerr.KafkaError):
                raise _wrap(e, f"cannot start Kafka client for {_describe(cfg)}") from None
            raise

    # -- helpers --------------------------------------------------------------------------------
    def _new_producer(self) -> KafkaProducer:
        linger = int(self._producer_kwargs.get("linger_ms", 5))
        pkw = dict(
            enable_idempotence=True,
            acks="all",
            linger_ms=linger,
            max_block_ms=self._timeout_ms,
            bootstrap_timeout_ms=self._timeout_ms,
            delivery_timeout_ms=max(int(self._delivery_s * 1000), self._req_ms + linger),
            max_request_size=self.cfg.max_message_bytes + _RECORD_OVERHEAD,
            **_RECONNECT,
        )
        pkw.update(self._producer_kwargs)
        return KafkaProducer(**client_config(self.cfg, KafkaProducer, **pkw))

    def _renew_wedged_producer(self) -> None:
        """kafka-python 3.0.x: after a batch expires the idempotent producer resets its producer id
        but never asks for a new one (state stays READY), so it sends nothing ever again. Replace
        such a producer (the expired records were reported as lost by :meth:`flush`)."""
        tm = getattr(self._producer, "_transaction_manager", None)
        if tm is None or tm.has_producer_id():
            return
        try:
            new = self._new_producer()
        except kerr.KafkaError as e:  # brokers still gone: keep it, try again at the next flush
            log.warning("cannot restart the Kafka producer yet: %s", _wrap(e, _describe(self.cfg)))
            return
        old, self._producer = self._producer, new
        close_producer(old, 0.0, "wedged Kafka producer")
        log.warning("Kafka producer restarted after expired records (new producer id)")

    def _new_consumer(self, group_id: str | None, reset: str) -> KafkaConsumer:
        ckw = dict(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=reset,
            bootstrap_timeout_ms=self._timeout_ms,
            max_partition_fetch_bytes=max(1_048_576, self.cfg.max_message_bytes + _RECORD_OVERHEAD),
            **_RECONNECT,
        )
        ckw.update(self._consumer_kwargs)
        return KafkaConsumer(**client_config(self.cfg, KafkaConsumer, **ckw))

    def _need_consumer(self) -> KafkaConsumer:
        if self._closed:
            raise TransportError("KafkaTransport is closed")
        if self._consumer is None:
            raise TransportError("KafkaTransport was created with consume=False")
        return self._consumer

    def _call(self, what: str, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except kerr.KafkaError as e:
            raise _wrap(e, what) from None
        except (ValueError, TypeError, AssertionError) as e:
            raise TransportError(f"{what}: {e}") from None

    # -- producer -------------------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        key: str | bytes | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]] | None = None,
        *,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        if self._closed or self._closing:
            raise TransportError("KafkaTransport is closed")
        if self._producer is None:
            raise TransportError("KafkaTransport was created with produce=False")
        hdrs = [(str(n), bytes(v)) for n, v in headers] if headers else None
        self.delivery.resend_due()
        self.delivery.add(topic, key_bytes(key), bytes(value), hdrs, on_delivery)

    def _send(self, rec: PendingRecord):
        return self._producer.send(rec.topic, value=rec.value, key=rec.key, headers=rec.headers)

    def _too_large(self, rec: PendingRecord, err: BaseException) -> str:
        if isinstance(err, kerr.BrokerResponseError):
            return (
                f"the broker rejected a record to {rec.topic!r} as too large (MESSAGE_TOO_LARGE: over the "
                f"topic config max.message.bytes / broker message.max.bytes; fusewatch creates topics with "
                f"max_message_bytes + {_RECORD_OVERHEAD}); this record: {len(rec.value)} bytes"
            )
        else:
            where = (
                f"the producer limit max_request_size={self.cfg.max_message_bytes + _RECORD_OVERHEAD} "
                f"(max_message_bytes={self.cfg.max_message_bytes} + {_RECORD_OVERHEAD} overhead)"
            )
        return f"record of {len(rec.value)} bytes to {rec.topic!r} exceeds {where}"

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record is acknowledged or finally lost, re-sending retriable failures.

        ``timeout`` None: as long as the records' delivery deadlines (``kafka.delivery_timeout_s``)
        allow, plus one request timeout; records still unacknowledged then are given up as lost.
        Raises :class:`DeliveryError` for records lost since the last flush or still waiting."""
        if self._producer is None:
            return
        tr = self.delivery
        t0 = time.monotonic()
        end = None if timeout is None else t0 + max(0.0, timeout)
        while True:
            tr.resend_due()
            if tr.outstanding() == 0:
                break
            now = time.monotonic()
            limit = end if end is not None else tr.latest_deadline() + self._req_ms / 1000 + 5.0
            if now >= limit:
                if end is None:
                    tr.give_up(
                        f"not acknowledged within kafka.delivery_timeout_s={self._delivery_s:g} "
                        f"by {self.cfg.kafka.bootstrap_servers}"
                    )
                break
            step = min(limit - now, 0.25 if tr.retry_waiting() else 1.0)
            try:
                self._producer.flush(timeout=max(0.01, step))
            except kerr.KafkaTimeoutError:
                pass  # not all acknowledged yet: loop (re-send, deadline checks)
        lost = tr.take_lost()
        waiting = tr.outstanding()
        if lost and not waiting:
            self._renew_wedged_producer()
        if lost or waiting:
            first = lost[0] if lost else None
            detail = f"; first error: {first}" if first is not None else ""
            err = DeliveryError(
                f"{len(lost)} record(s) lost and {waiting} not acknowledged"
                f"{'' if timeout is None else f' within {timeout:g}s'} by {self.cfg.kafka.bootstrap_servers}"
                f"{detail}"
            )
            err.lost, err.pending = len(lost), waiting
            raise err

    # -- consumer -------------------------------------------------------------------------------
    def subscribe(
        self,
        topics: list[str],
        group_id: str,
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        from_beginning: bool = True,
        callbacks_use_transport: bool = True,
    ) -> None:
        if not self._consume:
            raise TransportError("KafkaTransport was created with consume=False")
        reset = "earliest" if from_beginning else "latest"
        if self._consumer is None or group_id != self._group_id or reset != self._reset:
            if self._consumer is not None:  # still reachable: its close-time on_revoke may commit
                close_consumer(self._consumer, self._req_ms)
            self._consumer = None
            self._consumer = self._call(
                f"cannot start Kafka consumer for {_describe(self.cfg)}", self._new_consumer, group_id, reset
            )
            self._group_id, self._reset = group_id, reset
        c = self._consumer
        # Know the topics' partitions before joining: a first assignment made while the topic
        # metadata is still unknown is empty, and the rebalance that follows it can leave
        # kafka-python 3.0 waiting for the coordinator forever (seen with just-created topics).
        deadline = time.monotonic() + self.cfg.kafka.connect_timeout_s
        for t in topics:
            while not self._call(f"partitions of {t!r}", c.partitions_for_topic, t) and time.monotonic() < deadline:
                time.sleep(0.1)
        self._call(
            f"subscribe {topics}",
            c.subscribe,
            topics=list(topics),
            listener=_Listener(c, on_assign, on_revoke, inline=not callbacks_use_transport),
        )

    def _settle_group(self, c: KafkaConsumer) -> None:
        """See :func:`.group_join.settle_group` (the kafka-python join-race workaround)."""
        if settle_group(c, self._group_id, self._join_ms, self._call):
            self.lost_joins += 1

    def poll(self, max_records: int = 500, timeout: float = 0.1) -> list[Record]:
        c = self._need_consumer()
        if not c.subscription() and not c.assignment():
            time.sleep(max(0.0, timeout))
            return []
        self._settle_group(c)
        batches = self._call("poll", c.poll, timeout_ms=int(max(0.0, timeout) * 1000), max_records=max_records)
        out: list[Record] = []
        for recs in batches.values():
            for r in recs:
                out.append(
                    Record(
                        topic=r.topic,
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        value=r.value if r.value is not None else b"",
                        timestamp_ms=int(r.timestamp or 0),
                        headers=tuple((h[0], h[1] if h[1] is not None else b"") for h in (r.headers or ())),
                    )
                )
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        c = self._need_consumer()
        om = {_KTP(t, p): OffsetAndMetadata(int(n), "", -1) for (t, p), n in offsets.items()}
        self._call(
            f"commit {len(om)} offset(s) for group {self._group_id!r}", c.commit, offsets=om, timeout_ms=self._req_ms
        )

    def committed(self, tp: TopicPartition) -> int | None:
        c = self._need_consumer()
        return self._call(f"committed {tp}", c.committed, _KTP(*tp), timeout_ms=self._req_ms)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._call(f"seek {tp} to {offset}", self._need_consumer().seek, _KTP(*tp), int(offset))

    def position(self, tp: TopicPartition) -> int:
        return self._call(f"position {tp}", self._need_consumer().position, _KTP(*tp), timeout_ms=self._req_ms)

    def beginning_offset(self, tp: TopicPartition) -> int:
        ktp = _KTP(*tp)
        return self._call(
            f"beginning offset {tp}", self._need_consumer().beginning_offsets, [ktp], timeout_ms=self._req_ms
        )[ktp]

    def end_offset(self, tp: TopicPartition) -> int:
        ktp = _KTP(*tp)
        return self._call(f"end offset {tp}", self._need_consumer().end_offsets, [ktp], timeout_ms=self._req_ms)[ktp]

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None or self._closed:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def partitions_for(self, topic: str) -> set[int]:
        """Partition ids of ``topic`` (empty if unknown)."""
        if self._consumer is not None:
            return set(self._call(f"partitions of {topic!r}", self._consumer.partitions_for_topic, topic) or ())
        if self._producer is not None:
            return set(self._call(f"partitions of {topic!r}", self._producer.partitions_for, topic) or ())
        return set()

    def partition_of(self, key: bytes, partitions: int) -> int | None:
        """kafka-python's (= the Java client's) default partitioner: murmur2(key) mod partitions."""
        from kafka.partitioner.default import murmur2

        return (murmur2(key) & 0x7FFFFFFF) % partitions if partitions > 0 else None

    def partition_count(self, topic: str) -> int:
        return len(self.partitions_for(topic))

    # -- lifecycle ------------------------------------------------------------------------------
    def _close_clients(self) -> None:
        # The consumer stays reachable while it closes: its close-time revoke runs the caller's
        # on_revoke, which may still commit what it processed (as in any rebalance).
        if self._consumer is not None:
            close_consumer(self._consumer, self._req_ms)
            self._consumer = None
        p, self._producer = self._producer, None
        if p is not None:
            close_producer(p, max(1.0, self._timeout_ms / 1000))

    def close(self) -> None:
        """Flush (raising :class:`DeliveryError` after closing if records were lost), leave the
        group, close clients. Idempotent."""
        if self._closed:
            return
        err: BaseException | None = None
        self._closing = True
        try:
            if self._producer is not None:
                self.flush(timeout=self._req_ms / 1000 + self._timeout_ms / 1000)
        except DeliveryError as e:
            err = e
            self._closed = True  # records were lost: close-time on_revoke must not commit past them
        finally:
            self._close_clients()  # flushed: close-time on_revoke callbacks may still commit
            self._closed = True
            if self.delivery is not None:
                self.delivery.give_up("producer closed before the record was acknowledged")
        if err is not None:
            raise err
