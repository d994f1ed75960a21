"""Kafka transport: kafka-python 3.x against a real Apache Kafka (4.x) broker.

* Producer: idempotent, ``acks=all``, record key = camera id (the default murmur2 partitioner keeps
  one camera in one partition, so per-camera order is preserved). Every send's future is tracked;
  :meth:`KafkaTransport.flush` raises :class:`~fusewatch.stream.transport.base.DeliveryError` for any record
  that failed or was not acknowledged in time — errors are never swallowed.
* Consumer: consumer group, ``enable_auto_commit=False``, synchronous :meth:`commit` of
  next-offsets; rebalance callbacks run on a helper thread while kafka-python's IO loop waits, so
  they may call :meth:`commit`, :meth:`seek`, :meth:`end_offset` ... (a plain synchronous listener
  would deadlock on kafka-python 3's IO thread).
* Every ``cfg.kafka.client_kwargs()`` setting (security protocol, SASL, TLS, client id,
  compression, request timeout) is passed straight through, filtered to what each client accepts.
* Start-up is bounded by ``cfg.kafka.connect_timeout_s``: a pre-flight check (:func:`check_broker`)
  connects, performs the TLS handshake / SASL PLAIN authentication and a metadata request itself, so
  an unreachable broker or wrong credentials surface as a one-line :class:`TransportError` instead of
  kafka-python's silent retry loop. Secrets never reach log records (:func:`_redact_secrets`).
"""
from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from typing import Any, Iterable

import kafka.errors as kerr
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.future import Future as _KFuture
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as _KTP

from fusewatch.stream.config import Config
from fusewatch.stream.transport.base import (DeliveryError, RebalanceCallback, Record, TopicPartition, Transport,
                                   TransportError, key_bytes)

log = logging.getLogger(__name__)

__all__ = ["KafkaTransport", "AuthenticationError", "CommitFailedError", "check_broker",
           "client_config", "admin_client"]

_RECORD_OVERHEAD = 65536
"""Bytes allowed on top of ``cfg.max_message_bytes`` for batch/record headers."""

_RECONNECT = {"reconnect_backoff_max_ms": 1000}
"""Java client default (kafka-python's is 30 s): reconnect within ~1 s once a restarted broker is back."""


class AuthenticationError(TransportError):
    """The broker rejected our credentials (SASL) or the TLS handshake."""


class CommitFailedError(TransportError):
    """An offset commit was rejected (typically: the group rebalanced meanwhile)."""


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
_REDACT_LOGGERS = ("kafka", "kafka.protocol.parser", "kafka.net.connection", "kafka.net.transport",
                   "kafka.net.manager", "kafka.net.sasl.plain", "kafka.conn", "kafka.client_async",
                   "kafka.producer.kafka", "kafka.consumer.group", "kafka.admin.client")


def _redact_secrets(cfg: Config) -> None:
    """Install the redaction filter for cfg's secrets on kafka-python's loggers (idempotent)."""
    for name in cfg.kafka.SECRET_FIELDS:
        val = getattr(cfg.kafka, name, None)
        if val:
            _REDACT.secrets.add(val)
            _REDACT.secrets.add(repr(val.encode())[2:-1])  # as it appears inside a bytes repr
    if _REDACT.secrets:
        names = set(_REDACT_LOGGERS) | {n for n in logging.root.manager.loggerDict
                                        if n == "kafka" or n.startswith("kafka.")}
        for name in sorted(names):
            lg = logging.getLogger(name)
            if _REDACT not in lg.filters:
                lg.addFilter(_REDACT)


# ---------------------------------------------------------------------------------------------
# pre-flight connectivity / authentication check (raw Kafka protocol, non-flexible versions)

_API_METADATA, _API_SASL_HANDSHAKE, _API_API_VERSIONS, _API_SASL_AUTH = 3, 17, 18, 36


class _Closed(OSError):
    pass


