"""KafkaTransport against a real broker: round trip, per-camera order, rebalance, dead letters,
broker down, broker crash/restart."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import msgpack
import numpy as np
import pytest

from fusewatch.stream.alert_schema import AlertMessage, decode_alert
from fusewatch.stream.schema import (
    Evidence,
    FeatureMessage,
    Representation,
    SchemaError,
    dead_letter_payload,
    decode_dead_letter,
    decode_features,
)
from fusewatch.stream.transport.base import DeliveryError, Record, TransportError

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def feature(camera: str, clip: int, dim: int = 8) -> FeatureMessage:
    rng = np.random.default_rng(hash((camera, clip)) & 0xFFFF)
    return FeatureMessage(
        camera=camera,
        clip=clip,
        pts_start=clip * 1.6,
        pts_end=clip * 1.6 + 1.5,
        wall_start=1.7e9 + clip * 1.6,
        wall_end=1.7e9 + clip * 1.6 + 1.5,
        frame_start=clip * 16,
        frame_end=clip * 16 + 15,
        reps=[
            Representation("mobilenetv2", rng.standard_normal(dim).astype(np.float32), "mnv2", "1"),
            Representation("flow", rng.standard_normal((2, 3)).astype(np.float16), "flow", "1"),
        ],
    )


def drain(t, want: int, timeout: float = 30.0, commit: bool = True) -> list[Record]:
    """Poll ``t`` until ``want`` records arrived (or timeout); commit after each batch."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        batch = t.poll(max_records=500, timeout=0.5)
        got += batch
        if commit and batch:
            t.commit({r.tp: r.offset + 1 for r in batch})
    return got


