"""Alert sinks of ``fusewatch notify``: MQTT (:mod:`.mqtt`) and HTTP webhooks (:mod:`.webhook`).

A sink takes one decoded alert and its version-2 record bytes and returns only once the alert is
durably handed over (MQTT PUBACK, HTTP 2xx, or a line fsynced to the webhook dead-letter file);
it raises :class:`SinkUnavailable` when it cannot take it now — then the record is not committed
and :class:`~fusewatch.sinks.notifier.Notifier` offers it again later (at-least-once; receivers
deduplicate by the alert id, ``type`` and ``end_clip``).
"""

from __future__ import annotations

import threading

from fusewatch.sinks.base import Sink, SinkUnavailable

__all__ = ["Sink", "SinkUnavailable", "build_sinks"]


def build_sinks(cfg, stop: threading.Event | None = None) -> list[Sink]:
    """The sinks ``cfg`` configures: MQTT when ``mqtt.host`` is set, one webhook per ``webhook.urls``."""
    stop = stop or threading.Event()
    sinks: list[Sink] = []
    if cfg.mqtt.host:
        from fusewatch.sinks.mqtt import MqttSink

        sinks.append(MqttSink(cfg.mqtt, stop))
    if cfg.webhook.urls:
        from fusewatch.sinks.webhook import DeadLetterFile, WebhookSink

        dl = DeadLetterFile(cfg.webhook.dead_letter_file)
        sinks += [WebhookSink(u, cfg.webhook, dl, stop) for u in cfg.webhook.urls]
    return sinks
