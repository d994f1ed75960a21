"""Alerts topic v2 for any consumer, and ``fusewatch notify`` against real receivers over real Kafka:
Kafka's own console consumer, Mosquitto restarted mid-replay, a webhook receiver failing first."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jsonschema
import pytest

from fusewatch.stream.alert_schema import ALERT_HEADERS, ALERT_SCHEMA_FILE, AlertMessage, encode_alert_v1
from fusewatch.stream.broker import kafka_fetch
from fusewatch.stream.schema import Evidence
from tests.integration.kafka_helpers import committed_total
from tests.sink_receivers import Mosquitto, WebhookReceiver

pytestmark = pytest.mark.kafka
SECRET = "hook-secret"
ROOT = Path(__file__).resolve().parents[2]


def replay_alerts(n_cams=4, per_cam=6):
    """A replay's alerts: per camera new → updates → end, deterministic ids (as the engine makes them)."""
    out = []
    for c in range(n_cams):
        cam = f"cam-{c}"
        for k in range(per_cam):
            typ = "new" if k == 0 else "end" if k == per_cam - 1 else "update"
            out.append(
                AlertMessage(
                    id=f"{cam}-a",
                    type=typ,
                    camera=cam,
                    score=0.8,
                    peak=0.9,
                    start_clip=10,
                    end_clip=10 + k,
                    start_time=1.7e9,
                    end_time=1.7e9 + k,
                    model_name="lego",
                    model_version="v7",
                    backend="onnxruntime",
                    evidence=[Evidence("f", c, k)],
                    produced=1.7e9 + k,
                    epoch=3,
                )
            )
    return out


def produce(t, topic, alerts, v1_every=0, pause=0.0):
    for i, a in enumerate(alerts):
        raw = encode_alert_v1(a) if v1_every and i % v1_every == 0 else a.encode()
        t.produce(topic, a.camera, raw, headers=list(ALERT_HEADERS))
        if pause:
            t.flush(timeout=30)
            time.sleep(pause)
    t.flush(timeout=30)


def test_kafka_console_consumer_reads_v2_alerts(kafka_bootstrap, make_topic, make_transport, kafka_cfg):
    topic = make_topic("alertsv2", partitions=2)
    alerts = replay_alerts(2, 3)
    produce(make_transport(kafka_cfg, consume=False), topic, alerts)
    libs = kafka_fetch(quiet=True)
    cmd = [
        "java",
        "-cp",
        f"{libs}/*",
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server",
        kafka_bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        str(len(alerts)),
        "--timeout-ms",
        "60000",
        "--property",
        "print.key=true",
        "--property",
        "key.separator=\t",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if "\t" in ln]
    assert len(lines) == len(alerts)
    schema = jsonschema.Draft202012Validator(json.loads(ALERT_SCHEMA_FILE.read_text()))
    got = set()
    for ln in lines:
        key, value = ln.split("\t", 1)
        rec = json.loads(value)
        schema.validate(rec)
        assert rec["camera"] == key and rec["v"] == 2 and rec["epoch"] == 3 and rec["model"]["version"] == "v7"
        got.add((rec["id"], rec["type"], rec["end_clip"]))
    assert got == {(a.id, a.type, a.end_clip) for a in alerts}