def test_roundtrip_features_and_alerts(kafka_cfg, make_topic, make_transport):
    feats, alerts = make_topic("features"), make_topic("alerts")
    prod = make_transport(kafka_cfg, consume=False)
    sent = [feature(f"cam{i % 3}", i // 3) for i in range(12)]
    for m in sent:
        prod.produce(feats, m.camera, m.encode(), headers=[("schema", b"1")])
    alert = AlertMessage(
        id="a-1",
        type="new",
        camera="cam1",
        score=0.9,
        peak=0.95,
        start_clip=3,
        end_clip=5,
        start_time=1.7e9,
        end_time=1.7e9 + 4.8,
        model_name="lego",
        model_version="1",
        backend="torch",
        evidence=[Evidence(feats, 0, 4)],
    )
    prod.produce(alerts, alert.camera, alert.encode())
    prod.flush(timeout=20)

    cons = make_transport(kafka_cfg, produce=False)
    cons.subscribe([feats, alerts], group_id=f"g-{feats}")
    recs = drain(cons, len(sent) + 1)
    assert len(recs) == len(sent) + 1
    by_topic = defaultdict(list)
    for r in recs:
        by_topic[r.topic].append(r)
    got = {(m.camera, m.clip): m for m in (decode_features(r.value) for r in by_topic[feats])}
    assert set(got) == {(m.camera, m.clip) for m in sent}
    for m in sent:
        g = got[(m.camera, m.clip)]
        assert (g.pts_start, g.frame_end, g.wall_end) == (m.pts_start, m.frame_end, m.wall_end)
        for a, b in zip(m.reps, g.reps):
            assert a.name == b.name and a.array.dtype == b.array.dtype
            np.testing.assert_array_equal(a.array, b.array)
    assert all(r.key == f"{decode_features(r.value).camera}".encode() for r in by_topic[feats])
    assert all(dict(r.headers)["schema"] == b"1" for r in by_topic[feats])
    assert all(r.timestamp_ms > 1.6e12 for r in recs)
    [ra] = by_topic[alerts]
    a = decode_alert(ra.value)
    assert (a.id, a.type, a.camera, a.peak, a.evidence[0].offset) == ("a-1", "new", "cam1", 0.95, 4)
    # committed == next offset to read, and positions agree
    for tp in cons.assignment():
        assert cons.committed(tp) in (None, cons.position(tp))
        assert cons.position(tp) == cons.end_offset(tp)
        assert cons.beginning_offset(tp) == 0


def test_ordering_per_camera(kafka_cfg, make_topic, make_transport):
    topic = make_topic("order")
    prod = make_transport(kafka_cfg, consume=False)
    cams = [f"camera-{c}" for c in "abcdef"]
    n = 40
    for clip in range(n):  # interleaved: a0 b0 c0 ... a1 b1 ...
        for c in cams:
            prod.produce(topic, c, feature(c, clip, dim=4).encode())
    prod.flush(timeout=20)
    cons = make_transport(kafka_cfg, produce=False)
    cons.subscribe([topic], group_id=f"g-{topic}")
    recs = drain(cons, n * len(cams))
    assert len(recs) == n * len(cams)
    clips, parts = defaultdict(list), defaultdict(set)
    for r in recs:
        m = decode_features(r.value)
        clips[m.camera].append((r.partition, r.offset, m.clip))
        parts[m.camera].add(r.partition)
    for c in cams:
        assert len(parts[c]) == 1, f"{c} spread over partitions {parts[c]}"
        seq = [clip for _, _, clip in sorted(clips[c])]
        assert seq == list(range(n)), f"{c} out of order"
        assert [clip for _, _, clip in clips[c]] == list(range(n))  # also in poll order
    assert len({p for s in parts.values() for p in s}) > 1  # cameras do use several partitions


def test_rebalance_two_consumers(kafka_cfg, make_topic, make_transport):
    topic = make_topic("rebalance", partitions=3)
    group = f"g-{topic}"
    prod = make_transport(kafka_cfg, consume=False)
    cams = [f"cam{i}" for i in range(12)]

    def produce_batch(start: int, count: int) -> None:
        for clip in range(start, start + count):
            for c in cams:
                prod.produce(topic, c, feature(c, clip, dim=2).encode())
        prod.flush(timeout=20)

    # A commits only from on_revoke (called on kafka-python's IO loop: must not deadlock) and at
    # the end, B after every batch. A duplicate would mean A's revoke-time commit was lost.
    produce_batch(0, 10)
    total = [len(cams) * 10]
    processed: list[tuple[str, int, int]] = []  # (consumer, partition, offset)
    events: dict[str, list] = {"A": [], "B": []}
    assigned: dict[str, set] = {"A": set(), "B": set()}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(name: str, t, commit_in_loop: bool) -> None:
        pending: dict = {}

        def on_assign(tps):
            events[name].append(("assign", set(tps)))
            assigned[name] = set(tps)

        def on_revoke(tps):  # commit what was processed but not committed yet, for revoked tps
            events[name].append(("revoke", set(tps)))
            mine = {tp: off for tp, off in pending.items() if tp in tps}
            if mine:
                t.commit(mine)
            for tp in mine:
                pending.pop(tp, None)

        try:
            t.subscribe([topic], group_id=group, on_assign=on_assign, on_revoke=on_revoke)
            while not stop.is_set():
                batch = t.poll(max_records=7, timeout=0.2)
                if not batch:
                    continue
                with lock:
                    processed.extend((name, r.partition, r.offset) for r in batch)
                for r in batch:
                    pending[r.tp] = r.offset + 1
                if commit_in_loop:
                    t.commit(dict(pending))
                    pending.clear()
                time.sleep(0.05)  # "work"
            if pending:
                t.commit(dict(pending))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    a = make_transport(kafka_cfg, produce=False)
    b = make_transport(kafka_cfg, produce=False)
    ta = threading.Thread(target=run, args=("A", a, False), daemon=True)
    ta.start()
    deadline = time.monotonic() + 40
    while len(processed) < 20 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    assert len(processed) >= 20, f"consumer A got {len(processed)} records"
    tb = threading.Thread(target=run, args=("B", b, True), daemon=True)
    tb.start()
    while (
        (not assigned["B"] or not assigned["A"] or assigned["A"] & assigned["B"])
        and time.monotonic() < deadline
        and not errors
    ):
        time.sleep(0.05)
    produce_batch(10, 5)  # more data after the split
    total[0] += len(cams) * 5
    while len(set((p, o) for _, p, o in processed)) < total[0] and time.monotonic() < deadline and not errors:
        time.sleep(0.1)
    stop.set()
    ta.join(15)
    tb.join(15)
    assert not errors, errors
    # partitions split between A and B, covering the topic
    assert assigned["A"] and assigned["B"]
    assert not assigned["A"] & assigned["B"]
    assert assigned["A"] | assigned["B"] == {(topic, p) for p in range(3)}
    assert any(e[0] == "revoke" for e in events["A"]), events["A"]
    assert any(e[0] == "assign" and e[1] for e in events["B"]), events["B"]
    # no loss, no duplicates
    counts = Counter((p, o) for _, p, o in processed)
    assert len(counts) == total[0], f"lost: {total[0] - len(counts)}"
    dups = {k: v for k, v in counts.items() if v > 1}
    assert not dups, f"delivered twice: {sorted(dups)[:10]}"
    assert {n for n, _, _ in processed} == {"A", "B"}
    # the group's committed offsets reached the end of every partition
    for p in range(3):
        assert a.committed((topic, p)) == a.end_offset((topic, p))


@pytest.mark.parametrize("join_bound_ms", [None, 1], ids=["awaited-join", "lost-join-repaired"])
def test_rejoin_after_partitions_added_with_millisecond_polls(kafka_cfg, make_topic, make_transport, join_bound_ms):
    """Regression for kafka-python 3.0.12's lost join completion: partitions added to a subscribed
    topic trigger a metadata-driven rebalance; an engine polling with 1 ms timeouts used to be left
    REBALANCING with heartbeats off, fetching nothing, until evicted. ``awaited-join``: the transport
    awaits the pending join (bounded by the session timeout). ``lost-join-repaired``: with a 1 ms
    bound the completion is lost as before and the transport must detect it and rejoin."""
    from kafka.admin import NewPartitions

    from fusewatch.stream.transport.kafka import admin_client

    topic = make_topic("rejoin", partitions=1)
    prod = make_transport(kafka_cfg, consume=False)
    cons = make_transport(kafka_cfg, group_id=f"g-{topic}", produce=False)
    if join_bound_ms is not None:
        cons._join_ms = join_bound_ms
    cons.subscribe([topic], f"g-{topic}")
    deadline = time.monotonic() + 30
    while not cons.assignment() and time.monotonic() < deadline:
        cons.poll(100, 0.001)
    assert cons.assignment() == {(topic, 0)}
    admin = admin_client(kafka_cfg)
    try:
        admin.create_partitions({topic: NewPartitions(total_count=3)})
    finally:
        admin.close()
    time.sleep(0.5)
    cams = [f"cam{i}" for i in range(30)]
    for c in cams:
        prod.produce(topic, c, b"x")
    prod.flush(timeout=20)
    got: list[Record] = []
    deadline = time.monotonic() + 40  # > session timeout: a stuck member would be evicted first
    while time.monotonic() < deadline and (len(got) < len(cams) or len(cons.assignment()) < 3):
        got += cons.poll(100, 0.001)
    coord = cons._consumer._coordinator
    assert cons.assignment() == {(topic, p) for p in range(3)}, (
        f"stuck after the rebalance: rejoining={coord.rejoining} state={coord.state} lost_joins={cons.lost_joins}"
    )
    assert sorted(r.key.decode() for r in got) == sorted(cams)
    assert {r.partition for r in got} == {0, 1, 2}


def test_malformed_message_goes_to_dead_letter(kafka_cfg, make_topic, make_transport):
    feats, dlq = make_topic("features"), make_topic("deadletter")
    prod = make_transport(kafka_cfg, consume=False)
    good = [feature("cam1", i) for i in range(3)]
    bad = {
        b"\xc1 not msgpack": "undecodable",
        msgpack.packb({"v": 99, "kind": "features"}): "unsupported_version",
        msgpack.packb([1, 2, 3]): "not_a_map",
        b"": "empty",
    }
    prod.produce(feats, "cam1", good[0].encode())
    for raw in bad:
        prod.produce(feats, "cam1", raw)
    for m in good[1:]:
        prod.produce(feats, "cam1", m.encode())
    prod.flush(timeout=20)

    # the engine's loop in miniature: decode, route failures to the dead-letter topic, commit
    eng = make_transport(kafka_cfg)
    eng.subscribe([feats], group_id=f"g-{feats}")
    decoded, routed = [], 0
    deadline = time.monotonic() + 30
    while len(decoded) + routed < len(good) + len(bad) and time.monotonic() < deadline:
        batch = eng.poll(max_records=100, timeout=0.5)
        for r in batch:
            try:
                decoded.append(decode_features(r.value))
            except SchemaError as e:
                eng.produce(
                    dlq, r.key, dead_letter_payload(r.value, e.reason, str(e), r.topic, r.partition, r.offset, r.key)
                )
                routed += 1
        if batch:
            eng.flush(timeout=20)  # dead letters durable before the offsets move past them
            eng.commit({r.tp: r.offset + 1 for r in batch})
    assert [m.clip for m in decoded] == [0, 1, 2]
    assert routed == len(bad)

    reader = make_transport(kafka_cfg, produce=False)
    reader.subscribe([dlq], group_id=f"g-{dlq}")
    dead = [decode_dead_letter(r.value) for r in drain(reader, len(bad))]
    assert len(dead) == len(bad)
    assert {d["payload"]: d["reason"] for d in dead} == bad
    for d in dead:
        assert d["topic"] == feats and d["key"] == b"cam1" and d["detail"]
    assert sorted(d["offset"] for d in dead) == [1, 2, 3, 4]


def test_broker_unreachable_fails_fast(kafka_make_cfg, kafka_free_ports):
    from fusewatch.stream.transport.kafka import KafkaTransport

    (port,) = kafka_free_ports(1)  # nothing listens there
    cfg = kafka_make_cfg(f"127.0.0.1:{port}", **{"kafka.connect_timeout_s": 2})
    t0 = time.monotonic()
    with pytest.raises(TransportError) as ei:
        KafkaTransport(cfg)
    elapsed = time.monotonic() - t0
    assert 1.5 <= elapsed < 2 + 3, elapsed
    msg = str(ei.value)
    assert "unreachable" in msg and f"127.0.0.1:{port}" in msg and "\n" not in msg


def test_wrong_protocol_fails_fast(kafka_sasl_bootstrap, kafka_make_cfg):
    """A client speaking PLAINTEXT to the SASL listener gets a clear error, not a hang."""
    from fusewatch.stream.transport.kafka import KafkaTransport

    cfg = kafka_make_cfg(kafka_sasl_bootstrap, **{"kafka.connect_timeout_s": 10})
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="security protocol"):
        KafkaTransport(cfg)
    assert time.monotonic() - t0 < 5


def test_produce_without_broker_raises_on_flush_and_recovers_after_restart(private_kafka, make_transport):
    """Crash the (private) broker: flush reports unacknowledged records as DeliveryError within
    its timeout; after a restart on the same data the same producer delivers them and a consumer
    resumes from the committed offset."""
    from fusewatch.stream.topics import create_topics

    cfg = private_kafka.cfg(**{"kafka.connect_timeout_s": 10})
    st = private_kafka.status()
    assert st.running and st.ready and st.bootstrap == private_kafka.bootstrap
    assert private_kafka.up() == private_kafka.bootstrap  # second `up` is a no-op
    assert private_kafka.status().pid == st.pid

    topic = "fwtest.restart"
    create_topics(cfg, partitions=2, names=[topic])
    t = make_transport(cfg)
    for i in range(10):
        t.produce(topic, f"cam{i % 2}", feature(f"cam{i % 2}", i).encode())
    t.flush(timeout=20)
    t.subscribe([topic], group_id="g-restart")
    assert len(drain(t, 10)) == 10

    private_kafka.down(kill=True)  # crash
    for i in range(10, 14):
        t.produce(topic, f"cam{i % 2}", feature(f"cam{i % 2}", i).encode())
    t0 = time.monotonic()
    with pytest.raises(DeliveryError, match="not acknowledged"):
        t.flush(timeout=2)
    assert time.monotonic() - t0 < 2 + 3

    private_kafka.restart()
    assert private_kafka.status().ready
    t.flush(timeout=60)  # the pending records go through after the restart
    recs = drain(t, 4, timeout=60)
    clips = sorted(decode_features(r.value).clip for r in recs)
    assert clips == [10, 11, 12, 13]  # committed offsets survived the crash: no replay of 0..9