def _kreq(sock: socket.socket, api: int, ver: int, corr: int, body: bytes) -> bytes:
    cid = b"fusewatch-preflight"
    msg = struct.pack(">hhih", api, ver, corr, len(cid)) + cid + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv(sock, 4))[0]
    resp = _recv(sock, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise OSError("correlation id mismatch")
    return resp[4:]


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Closed("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def _kstr(b: bytes, pos: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", b, pos)
    if n < 0:
        return None, pos + 2
    return b[pos + 2:pos + 2 + n].decode("utf-8", "replace"), pos + 2 + n


def _split_server(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _ssl_context(cfg: Config) -> ssl.SSLContext:
    k = cfg.kafka
    ctx = ssl.create_default_context(cafile=k.ssl_cafile)
    if k.ssl_certfile:
        ctx.load_cert_chain(k.ssl_certfile, k.ssl_keyfile)
    return ctx


def _preflight_one(cfg: Config, host: str, port: int, timeout: float) -> None:
    """Connect, (TLS), (SASL PLAIN), metadata. Raises OSError (retryable) or TransportError (fatal)."""
    k = cfg.kafka
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        if k.security_protocol in ("SSL", "SASL_SSL"):
            try:
                ctx = _ssl_context(cfg)
            except (OSError, ValueError) as e:
                raise TransportError(f"Kafka TLS settings (ssl_cafile/ssl_certfile/ssl_keyfile): {e}") from None
            try:
                sock = ctx.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError) as e:
                raise AuthenticationError(f"Kafka TLS handshake with {host}:{port} failed: {e}") from None
        if k.security_protocol.startswith("SASL"):
            mech = (k.sasl_mechanism or "PLAIN").encode()
            try:
                r = _kreq(sock, _API_SASL_HANDSHAKE, 1, 1, struct.pack(">h", len(mech)) + mech)
            except _Closed:
                raise AuthenticationError(
                    f"Kafka broker {host}:{port} closed the connection at the SASL handshake: "
                    f"is this a SASL listener? (security_protocol={k.security_protocol})") from None
            err = struct.unpack_from(">h", r)[0]
            if err and err != 33:  # 33: UNSUPPORTED_SASL_MECHANISM, handled below
                raise AuthenticationError(
                    f"Kafka SASL handshake rejected by {host}:{port} (error code {err}): is this a "
                    f"SASL listener? (security_protocol={k.security_protocol})")
            if err:
                (n,) = struct.unpack_from(">i", r, 2)
                pos, enabled = 6, []
                for _ in range(max(n, 0)):
                    s, pos = _kstr(r, pos)
                    enabled.append(s)
                raise AuthenticationError(
                    f"Kafka authentication failed: SASL mechanism {mech.decode()} is not enabled on "
                    f"{host}:{port} (enabled: {', '.join(map(str, enabled)) or 'none'})")
            if mech == b"PLAIN":
                tok = b"\0" + (k.sasl_plain_username or "").encode() + b"\0" + \
                    (k.sasl_plain_password or "").encode()
                try:
                    r = _kreq(sock, _API_SASL_AUTH, 1, 2, struct.pack(">i", len(tok)) + tok)
                except _Closed:
                    raise AuthenticationError(
                        f"Kafka authentication failed for user {k.sasl_plain_username!r} at "
                        f"{host}:{port} (connection closed during SASL/PLAIN)") from None
                err = struct.unpack_from(">h", r)[0]
                if err:
                    msg, _ = _kstr(r, 2)
                    raise AuthenticationError(
                        f"Kafka authentication failed for user {k.sasl_plain_username!r} at "
                        f"{host}:{port}: {msg or 'SASL/PLAIN rejected'}")
            else:
                return  # SCRAM/OAUTHBEARER/GSSAPI: kafka-python completes the exchange itself
        # Metadata v4 with no topics: proves the listener speaks our protocol and a broker is up.
        try:
            r = _kreq(sock, _API_METADATA, 4, 3, struct.pack(">i?", 0, False))
        except _Closed:
            raise AuthenticationError(
                f"Kafka broker {host}:{port} closed the connection on a metadata request: does the "
                f"listener expect another security protocol? (client uses {k.security_protocol})") from None
        if struct.unpack_from(">i", r, 4)[0] <= 0:
            raise OSError("no broker registered yet")
    finally:
        sock.close()


def check_broker(cfg: Config, timeout: float | None = None) -> None:
    """Wait (up to ``timeout``, default ``cfg.kafka.connect_timeout_s``) until one bootstrap server
    answers; raise :class:`TransportError` (unreachable) or :class:`AuthenticationError` (wrong
    credentials / TLS / protocol mismatch, raised at once) with a one-line message."""
    timeout = cfg.kafka.connect_timeout_s if timeout is None else timeout
    servers = cfg.kafka.client_kwargs()["bootstrap_servers"]
    deadline = time.monotonic() + timeout
    delay, why = 0.1, "no attempt"
    while True:
        for s in servers:
            left = deadline - time.monotonic()
            try:
                host, port = _split_server(s)
                _preflight_one(cfg, host, port, max(0.2, min(left, 5.0)))
                return
            except TransportError:
                raise
            except ValueError:
                raise TransportError(f"kafka.bootstrap_servers: bad address {s!r} (want host:port)") from None
            except (OSError, struct.error) as e:
                why = f"{s}: {e.strerror or e}" if isinstance(e, OSError) and e.strerror else f"{s}: {e}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError(f"Kafka broker unreachable at {_describe(cfg)} after {timeout:g}s "
                                 f"(last error: {why})")
        time.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)


