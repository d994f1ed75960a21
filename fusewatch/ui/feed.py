"""Feed thread: alerts / scores / thumbnails topics → :class:`~fusewatch.ui.state.LiveState`.

The UI reads the topics from their start under a fresh consumer group each time it starts (so a
restarted UI shows what the topics still hold) and never commits. On the alerts topic it takes
alert records (v1/v2), and — when workers publish them — ``kind: "evidence"`` and ``kind: "health"``
JSON records; anything else is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid

from fusewatch.stream.alert_schema import alert_record, decode_alert
from fusewatch.stream.live import decode_score, decode_thumbnail
from fusewatch.stream.schema import SchemaError

log = logging.getLogger("fusewatch.ui")


class Feed:
    def __init__(self, cfg, state, transport):
        self.cfg, self.state, self.t = cfg, state, transport
        self.topics = {"alerts": cfg.topics.alerts, "scores": cfg.topics.scores, "thumbnails": cfg.topics.thumbnails}
        self.skipped = 0
        self.records = 0
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def handle(self, topic: str, value: bytes) -> None:
        self.records += 1
        try:
            if topic == self.topics["scores"]:
                self.state.add_score(decode_score(value))
            elif topic == self.topics["thumbnails"]:
                self.state.add_thumbnail(decode_thumbnail(value))
            elif topic == self.topics["alerts"]:
                kind = None
                if bytes(value[:1]) == b"{":
                    try:
                        kind = json.loads(bytes(value)).get("kind")
                    except ValueError:
                        kind = None
                if kind == "evidence":
                    self.state.add_evidence(json.loads(bytes(value)))
                elif kind == "health":
                    self.state.add_health(json.loads(bytes(value)))
                else:
                    a = decode_alert(value, self.cfg.max_message_bytes)
                    self.state.add_alert(alert_record(a))
        except (SchemaError, ValueError, KeyError, AttributeError) as e:
            self.skipped += 1
            if self.skipped <= 3:
                log.warning("ui: skipped a record on %s: %s", topic, e)

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
            for r in recs:
                self.handle(r.topic, r.value)

    def stop(self) -> None:
        self._stop.set()
        if self.thread:
            self.thread.join(timeout=5)
        try:
            self.t.close()
        except Exception:  # noqa: BLE001
            pass
