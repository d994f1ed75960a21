"""Feed thread: alerts / scores / thumbnails topics → :class:`~fusewatch.ui.state.LiveState`.

The UI reads the topics from their start under a fresh consumer group each time it starts (so a
restarted UI shows what the topics still hold) and never commits. On the alerts topic it takes
alert records (v1/v2), and — when workers publish them — ``kind: "evidence"`` and ``kind: "health"``
JSON records; anything else is counted and skipped.

One record never stops the feed: whatever a record raises (a schema error, an overflow, a
recursion error from deeply nested JSON, …) is caught, counted per reason in :attr:`Feed.reasons`
and logged the first time that reason occurs; the feed goes on with the next record.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import uuid

from fusewatch.stream.alert_schema import alert_record, decode_alert
from fusewatch.stream.live import decode_score, decode_thumbnail
from fusewatch.stream.schema import SchemaError

log = logging.getLogger("fusewatch.ui")


class Feed:
    """Reads the three topics in a thread and applies each record to ``state``."""

    def __init__(self, cfg, state, transport):
        self.cfg, self.state, self.t = cfg, state, transport
        self.topics = {"alerts": cfg.topics.alerts, "scores": cfg.topics.scores, "thumbnails": cfg.topics.thumbnails}
        self.skipped = 0
        self.records = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def handle(self, topic: str, value: bytes) -> None:
        """Apply one record; never raises (a bad record is counted in :attr:`skipped` / :attr:`reasons`)."""
        self.records += 1
        try:
            self._apply(topic, value)
        except Exception as e:  # noqa: BLE001 - one hostile record must never end the feed
            self.skipped += 1
            reason = e.reason if isinstance(e, SchemaError) else type(e).__name__
            self.reasons[reason] += 1
            if self.reasons[reason] == 1:
                log.warning(
                    "ui: skipped a record on %s (%s): %s; further records skipped for this reason are only counted",
                    topic,
                    reason,
                    str(e)[:200],
                )

    def _apply(self, topic: str, value: bytes) -> None:
        if value is None or len(value) > self.cfg.max_message_bytes:
            raise SchemaError("too_large", f"{0 if value is None else len(value)} bytes (or no value)")
        if topic == self.topics["scores"]:
            self.state.add_score(decode_score(value))
        elif topic == self.topics["thumbnails"]:
            self.state.add_thumbnail(decode_thumbnail(value))
        elif topic == self.topics["alerts"]:
            obj = None
            if bytes(value[:64]).lstrip()[:1] == b"{":
                try:
                    obj = json.loads(bytes(value))
                except (ValueError, RecursionError):
                    obj = None
            kind = obj.get("kind") if isinstance(obj, dict) else None
            if kind == "evidence":
                self.state.add_evidence(obj)
            elif kind == "health":
                self.state.add_health(obj)
            else:
                a = decode_alert(value, self.cfg.max_message_bytes)
                self.state.add_alert(alert_record(a))
        else:
            raise SchemaError("wrong_topic", str(topic)[:100])

    def start(self) -> None:
        self.t.subscribe(
            list(self.topics.values()), f"{self.cfg.ui.group_id}-{uuid.uuid4().hex[:8]}", from_beginning=True
        )
        self.thread = threading.Thread(target=self._run, name="ui-feed", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                recs = self.t.poll(max_records=500, timeout=0.2)
            except Exception as e:  # noqa: BLE001 - a broker hiccup must not end the UI
                log.warning("ui: poll failed: %s", e)
                self._stop.wait(1.0)
                continue
            for r in recs or ():
                self.handle(r.topic, r.value)

    def stop(self) -> None:
        self._stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        try:
            self.t.close()
        except Exception:  # noqa: BLE001
            pass
