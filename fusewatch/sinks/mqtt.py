"""MQTT sink (paho-mqtt, MQTT 3.1.1, QoS 1).

Per alert two publishes, both QoS 1, awaited until the broker's PUBACK:

* ``<prefix>/<camera>/<type>`` (``new`` | ``update`` | ``end``): the version-2 alert record;
* ``<prefix>/<camera>/state``, **retained**: ``{"v": 2, "kind": "camera_state", "camera",
  "state": "alert" | "idle", "alert": <record>}`` — a client subscribing later sees at once whether
  the camera is alerting and why.

``<camera>`` is the camera id with ``%``, ``/``, ``+``, ``#`` and NUL percent-encoded (``a/b`` →
``a%2Fb``), so one id is always one topic level. The client reconnects by itself (paho's loop
thread); while it is disconnected, or a PUBACK does not come within ``mqtt.publish_timeout``,
:meth:`MqttSink.deliver` raises :class:`~fusewatch.sinks.SinkUnavailable` and the record is
offered again later.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from fusewatch.sinks.base import Sink, SinkUnavailable
from fusewatch.stream.alert_schema import AlertMessage, alert_record

log = logging.getLogger("fusewatch.sinks.mqtt")
MQTT_ERR_QUEUE_SIZE = 15
_ESCAPE = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23", "\0": "%00"}


def topic_level(camera: str) -> str:
    """``camera`` as one MQTT topic level (``%``, ``/``, ``+``, ``#``, NUL percent-encoded)."""
    return "".join(_ESCAPE.get(c, c) for c in camera)


def _acked(info) -> bool:
    """PUBACK received? (``MQTTMessageInfo.is_published`` raises while the message waits for a
    reconnect (rc ``NO_CONN``) although paho still holds it and sends it after the reconnect.)"""
    with info._condition:
        return bool(info._published)


def state_payload(alert: AlertMessage) -> bytes:
    state = "idle" if alert.type == "end" else "alert"
    return json.dumps(
        {"v": 2, "kind": "camera_state", "camera": alert.camera, "state": state, "alert": alert_record(alert)},
        allow_nan=False,
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


class MqttSink(Sink):
    def __init__(self, mcfg, stop: threading.Event | None = None):
        import paho.mqtt.client as mqtt

        self.cfg = mcfg
        self.name = f"mqtt://{mcfg.host}:{mcfg.port}"
        self.prefix = mcfg.topic_prefix.rstrip("/")
        self._stop = stop or threading.Event()
        self._connected = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=mcfg.client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        if mcfg.username:
            c.username_pw_set(mcfg.username, mcfg.password_value())
        if mcfg.tls_cafile:
            c.tls_set(ca_certs=mcfg.tls_cafile)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self.client = c
        c.connect_async(mcfg.host, mcfg.port, keepalive=mcfg.keepalive)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT broker %s refused the connection: %s", self.name, reason_code)
            return
        log.info("connected to MQTT broker %s", self.name)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        if self._connected.is_set():
            log.warning("MQTT broker %s disconnected (%s); reconnecting", self.name, reason_code)
        self._connected.clear()

    def topics(self, alert: AlertMessage) -> tuple[str, str]:
        base = f"{self.prefix}/{topic_level(alert.camera)}"
        return f"{base}/{alert.type}", f"{base}/state"

    def deliver(self, alert: AlertMessage, record: bytes) -> None:
        deadline = time.monotonic() + self.cfg.publish_timeout
        while not self._connected.wait(0.1):
            if self._stop.is_set() or time.monotonic() > deadline:
                raise SinkUnavailable(f"{self.name}: not connected")
        event_topic, state_topic = self.topics(alert)
        infos = [
            self.client.publish(event_topic, record, qos=1, retain=False),
            self.client.publish(state_topic, state_payload(alert), qos=1, retain=True),
        ]
        for info in infos:  # in flight until PUBACK; paho re-sends them after a reconnect
            while not _acked(info):
                if info.rc == MQTT_ERR_QUEUE_SIZE:
                    raise SinkUnavailable(f"{self.name}: paho's outgoing queue is full")
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise SinkUnavailable(f"{self.name}: no PUBACK within {self.cfg.publish_timeout:g} s")
                time.sleep(0.005)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
