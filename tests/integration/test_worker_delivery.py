"""Workers never report success after losing data (real brokers, the real CLI).

* broker killed mid-replay and back within ``kafka.delivery_timeout_s`` → every clip reaches the
  topic, exit 0, published == produced;
* broker killed and not back in time → exit 1 with a summary, lost > 0, published == on the topic;
* a message over ``max_message_bytes`` → exit 2 at once, naming the limit; a record over the
  broker's topic limit → :class:`RecordTooLargeError` naming it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid

import pytest

from fusewatch.stream.paths import shared_data
from fusewatch.stream.topics import create_topics
from fusewatch.stream.transport.base import DeliveryError, RecordTooLargeError

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(not shared_data("ped2").is_dir(), reason="shared Ped2 data not found (../shared)"),
]

PED2 = shared_data("ped2")
VIDEO = PED2 / "test_02.mp4"  # 180 frames at 10 fps: 11 clips of 16 frames per loop
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def replay_cli(bootstrap: str, topic: str, *extra: str, loop: int = 2, speed: str = "1.5") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "fusewatch",
        "--transport",
        "kafka",
        "--bootstrap",
        bootstrap,
        "--set",
        f"topics.features={topic}",
        "--set",
        "features.extractors=flow",
        *extra,
        "replay",
        str(VIDEO),
        "--camera",
        "cam",
        "--speed",
        speed,
        "--loop",
        str(loop),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def on_topic(cfg, topic: str) -> int:
    from fusewatch.stream.transport.kafka import KafkaTransport

    t = KafkaTransport(cfg, group_id=None, produce=False)
    try:
        return sum(t.end_offset((topic, p)) - t.beginning_offset((topic, p)) for p in t.partitions_for(topic))
    finally:
        t.close()


def camera_line(out: str) -> tuple[int, int]:
    m = re.search(r"^cam: (\d+) clips, (\d+) lost", out, re.M)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def wait_for_records(cfg, topic: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while on_topic(cfg, topic) < n:
        assert time.monotonic() < deadline, f"fewer than {n} records on {topic} after {timeout}s"
        time.sleep(0.5)


@pytest.mark.timeout(400)
def test_broker_back_within_delivery_timeout_loses_nothing(private_kafka):
    cfg = private_kafka.cfg()
    topic = f"fwtest.deliver.{uuid.uuid4().hex[:8]}"
    create_topics(cfg, partitions=1, names=[topic])
    p = replay_cli(private_kafka.bootstrap, topic, "--set", "kafka.delivery_timeout_s=120")
    try:
        wait_for_records(cfg, topic, 2)
        private_kafka.down(kill=True)  # crash mid-replay ...
        time.sleep(4)
        private_kafka.up()  # ... and back on the same data
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-3000:]
    published, lost = camera_line(out)
    assert lost == 0 and published == 2 * 11, out
    assert on_topic(cfg, topic) == published  # every clip reached the topic, once


@pytest.mark.timeout(400)
def test_broker_gone_past_delivery_timeout_fails_the_run(private_kafka):
    cfg = private_kafka.cfg()
    topic = f"fwtest.lose.{uuid.uuid4().hex[:8]}"
    create_topics(cfg, partitions=1, names=[topic])
    p = replay_cli(
        private_kafka.bootstrap,
        topic,
        "--set",
        "kafka.delivery_timeout_s=6",
        "--set",
        "kafka.request_timeout_ms=3000",
        loop=1,
        speed="1.5",
    )
    try:
        wait_for_records(cfg, topic, 2)
        private_kafka.down(kill=True)  # crash, not back before the records' deadlines
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
        private_kafka.up()
    assert p.returncode == 1, (out, err[-3000:])
    published, lost = camera_line(out)
    assert lost > 0 and published + lost == 11, out
    summary = [x for x in err.splitlines() if x.startswith("fusewatch: replay:")]
    assert len(summary) == 1 and f"{lost} clip(s) lost" in summary[0] and "cam: " in summary[0], err[-3000:]
    assert on_topic(cfg, topic) == published  # nothing lost was counted as published


def test_message_over_max_message_bytes_fails_fast(kafka_bootstrap, make_topic):
    topic = make_topic("toolarge", partitions=1)
    t0 = time.monotonic()
    p = replay_cli(
        kafka_bootstrap,
        topic,
        "--set",
        "max_message_bytes=1024",  # the smallest limit the config takes
        "--set",
        "features.extractors=flow,flow_grid,objects",
        loop=0,
        speed="1",
    )  # ~1.4 kB, loop forever
    try:
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 2 and "Traceback" not in err, (out, err[-3000:])
    line = [x for x in err.splitlines() if x.startswith("fusewatch: error:")]
    assert line and "exceeds max_message_bytes=1024" in line[0], err[-3000:]
    assert time.monotonic() - t0 < 60  # a forever-looping replay ended at the first clip


def test_record_over_the_topic_limit_is_lost_at_once_naming_the_limit(
    kafka_bootstrap, kafka_make_cfg, make_transport, _created_topics
):
    small = kafka_make_cfg(kafka_bootstrap, **{"max_message_bytes": 1024})
    topic = f"fwtest.small.{uuid.uuid4().hex[:8]}"
    create_topics(small, partitions=1, names=[topic])  # topic max.message.bytes = 1024 + overhead
    _created_topics.append(topic)
    t = make_transport(kafka_make_cfg(kafka_bootstrap, **{"max_message_bytes": 1_000_000}), consume=False)
    outcome: list = []
    done = threading.Event()

    def cb(err):
        outcome.append(err)
        done.set()

    t0 = time.monotonic()
    t.produce(topic, "cam", b"x" * 200_000, on_delivery=cb)
    with pytest.raises(DeliveryError, match="1 record\\(s\\) lost and 0 not acknowledged"):
        t.flush(timeout=30)
    assert done.wait(1) and time.monotonic() - t0 < 20
    err = outcome[0]
    assert isinstance(err, RecordTooLargeError), err
    assert "200000 bytes" in str(err) and "max.message.bytes" in str(err)
    # kafka-python's idempotent producer treats MESSAGE_TOO_LARGE as fatal and aborts later records:
    # they are reported lost too (never hang, never count as delivered)
    t.produce(topic, "cam", b"small", on_delivery=outcome.append)
    try:
        t.flush(timeout=30)
    except DeliveryError:
        pass
    assert len(outcome) == 2 and t.delivery.delivered + t.delivery.lost == 2 and t.delivery.lost >= 1
    assert (outcome[1] is None) == (t.delivery.delivered == 1)
