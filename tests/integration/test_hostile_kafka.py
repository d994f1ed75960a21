"""Issue 10 regressions against the real broker: records produced with a raw kafka-python producer
(as a foreign or hostile producer would) onto the features topic; the engine stays alive and
dead-letters them with their reason; the state rebuild is bounded."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.serving.service import EngineService
from fusewatch.stream.schema import FeatureMessage, Representation, decode_dead_letter
from fusewatch.stream.topics import create_topics
from fusewatch.stream.transport.kafka import KafkaTransport
from tests.integration.kafka_helpers import drain_topic, save_plain_lego

pytestmark = pytest.mark.kafka
WINDOW, DIMS = 8, {"a": 12, "b": 5}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("hostile-model") / "lego.pt"
    save_plain_lego(p, WINDOW, DIMS)
    return p


def setup(kafka_bootstrap, kafka_make_cfg, model_path, partitions=3, **over):
    run = uuid.uuid4().hex[:10]
    o = {
        "topics.features": f"fwtest.hostile.f.{run}",
        "topics.alerts": f"fwtest.hostile.a.{run}",
        "topics.dead_letter": f"fwtest.hostile.d.{run}",
        "engine.group_id": f"fwtest.hostile.g.{run}",
        "engine.model": str(model_path),
        "engine.backend": "onnxruntime",
        "engine.rebuild_history": 16,
    }
    o.update(over)
    cfg = kafka_make_cfg(kafka_bootstrap, **o)
    create_topics(cfg, partitions=partitions)
    return cfg


def feature(cam, clip, a=None, dtype=np.float32):
    rng = np.random.default_rng(clip)
    a = rng.normal(size=12) if a is None else a
    t = clip * 1.6
    return FeatureMessage(
        cam,
        clip,
        t,
        t + 1.5,
        1.7e9 + t,
        1.7e9 + t + 1.5,
        16 * clip,
        16 * clip + 15,
        [Representation("a", np.asarray(a, dtype)), Representation("b", rng.normal(size=5).astype(np.float32))],
        produced=0.0,
    )


def raw_producer(cfg):
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers, acks="all")


def run_engine(cfg, model, idle=3.0):
    t = KafkaTransport(cfg, group_id=cfg.engine.group_id)
    try:
        svc = EngineService(cfg, model, t)
        svc.run(idle_exit_s=idle)
    finally:
        t.close()
    return svc


def reasons(cfg):
    return sorted(decode_dead_letter(r.value)["reason"] for r in drain_topic(cfg, cfg.topics.dead_letter))


@pytest.mark.timeout(180)
def test_hostile_records_from_a_raw_producer_are_dead_lettered_and_the_engine_lives(
    kafka_bootstrap, kafka_make_cfg, model_path
):
    """The adversarial runs' records: an ``<f8`` feature at 1e300 (schema-valid, Inf as float32;
    it used to end ``fusewatch engine`` and crash-loop the group), a record keyed ``attacker``
    carrying camera ``victim``, a camera's record on a partition other than murmur2's, and a valid
    clip under a 600 KB key."""
    cfg = setup(kafka_bootstrap, kafka_make_cfg, model_path)
    model = load_serving_model(cfg)
    p = raw_producer(cfg)
    from kafka.partitioner.default import murmur2

    topic = cfg.topics.features
    p.send(topic, key=b"cam-f8", value=feature("cam-f8", 0, np.full(12, 1e300), np.float64).encode())
    p.send(topic, key=b"attacker", value=feature("victim", 0).encode())
    right = (murmur2(b"cam-wp") & 0x7FFFFFFF) % 3
    p.send(topic, key=b"cam-wp", value=feature("cam-wp", 0).encode(), partition=(right + 1) % 3)
    for i in range(1, 4):
        for cam in ("cam-f8", "victim", "cam-wp"):
            p.send(topic, key=cam.encode(), value=feature(cam, i).encode())
    # a valid clip under a 600 KB key (the broker takes it): its dead letter used to carry the key
    # twice, exceed the producer's limit and end the engine on every restart
    p.send(topic, key=b"k" * 600_000, value=feature("victim", 4).encode())
    p.send(topic, key=b"victim", value=feature("victim", 4).encode())
    p.flush()
    p.close()
    svc = run_engine(cfg, model)
    assert svc.stats.records == 14 and svc.stats.scored == 10
    assert reasons(cfg) == ["key_mismatch", "key_mismatch", "non_finite_after_cast", "wrong_partition"]
    assert "attacker" not in svc.cams
    big = [decode_dead_letter(r.value) for r in drain_topic(cfg, cfg.topics.dead_letter)]
    assert sorted(d["key_size"] for d in big if d["reason"] == "key_mismatch") == [8, 600_000]


@pytest.mark.timeout(240)
def test_rebuild_reads_a_bounded_number_of_records_whatever_the_camera_mix(kafka_bootstrap, kafka_make_cfg, model_path):
    """Finding 3: one new camera beside a long one made the rebuild re-read the whole partition.
    Now it reads at most (window + rebuild_history) records per camera (+ one chunk); the long
    camera continues exactly, its alert state included."""
    cfg = setup(kafka_bootstrap, kafka_make_cfg, model_path, partitions=1)
    model = load_serving_model(cfg)
    p = raw_producer(cfg)
    topic = cfg.topics.features
    for i in range(600):
        p.send(topic, key=b"long", value=feature("long", i).encode())
    p.send(topic, key=b"new", value=feature("new", 0).encode())
    p.flush()
    first = run_engine(cfg, model)
    assert first.stats.scored == 601
    p.send(topic, key=b"long", value=feature("long", 600).encode())
    p.flush()
    p.close()
    t0 = time.monotonic()
    second = run_engine(cfg, model, idle=1.0)
    need = WINDOW + cfg.engine.rebuild_history
    st = second.stats  # (the group may assign the partition twice: one rebuild each)
    assert st.rebuilds >= 1 and 0 < st.rebuild_max_records <= need * 2, (st.rebuilds, st.rebuilt_records)
    assert st.rebuild_seconds / st.rebuilds < 10 and time.monotonic() - t0 < 30
    assert second.stats.scored == 1 and second.cams["long"].exact and second.cams["new"].exact