def admin_client(cfg: Config) -> KafkaAdminClient:
    """A KafkaAdminClient for ``cfg`` after a bounded :func:`check_broker`."""
    _redact_secrets(cfg)
    check_broker(cfg)
    try:
        return KafkaAdminClient(**client_config(
            cfg, KafkaAdminClient, bootstrap_timeout_ms=int(cfg.kafka.connect_timeout_s * 1000)))
    except kerr.KafkaError as e:
        raise _wrap(e, f"admin client for {_describe(cfg)}") from None


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


# ---------------------------------------------------------------------------------------------
class _Listener(AsyncConsumerRebalanceListener):
    """Bridges kafka-python's (IO-thread) rebalance hooks to the user's callbacks.

    The user callback runs on a helper thread while the IO loop awaits it, so blocking consumer
    calls (commit, seek, offsets) made from the callback are served by the loop instead of
    deadlocking it.
    """

    def __init__(self, consumer: KafkaConsumer, on_assign: RebalanceCallback | None,
                 on_revoke: RebalanceCallback | None, inline: bool = False):
        self._consumer = consumer
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._inline = inline

    async def on_partitions_revoked(self, revoked):
        if revoked:
            await self._run(self._on_revoke, revoked)

    async def on_partitions_assigned(self, assigned):
        await self._run(self._on_assign, assigned)

    async def _run(self, cb: RebalanceCallback | None, tps) -> None:
        if cb is None:
            return
        arg = {(tp.topic, tp.partition) for tp in tps}
        net = getattr(self._consumer, "_net", None)
        if self._inline or net is None or not hasattr(net, "call_soon_threadsafe"):
            cb(arg)
            return
        fut = _KFuture()

        def work() -> None:
            err: BaseException | None = None
            try:
                cb(arg)
            except BaseException as e:  # noqa: BLE001 - handed back to the IO loop
                err = e

            async def done() -> None:
                if err is None:
                    fut.success(None)
                else:
                    fut.failure(err if isinstance(err, Exception) else RuntimeError(repr(err)))
            net.call_soon_threadsafe(done)

        threading.Thread(target=work, name="fusewatch-rebalance", daemon=True).start()
        await fut


