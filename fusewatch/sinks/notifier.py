"""``fusewatch notify``'s loop: alerts topic → every sink, offsets committed after delivery.

Records are delivered in order, one at a time, to every sink; the next-offset of a partition is
committed only once all its earlier records reached every sink (or, for webhooks, the dead-letter
file). When a sink raises :class:`~fusewatch.sinks.SinkUnavailable` the notifier commits what is
done, seeks each partition back to its first undelivered record, waits (``notify.retry_initial``
doubling up to ``retry_max``) and reads them again — sinks that already took the failing record
are not offered it again in this process. A crash or restart re-delivers from the committed
offsets: at-least-once, deduplicated by receivers with the alert's ``id:type:end_clip``.
Malformed records — anything that fails to decode or re-encode, whatever the exception — are counted
by reason (``stats.malformed_reasons``), logged once per reason with their position, and skipped: one
bad record never stops the group, and it is committed only once counted. A sink that raises anything
other than :class:`~fusewatch.sinks.SinkUnavailable` for one alert (a bug, an alert it cannot format)
is counted in ``stats.failed`` / ``failed_reasons``, logged once per reason, and the alert skipped
for that sink only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from fusewatch.sinks.base import ReasonLog, Sink, SinkUnavailable
from fusewatch.stream.alert_schema import decode_alert, encode_alert
from fusewatch.stream.records import record_kind

log = logging.getLogger("fusewatch.sinks.notifier")


@dataclass
class NotifyStats:
    records: int = 0
    delivered: int = 0
    malformed: int = 0
    """Records skipped because they could not be decoded or re-encoded (any exception)."""
    malformed_reasons: dict = field(default_factory=dict)
    """Reason (schema reason code or exception type) → records."""
    failed: int = 0
    """(Alert, sink) deliveries abandoned because the sink raised something other than SinkUnavailable."""
    failed_reasons: dict = field(default_factory=dict)
    other: int = 0
    """Evidence and health records on the alerts topic (not delivered to the sinks)."""
    retries: int = 0
    commits: int = 0
    by_sink: dict = field(default_factory=dict)


def _where(rec) -> str:
    """``topic[partition]@offset`` of a record, for logs."""
    return f"{rec.topic}[{rec.partition}]@{rec.offset}"


class Notifier:
    """Delivers the alerts topic to ``sinks`` (see the module doc)."""

    def __init__(self, cfg, transport, sinks: list[Sink], stop: threading.Event | None = None):
        if not sinks:
            raise ValueError("notify: no sink configured: set mqtt.host and/or webhook.urls (+ webhook.secret)")
        self.cfg = cfg
        self.t = transport
        self.sinks = sinks
        self.stop_event = stop or threading.Event()
        self.stats = NotifyStats(by_sink={s.name: 0 for s in sinks})
        self._done: dict[tuple[str, int], int] = {}  # tp -> next offset to commit
        self._partial: dict[tuple, set[str]] = {}  # (tp, offset) -> sinks that took it
        self._backoff = cfg.notify.retry_initial
        self._malformed = ReasonLog(log)
        self._failed = ReasonLog(log, logging.ERROR)
        self.stats.malformed_reasons = self._malformed.counts
        self.stats.failed_reasons = self._failed.counts

    def subscribe(self, from_beginning: bool = False) -> None:
        self.t.subscribe(
            [self.cfg.topics.alerts],
            self.cfg.notify.group_id,
            on_revoke=self._on_revoke,
            from_beginning=from_beginning,
            callbacks_use_transport=False,
        )

    def _on_revoke(self, tps) -> None:
        for tp in tps:  # the partition's next owner re-delivers what we did not commit
            self._done.pop(tp, None)

    def stop(self) -> None:
        self.stop_event.set()

    def _commit(self) -> None:
        if not self._done:
            return
        try:
            self.t.commit(dict(self._done))
            self.stats.commits += 1
            self._done.clear()
        except Exception as e:  # noqa: BLE001 - kept; retried with the next commit
            log.warning("commit failed (%s); offsets kept for the next attempt", e)

    def _deliver(self, rec) -> None:
        try:
            if record_kind(rec.value) in ("evidence", "health"):  # not alerts: the sinks take alerts only
                self.stats.other += 1
                return
            alert = decode_alert(rec.value, self.cfg.max_message_bytes)
            body = encode_alert(alert)
        except Exception as e:  # noqa: BLE001 - one bad record must never stop the group
            self.stats.malformed += 1
            self._malformed.note(e, f"skipping malformed alert at {_where(rec)}")
            return
        key = (rec.tp, rec.offset)
        took = self._partial.setdefault(key, set())
        ok = True
        for s in self.sinks:
            if s.name in took:
                continue
            try:
                s.deliver(alert, body)  # SinkUnavailable propagates: not delivered to s
            except SinkUnavailable:
                raise
            except Exception as e:  # noqa: BLE001 - this alert cannot go to s; the others still can
                ok = False
                self.stats.failed += 1
                self._failed.note(e, f"{s.name}: dropping the alert at {_where(rec)}")
            else:
                self.stats.by_sink[s.name] += 1
            took.add(s.name)
        self._partial.pop(key, None)
        if ok:
            self.stats.delivered += 1

    def step(self, timeout: float = 0.5) -> int:
        """Poll once, deliver the records, commit. Returns the number of records polled."""
        recs = self.t.poll(self.cfg.notify.max_batch, timeout)
        for i, r in enumerate(recs):
            try:
                self._deliver(r)
            except SinkUnavailable as e:
                self._retry_later(recs[i:], e)
                return len(recs)
            self._done[r.tp] = r.offset + 1
            self.stats.records += 1
        self._commit()
        self._backoff = self.cfg.notify.retry_initial
        return len(recs)

    def _retry_later(self, undelivered, err: Exception) -> None:
        self._commit()
        firsts: dict = {}
        for r in undelivered:
            firsts.setdefault(r.tp, r.offset)
        assigned = self.t.assignment()
        for tp, off in firsts.items():
            if tp in assigned:
                self.t.seek(tp, off)
        self.stats.retries += 1
        log.warning("%s; %d record(s) will be offered again in %.1f s", err, len(undelivered), self._backoff)
        self.stop_event.wait(self._backoff)
        self._backoff = min(self.cfg.notify.retry_max, self._backoff * 2)

    def run(self, idle_exit_s: float | None = None) -> NotifyStats:
        """Deliver until :meth:`stop` (or ``idle_exit_s`` seconds without records)."""
        last = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if self.step():
                    last = time.monotonic()
                elif idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                    break
        finally:
            self._commit()
        return self.stats

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001
                log.warning("closing %s: %s", s.name, e)
