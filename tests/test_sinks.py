"""Alert sinks against real receivers: a local HTTP server that fails the first attempts, and a
real Mosquitto broker (Debian ``mosquitto``)."""

import json
import threading
import time

import pytest

from fusewatch.sinks import SinkUnavailable, build_sinks
from fusewatch.sinks.mqtt import MqttSink, topic_level
from fusewatch.sinks.webhook import DeadLetterFile, WebhookSink, sign, verify_signature
from fusewatch.stream.alert_schema import decode_alert, encode_alert
from fusewatch.stream.config import load_config
from fusewatch.testing import sample_alert
from tests.sink_receivers import Mosquitto, WebhookReceiver

SECRET = "s3cr3t-key"


def alert(cam="cam-1", typ="new", end=5, **kw):
    return sample_alert(cam, typ, end, **kw)


def wcfg(tmp_path, **over):
    o = {
        "webhook.urls": "http://127.0.0.1:1/x",
        "webhook.secret": SECRET,
        "webhook.backoff_initial": 0.05,
        "webhook.backoff_max": 0.2,
        "webhook.timeout": 5,
        "webhook.dead_letter_file": str(tmp_path / "dl.jsonl"),
    }
    o.update(over)
    return load_config(env={}, overrides=o).webhook


def test_signature_scheme_round_trip_and_tampering():
    body, ts = b'{"v":2}', str(int(time.time()))
    sig = sign(SECRET, ts, body)
    assert sig.startswith("sha256=") and verify_signature(SECRET, ts, body, sig)
    assert not verify_signature(SECRET, ts, body + b" ", sig)
    assert not verify_signature("other", ts, body, sig)
    assert not verify_signature(SECRET, str(int(ts) + 1), body, sig)
    assert not verify_signature(
        SECRET, str(int(time.time()) - 3600), body, sign(SECRET, str(int(time.time()) - 3600), body)
    )  # stale: replay


def test_webhook_retries_until_the_receiver_accepts(tmp_path):
    rx = WebhookReceiver(SECRET, fail_first=3)
    try:
        cfg = wcfg(tmp_path, **{"webhook.retries": 5})
        sink = WebhookSink(rx.url, cfg, DeadLetterFile(cfg.dead_letter_file))
        for a in (alert("a"), alert("b", "end", 9)):
            sink.deliver(a, encode_alert(a))
        got = rx.delivered()
        assert set(got) == {"id-a:new:5", "id-b:end:9"}
        assert all(r["signature_ok"] and r["content_type"] == "application/json" for r in rx.requests)
        assert len(rx.requests) == 8 and sink.attempts == 8  # 3 failures + 1 success, per alert
        assert decode_alert(json.dumps(got["id-b:end:9"]).encode()) == alert("b", "end", 9)
        assert not (tmp_path / "dl.jsonl").exists()
    finally:
        rx.close()


def test_webhook_dead_letter_file_after_the_last_retry(tmp_path):
    rx = WebhookReceiver(SECRET, fail_first=None, fail_status=500)
    try:
        cfg = wcfg(tmp_path, **{"webhook.retries": 2})
        sink = WebhookSink(rx.url, cfg, DeadLetterFile(cfg.dead_letter_file))
        a = alert("c")
        sink.deliver(a, encode_alert(a))  # returns: handled (dead-lettered), not lost
        assert len(rx.requests) == 3 and sink.dead_lettered == 1
        (entry,) = DeadLetterFile(cfg.dead_letter_file).read()
        assert entry["event"] == "id-c:new:5" and entry["attempts"] == 3 and "500" in entry["error"]
        assert decode_alert(json.dumps(entry["record"]).encode()) == a
    finally:
        rx.close()


def test_webhook_client_errors_are_not_retried_and_stop_aborts(tmp_path):
    rx = WebhookReceiver(SECRET, fail_first=None, fail_status=403)
    try:
        cfg = wcfg(tmp_path, **{"webhook.retries": 4})
        sink = WebhookSink(rx.url, cfg, DeadLetterFile(cfg.dead_letter_file))
        sink.deliver(alert(), encode_alert(alert()))
        assert len(rx.requests) == 1 and sink.dead_lettered == 1
        stop = threading.Event()
        stop.set()
        with pytest.raises(SinkUnavailable):  # shutting down: not delivered, not dead-lettered
            WebhookSink(rx.url, cfg, DeadLetterFile(cfg.dead_letter_file), stop).deliver(alert(), b"{}")
    finally:
        rx.close()


def test_webhook_config_needs_a_secret():
    with pytest.raises(ValueError, match="webhook.secret"):
        load_config(env={}, overrides={"webhook.urls": "http://x/"})


def test_topic_levels_escape_wildcards_and_separators():
    assert topic_level("gate/north+#1%") == "gate%2Fnorth%2B%231%25"
    assert topic_level("lobby") == "lobby"


@pytest.fixture
def mosquitto(tmp_path):
    if not Mosquitto.available():
        pytest.fail("mosquitto not installed (apt-get install -y mosquitto; deploy/setup.sh does it)")
    m = Mosquitto(tmp_path / "mosq")
    m.start()
    yield m
    m.stop()


def subscriber(port, topics, client_id=None):
    import paho.mqtt.client as mqtt

    got, ready = [], threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=client_id is None)
    c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe([(t, 1) for t in topics]), ready.set())
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload, m.retain))
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert ready.wait(10)
    time.sleep(0.3)
    return c, got


def test_mqtt_sink_publishes_events_and_retained_state(mosquitto, tmp_path):
    cfg = load_config(
        env={},
        overrides={
            "mqtt.host": "127.0.0.1",
            "mqtt.port": mosquitto.port,
            "mqtt.topic_prefix": "site1/fw",
            "mqtt.publish_timeout": 3,
        },
    )
    (sink,) = build_sinks(cfg)
    assert isinstance(sink, MqttSink)
    sub, got = subscriber(mosquitto.port, ["site1/fw/#"])
    try:
        for a in (alert("gate/n", "new", 4), alert("gate/n", "end", 9), alert("lobby", "new", 2)):
            sink.deliver(a, encode_alert(a))
        deadline = time.monotonic() + 10
        while len(got) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        events = [(t, json.loads(p)) for t, p, _ in got if not t.endswith("/state")]
        assert [(t, d["type"], d["end_clip"]) for t, d in events] == [
            ("site1/fw/gate%2Fn/new", "new", 4),
            ("site1/fw/gate%2Fn/end", "end", 9),
            ("site1/fw/lobby/new", "new", 2),
        ]
        late, retained = subscriber(mosquitto.port, ["site1/fw/+/state"])  # a late subscriber sees the state
        deadline = time.monotonic() + 10
        while len(retained) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        state = {t: json.loads(p) for t, p, r in retained if r}
        assert state["site1/fw/gate%2Fn/state"]["state"] == "idle"
        assert state["site1/fw/lobby/state"]["state"] == "alert"
        assert state["site1/fw/lobby/state"]["alert"]["id"] == "id-lobby"
        late.loop_stop()
        # broker down: deliver raises (not delivered) instead of pretending; after a restart it works
        mosquitto.stop()
        with pytest.raises(SinkUnavailable):
            sink.deliver(alert("x"), encode_alert(alert("x")))
        mosquitto.start()
        deadline = time.monotonic() + 30  # paho reconnects by itself (backoff up to 5 s)
        while True:
            try:
                sink.deliver(alert("y"), encode_alert(alert("y")))
                break
            except SinkUnavailable:
                assert time.monotonic() < deadline, "no reconnect within 30 s"
    finally:
        sub.loop_stop()
        sink.close()
