"""Producer-side delivery tracking: a record is kept until the broker acknowledges it or it is lost.

kafka-python retries a produced batch itself (idempotent producer, unlimited ``retries``) until its
``delivery_timeout_ms``, which the transport sets from ``kafka.delivery_timeout_s``. On top of that,
:class:`DeliveryTracker` keeps every record that is not acknowledged yet and

* re-sends a record whose send failed with a *retriable* error (metadata not available, buffer full,
  a retriable broker error) while its delivery deadline (first send + ``delivery_timeout_s``) has not
  passed — re-sent from the caller's thread (:meth:`resend_due`, called by ``produce``/``flush``),
  never from kafka-python's I/O thread;
* finalises each record exactly once: ``on_delivery(None)`` when acknowledged, ``on_delivery(err)``
  (a :class:`DeliveryError`) when finally lost; lost records are also collected for the next flush
  to report. A record too large for a size limit fails at once with :class:`RecordTooLargeError`
  (waiting cannot help).

A re-sent record may land after newer records of the same key (only records whose first attempt
failed are re-sent).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import kafka.errors as kerr

from fusewatch.stream.transport.base import DeliveryCallback, DeliveryError, RecordTooLargeError

log = logging.getLogger("fusewatch.stream.transport.kafka")

_TOO_LARGE: tuple[type[BaseException], ...] = tuple(
    c
    for c in (getattr(kerr, "MessageSizeTooLargeError", None), getattr(kerr, "RecordTooLargeError", None))
    if c is not None
)
"""kafka-python's size-limit errors (client ``max_request_size`` check, broker MESSAGE_TOO_LARGE)."""


@dataclass(eq=False)
class PendingRecord:
    """One produced record until it is acknowledged or finally lost."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] | None
    on_delivery: DeliveryCallback | None
    deadline: float
    """``time.monotonic()`` after which the record is not re-sent any more."""
    attempts: int = 0
    done: bool = False
    last_error: BaseException | None = None


class DeliveryTracker:
    """Tracks every unacknowledged record of one producer (thread-safe).

    ``send(rec) -> kafka future`` performs one attempt; ``timeout_s`` is the delivery timeout;
    ``too_large(rec, err) -> str`` words a size-limit error (naming the limit).
    """

    def __init__(
        self,
        send: Callable[[PendingRecord], Any],
        timeout_s: float,
        too_large: Callable[[PendingRecord, BaseException], str],
    ):
        self._send_fn = send
        self.timeout_s = float(timeout_s)
        self._too_large = too_large
        self._lock = threading.Lock()
        self._pending: set[PendingRecord] = set()
        self._retry: list[PendingRecord] = []
        self._lost: list[DeliveryError] = []
        self.delivered = 0
        """Records acknowledged so far."""
        self.lost = 0
        """Records finally lost so far."""
        self.resent = 0
        """Re-send attempts made so far."""

    # -- public ---------------------------------------------------------------------------------
    def add(self, topic: str, key: bytes | None, value: bytes, headers, on_delivery) -> None:
        """First attempt of a new record. Raises :class:`RecordTooLargeError` / :class:`DeliveryError`
        at once for a record that can never be delivered (``on_delivery`` is then not called)."""
        rec = PendingRecord(topic, key, value, headers, on_delivery, time.monotonic() + self.timeout_s)
        with self._lock:
            self._pending.add(rec)
        self._attempt(rec, raise_permanent=True)

    def resend_due(self) -> None:
        """Re-send records whose last attempt failed with a retriable error (deadline permitting)."""
        with self._lock:
            todo, self._retry = self._retry, []
        now = time.monotonic()
        for rec in todo:
            if now >= rec.deadline:
                self._finalize(rec, rec.last_error)
            else:
                self.resent += 1
                self._attempt(rec, raise_permanent=False)

    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def retry_waiting(self) -> int:
        with self._lock:
            return len(self._retry)

    def latest_deadline(self) -> float:
        with self._lock:
            return max((r.deadline for r in self._pending), default=time.monotonic())

    def take_lost(self) -> list[DeliveryError]:
        """Errors of records lost since the last call."""
        with self._lock:
            out, self._lost = self._lost, []
        return out

    def give_up(self, why: str) -> None:
        """Finalise every outstanding record as lost (the producer is closing or past its bound)."""
        with self._lock:
            todo = list(self._pending)
            self._retry = []
        for rec in todo:
            self._finalize(rec, DeliveryError(why))

    # -- internals --------------------------------------------------------------------------------
    def _attempt(self, rec: PendingRecord, raise_permanent: bool) -> None:
        rec.attempts += 1
        try:
            fut = self._send_fn(rec)
        except _TOO_LARGE as e:
            err = RecordTooLargeError(self._too_large(rec, e))
            if raise_permanent:
                self._drop(rec)
                raise err from None
            self._finalize(rec, err)
            return
        except kerr.KafkaError as e:
            if getattr(e, "retriable", False):
                self._failed(rec, e)
                return
            err = DeliveryError(f"produce to {rec.topic!r} failed: {type(e).__name__}: {e}")
            if raise_permanent:
                self._drop(rec)
                raise err from None
            self._finalize(rec, err)
            return
        fut.add_callback(lambda _md, r=rec: self._finalize(r, None))
        fut.add_errback(lambda e, r=rec: self._failed(r, e))

    def _failed(self, rec: PendingRecord, e: BaseException) -> None:
        """A failed attempt (any thread): retriable within the deadline → queued for re-send."""
        try:
            self._classify(rec, e)
        except Exception as bug:  # noqa: BLE001 - never leave a record without an outcome
            self._finalize(
                rec,
                DeliveryError(
                    f"record to {rec.topic!r} lost: {type(e).__name__}: {e} (and {type(bug).__name__}: {bug})"
                ),
            )

    def _classify(self, rec: PendingRecord, e: BaseException) -> None:
        rec.last_error = e
        if isinstance(e, _TOO_LARGE):
            self._finalize(rec, RecordTooLargeError(self._too_large(rec, e)))
        elif getattr(e, "retriable", False) and time.monotonic() < rec.deadline:
            with self._lock:
                if not rec.done:
                    self._retry.append(rec)
        else:
            self._finalize(rec, e)

    def _drop(self, rec: PendingRecord) -> None:
        with self._lock:
            rec.done = True
            self._pending.discard(rec)

    def _finalize(self, rec: PendingRecord, err: BaseException | None) -> None:
        if err is not None and not isinstance(err, DeliveryError):
            text = str(err) if str(err) and str(err) != type(err).__name__ else ""
            err = DeliveryError(
                f"record to {rec.topic!r} lost after {rec.attempts} attempt(s) within "
                f"kafka.delivery_timeout_s={self.timeout_s:g}: {type(err).__name__} {text}".strip()
            )
        with self._lock:
            if rec.done:
                return
            rec.done = True
            self._pending.discard(rec)
            if err is None:
                self.delivered += 1
            else:
                self.lost += 1
                self._lost.append(err)
        if rec.on_delivery is not None:
            try:
                rec.on_delivery(err)
            except Exception as e:  # noqa: BLE001 - a caller's callback must not break delivery
                log.error("on_delivery callback failed: %s: %s", type(e).__name__, e)