class KafkaTransport(Transport):
    """:class:`~fusewatch.stream.transport.base.Transport` over Apache Kafka (see module docstring).

    ``group_id``: consumer group used until :meth:`subscribe` names another one (None: no group,
    offsets-only use). ``consume``/``produce``: create only the clients needed. Extra kafka-python
    settings may be given in ``producer_kwargs``/``consumer_kwargs`` (they override ours).
    """

    def __init__(self, cfg: Config, group_id: str | None = None, consume: bool = True,
                 produce: bool = True, *, producer_kwargs: dict[str, Any] | None = None,
                 consumer_kwargs: dict[str, Any] | None = None):
        self.cfg = cfg
        k = cfg.kafka
        self._timeout_ms = int(k.connect_timeout_s * 1000)
        self._req_ms = int(k.request_timeout_ms)
        self._producer_kwargs = dict(producer_kwargs or {})
        self._consumer_kwargs = dict(consumer_kwargs or {})
        self._lock = threading.Lock()
        self._pending: list = []
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._consume = consume
        self._group_id = group_id
        self._reset = "earliest"
        self._closed = False
        self._join_ms: int | None = None
        """Bound on awaiting a pending group join (None: the consumer's ``session_timeout_ms``)."""
        self.lost_joins = 0
        """Group joins whose completion kafka-python lost and :meth:`_settle_group` redid."""
        _redact_secrets(cfg)
        check_broker(cfg)
        try:
            if produce:
                self._producer = self._new_producer()
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
        pkw = dict(enable_idempotence=True, acks="all", linger_ms=linger,
                   max_block_ms=self._timeout_ms, bootstrap_timeout_ms=self._timeout_ms,
                   delivery_timeout_ms=self._req_ms + linger + self._timeout_ms,
                   max_request_size=self.cfg.max_message_bytes + _RECORD_OVERHEAD, **_RECONNECT)
        pkw.update(self._producer_kwargs)
        return KafkaProducer(**client_config(self.cfg, KafkaProducer, **pkw))

    def _renew_wedged_producer(self) -> None:
        """kafka-python 3.0.x: after a batch expires the idempotent producer resets its producer id
        but never asks for a new one (state stays READY), so it sends nothing ever again. Replace
        such a producer (the expired records were reported by :meth:`flush`; none is pending)."""
        tm = getattr(self._producer, "_transaction_manager", None)
        if tm is None or tm.has_producer_id():
            return
        try:
            new = self._new_producer()
        except kerr.KafkaError as e:  # brokers still gone: keep it, try again at the next flush
            log.warning("cannot restart the Kafka producer yet: %s", _wrap(e, _describe(self.cfg)))
            return
        old, self._producer = self._producer, new
        try:
            old.close(timeout=0)
        except Exception as e:  # noqa: BLE001 - it is being replaced
            log.debug("closing wedged producer: %s", e)
        log.warning("Kafka producer restarted after expired records (new producer id)")

    def _new_consumer(self, group_id: str | None, reset: str) -> KafkaConsumer:
        ckw = dict(group_id=group_id, enable_auto_commit=False, auto_offset_reset=reset,
                   bootstrap_timeout_ms=self._timeout_ms,
                   max_partition_fetch_bytes=max(1_048_576, self.cfg.max_message_bytes + _RECORD_OVERHEAD),
                   **_RECONNECT)
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
    def produce(self, topic: str, key: str | bytes | None, value: bytes,
                headers: Iterable[tuple[str, bytes]] | None = None) -> None:
        if self._closed:
            raise TransportError("KafkaTransport is closed")
        if self._producer is None:
            raise TransportError("KafkaTransport was created with produce=False")
        hdrs = [(str(n), bytes(v)) for n, v in headers] if headers else None
        try:
            fut = self._producer.send(topic, value=bytes(value), key=key_bytes(key), headers=hdrs)
        except kerr.KafkaError as e:
            raise DeliveryError(f"produce to {topic!r} failed: {type(e).__name__}: {e}") from None
        with self._lock:
            self._pending.append(fut)
            if len(self._pending) >= 4096:  # drop acknowledged futures; keep failures for flush()
                self._pending = [f for f in self._pending if not f.is_done or f.failed()]

    def flush(self, timeout: float | None = None) -> None:
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout)
        except kerr.KafkaTimeoutError:
            pass  # reported below as unacknowledged records
        with self._lock:
            futs, self._pending = self._pending, []
            failed = [f for f in futs if f.is_done and f.failed()]
            waiting = [f for f in futs if not f.is_done]
            self._pending = waiting
            if failed and not waiting:
                self._renew_wedged_producer()
        if failed or waiting:
            first = failed[0].exception if failed else None
            detail = f"; first error: {type(first).__name__}: {first}" if first is not None else ""
            raise DeliveryError(
                f"{len(failed)} record(s) failed and {len(waiting)} not acknowledged"
                f"{'' if timeout is None else f' within {timeout:g}s'} by {self.cfg.kafka.bootstrap_servers}"
                f"{detail}")

    # -- consumer -------------------------------------------------------------------------------
    def subscribe(self, topics: list[str], group_id: str,
                  on_assign: RebalanceCallback | None = None,
                  on_revoke: RebalanceCallback | None = None,
                  from_beginning: bool = True, callbacks_use_transport: bool = True) -> None:
        if not self._consume:
            raise TransportError("KafkaTransport was created with consume=False")
        reset = "earliest" if from_beginning else "latest"
        if self._consumer is None or group_id != self._group_id or reset != self._reset:
            old, self._consumer = self._consumer, None
            if old is not None:
                old.close(autocommit=False, timeout_ms=self._req_ms)
            self._consumer = self._call(f"cannot start Kafka consumer for {_describe(self.cfg)}",
                                        self._new_consumer, group_id, reset)
            self._group_id, self._reset = group_id, reset
        c = self._consumer
        # Know the topics' partitions before joining: a first assignment made while the topic
        # metadata is still unknown is empty, and the rebalance that follows it can leave
        # kafka-python 3.0 waiting for the coordinator forever (seen with just-created topics).
        deadline = time.monotonic() + self.cfg.kafka.connect_timeout_s
        for t in topics:
            while not self._call(f"partitions of {t!r}", c.partitions_for_topic, t) \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
        self._call(f"subscribe {topics}", c.subscribe, topics=list(topics),
                   listener=_Listener(c, on_assign, on_revoke, inline=not callbacks_use_transport))

    def _settle_group(self, c: KafkaConsumer) -> None:
        """Finish a pending group (re)join before fetching, and repair a lost one.

        kafka-python 3.0.12 completes a join in two halves: the JoinGroup/SyncGroup round trip runs
        as a task on its I/O thread, and the awaiting ``poll`` then applies the result (assignment,
        state STABLE, heartbeats back on). If ``poll``'s timeout expires while the task is in flight
        and the rejoin was triggered by a metadata change (partitions added, the first metadata of
        a new topic), the leader's assignment makes ``need_rejoin()`` false before the task ends, so
        no later ``poll`` awaits it: the member stays REBALANCING with heartbeats off, fetches
        nothing and is evicted after ``session_timeout_ms`` — the "engine consumed nothing" flake.
        Here a pending join is awaited with a bound of ``session_timeout_ms`` (not the caller's few
        milliseconds), and a join whose completion was lost anyway is detected (``rejoining`` with
        no task in flight and no rejoin needed) and redone with :meth:`request_rejoin`.
        """
        coord = getattr(c, "_coordinator", None)
        if coord is None or self._group_id is None or not c.subscription():
            return
        if getattr(coord, "rejoining", False) and not coord.need_rejoin():
            task = getattr(coord, "_join_task", None)
            if task is None or task.is_done:
                self.lost_joins += 1
                log.warning("group %s: a rebalance finished without being applied (kafka-python "
                            "join race); rejoining", self._group_id)
                coord.request_rejoin()
        if coord.need_rejoin():
            bound = self._join_ms if self._join_ms is not None else c.config["session_timeout_ms"]
            self._call(f"join group {self._group_id!r}", coord.ensure_active_group, timeout_ms=int(bound))

    def poll(self, max_records: int = 500, timeout: float = 0.1) -> list[Record]:
        c = self._need_consumer()
        if not c.subscription() and not c.assignment():
            time.sleep(max(0.0, timeout))
            return []
        self._settle_group(c)
        batches = self._call("poll", c.poll, timeout_ms=int(max(0.0, timeout) * 1000),
                             max_records=max_records)
        out: list[Record] = []
        for recs in batches.values():
            for r in recs:
                out.append(Record(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key,
                                  value=r.value if r.value is not None else b"",
                                  timestamp_ms=int(r.timestamp or 0),
                                  headers=tuple((h[0], h[1] if h[1] is not None else b"")
                                                for h in (r.headers or ()))))
        return out

    def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        c = self._need_consumer()
        om = {_KTP(t, p): OffsetAndMetadata(int(n), "", -1) for (t, p), n in offsets.items()}
        self._call(f"commit {len(om)} offset(s) for group {self._group_id!r}", c.commit,
                   offsets=om, timeout_ms=self._req_ms)

    def committed(self, tp: TopicPartition) -> int | None:
        c = self._need_consumer()
        return self._call(f"committed {tp}", c.committed, _KTP(*tp), timeout_ms=self._req_ms)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._call(f"seek {tp} to {offset}", self._need_consumer().seek, _KTP(*tp), int(offset))

    def position(self, tp: TopicPartition) -> int:
        return self._call(f"position {tp}", self._need_consumer().position, _KTP(*tp),
                          timeout_ms=self._req_ms)

    def beginning_offset(self, tp: TopicPartition) -> int:
        ktp = _KTP(*tp)
        return self._call(f"beginning offset {tp}", self._need_consumer().beginning_offsets, [ktp],
                          timeout_ms=self._req_ms)[ktp]

    def end_offset(self, tp: TopicPartition) -> int:
        ktp = _KTP(*tp)
        return self._call(f"end offset {tp}", self._need_consumer().end_offsets, [ktp],
                          timeout_ms=self._req_ms)[ktp]

    def assignment(self) -> set[TopicPartition]:
        if self._consumer is None or self._closed:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def partitions_for(self, topic: str) -> set[int]:
        """Partition ids of ``topic`` (empty if unknown)."""
        if self._consumer is not None:
            return set(self._call(f"partitions of {topic!r}", self._consumer.partitions_for_topic, topic)
                       or ())
        if self._producer is not None:
            return set(self._call(f"partitions of {topic!r}", self._producer.partitions_for, topic) or ())
        return set()

    # -- lifecycle ------------------------------------------------------------------------------
    def _close_clients(self) -> None:
        c, self._consumer = self._consumer, None
        p, self._producer = self._producer, None
        if c is not None:
            try:
                c.close(autocommit=False, timeout_ms=self._req_ms)
            except Exception as e:  # noqa: BLE001 - closing: report, keep going
                log.warning("closing Kafka consumer: %s: %s", type(e).__name__, e)
        if p is not None:
            try:
                p.close(timeout=max(1.0, self._timeout_ms / 1000))
            except Exception as e:  # noqa: BLE001
                log.warning("closing Kafka producer: %s: %s", type(e).__name__, e)

    def close(self) -> None:
        """Flush (raising :class:`DeliveryError` after closing if records were lost), leave the
        group, close clients. Idempotent."""
        if self._closed:
            return
        err: BaseException | None = None
        try:
            if self._producer is not None:
                self.flush(timeout=self._req_ms / 1000 + self._timeout_ms / 1000)
        except DeliveryError as e:
            err = e
        finally:
            self._closed = True
            self._close_clients()
        if err is not None:
            raise err