def test_notify_mqtt_exactly_once_after_dedup_across_a_broker_restart(
    kafka_bootstrap, make_topic, make_transport, kafka_cfg, kafka_make_cfg, tmp_path
):
    import paho.mqtt.client as mqtt

    if not Mosquitto.available():
        pytest.fail("mosquitto not installed (apt-get install -y mosquitto; deploy/setup.sh does it)")
    topic = make_topic("notifymqtt")
    group = f"fwtest.notify.{uuid.uuid4().hex[:8]}"
    mq = Mosquitto(tmp_path / "mosq")
    mq.start()
    got: list = []
    sub = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"fwtest-sub-{uuid.uuid4().hex[:6]}", clean_session=False
    )  # persistent session: the broker queues for us across its restart
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe([("fw/+/new", 1), ("fw/+/update", 1), ("fw/+/end", 1)])
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    sub.reconnect_delay_set(1, 2)
    sub.connect("127.0.0.1", mq.port)
    sub.loop_start()
    time.sleep(1)
    alerts = replay_alerts(4, 8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSEWATCH_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusewatch",
            "--transport",
            "kafka",
            "--bootstrap",
            kafka_bootstrap,
            "--set",
            f"topics.alerts={topic}",
            "--set",
            "mqtt.topic_prefix=fw",
            "--set",
            "mqtt.publish_timeout=2",
            "--set",
            "notify.retry_max=2",
            "notify",
            "--mqtt",
            f"127.0.0.1:{mq.port}",
            "--group",
            group,
            "--from-beginning",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        p = make_transport(kafka_cfg, consume=False)
        half = len(alerts) // 2
        produce(p, topic, alerts[:half], v1_every=5, pause=0.05)
        deadline = time.monotonic() + 60
        while len({x[1] for x in got}) < half // 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        mq.stop()  # mid-replay: alerts keep coming while the broker is down
        produce(p, topic, alerts[half:], v1_every=5, pause=0.05)
        time.sleep(3)
        mq.start()
        want = {a.event_key for a in alerts}
        deadline = time.monotonic() + 120
        keys = set()
        while time.monotonic() < deadline:
            keys = {"{id}:{type}:{end_clip}".format(**json.loads(pl)) for _, pl in got}
            if keys >= want:
                break
            time.sleep(0.2)
        assert keys == want, f"missing {sorted(want - keys)[:5]}"
        for t, pl in got:
            d = json.loads(pl)
            assert t == f"fw/{d['camera']}/{d['type']}" and d["v"] == 2
        # offsets are committed once everything is delivered
        mon = make_transport(kafka_make_cfg(kafka_bootstrap), group_id=group, produce=False)
        deadline = time.monotonic() + 30
        while committed_total(mon, topic)[0] != len(alerts) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert committed_total(mon, topic) == (len(alerts), len(alerts))
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        sub.loop_stop()
        mq.stop()
    assert proc.returncode == 0, err[-3000:]
    import re

    m = re.search(r"(\d+) retries", err)
    assert m and int(m.group(1)) >= 1, err[-2000:]  # the restart really interrupted delivery


def test_notify_webhook_every_alert_delivered_signed(
    kafka_bootstrap, make_topic, make_transport, kafka_make_cfg, tmp_path
):
    from fusewatch.sinks import build_sinks
    from fusewatch.sinks.notifier import Notifier

    topic = make_topic("notifyhook")
    rx = WebhookReceiver(SECRET, fail_first=2)
    cfg = kafka_make_cfg(
        kafka_bootstrap,
        **{
            "topics.alerts": topic,
            "webhook.urls": rx.url,
            "webhook.secret": SECRET,
            "webhook.retries": 3,
            "webhook.backoff_initial": 0.05,
            "webhook.backoff_max": 0.2,
            "webhook.dead_letter_file": str(tmp_path / "dl.jsonl"),
            "notify.group_id": f"fwtest.hook.{uuid.uuid4().hex[:8]}",
        },
    )
    alerts = replay_alerts(3, 4)
    produce(make_transport(cfg, consume=False), topic, alerts, v1_every=3)
    t = make_transport(cfg, group_id=cfg.notify.group_id)
    n = Notifier(cfg, t, build_sinks(cfg))
    try:
        n.subscribe(from_beginning=True)
        deadline = time.monotonic() + 90
        while n.stats.records < len(alerts) and time.monotonic() < deadline:
            n.step()
        assert set(rx.delivered()) == {a.event_key for a in alerts}
        assert all(r["signature_ok"] for r in rx.requests)
        assert sum(r["failed"] for r in rx.requests) == 2 * len(alerts)
        assert not (tmp_path / "dl.jsonl").exists()
        assert committed_total(t, topic) == (len(alerts), len(alerts))
    finally:
        n.close()
        rx.close()
