"""Helpers of the 3-node cluster tests (:mod:`tests.integration.test_cluster`)."""

from __future__ import annotations

import time

import pytest

from fusewatch.stream.cluster import LocalCluster
from fusewatch.stream.transport.base import TransportError
from tests.integration.conftest import free_ports, make_cfg, port_open


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One 3-node cluster (384 MiB heaps, private ports and data dirs) for the whole module."""
    for _ in range(20):  # six consecutive free ports
        base = free_ports(1)[0]
        if base < 60000 and not any(port_open(f"127.0.0.1:{base + i}") for i in range(6)):
            break
    c = LocalCluster(tmp_path_factory.mktemp("kafka-cluster"), brokers=3, base_port=base, heap="384m")
    t0 = time.monotonic()
    c.up()
    print(f"3-node cluster up in {time.monotonic() - t0:.1f}s at {c.bootstrap}")
    try:
        yield c
    finally:
        c.down(kill=True)


def _admin(c: LocalCluster):
    from fusewatch.stream.transport.kafka import admin_client

    return admin_client(make_cfg(c.bootstrap, **{"kafka.connect_timeout_s": 30}))


def partitions(c: LocalCluster, topics: list[str]) -> list[dict]:
    a = _admin(c)
    try:
        return [dict(p, topic=t["name"]) for t in a.describe_topics(topics) for p in t["partitions"]]
    finally:
        a.close()


def wait_fully_replicated(c: LocalCluster, topics: list[str], timeout: float = 60) -> float:
    """Wait until every partition of ``topics`` (and the offsets topic) has all 3 replicas in sync."""
    t0 = time.monotonic()
    lagging: list = []
    while time.monotonic() - t0 < timeout:
        try:
            lagging = [
                (p["topic"], p["partition_index"], p["isr_nodes"])
                for p in partitions(c, [*topics, "__consumer_offsets"])
                if len(p["isr_nodes"]) < 3
            ]
        except TransportError as e:
            lagging = [str(e)]
        if not lagging:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"not fully replicated within {timeout}s: {lagging[:5]}")


def topic_settings(bootstrap: str, topics: list[str]) -> dict[str, dict]:
    """Read back from the brokers, per topic: ``partitions``, ``rf`` (the set of replica counts over
    its partitions, Metadata) and ``configs``: the topic's own configs (DescribeConfigs entries whose
    source is ``DYNAMIC_TOPIC_CONFIG``: set on the topic, not inherited from a broker default)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from fusewatch.stream.transport.kafka import admin_client

    a = admin_client(make_cfg(bootstrap, **{"kafka.connect_timeout_s": 30}))
    try:
        meta = {t["name"]: t["partitions"] for t in a.describe_topics(topics)}
        res = [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        got = a.describe_configs(res, config_filter="all")["topic"]
    finally:
        a.close()
    return {
        t: {
            "partitions": len(meta[t]),
            "rf": {len(p["replica_nodes"]) for p in meta[t]},
            "configs": {k: v["value"] for k, v in got[t].items() if v["config_source"] == "DYNAMIC_TOPIC_CONFIG"},
        }
        for t in topics
    }


def _segment_sizes(c: LocalCluster, k: int, topic: str) -> dict[str, int]:
    out = {}
    for d in c.data_dir(k).glob(f"{topic}-*"):
        out[d.name] = sum(f.stat().st_size for f in d.glob("*.log"))
    return out


def group_members(c: LocalCluster, group: str) -> tuple[str, dict[str, set[int]]]:
    """(group state, {client_id: assigned partitions}) of a consumer group."""
    import kafka.errors as kerr

    a = _admin(c)
    try:
        g = a.describe_groups([group])[group]
    except kerr.KafkaError as e:  # e.g. the coordinator is not elected yet: ask again
        return f"unknown ({type(e).__name__})", {}
    finally:
        a.close()
    out: dict[str, set[int]] = {}
    for m in g.get("members") or []:
        parts = set()
        for t in (m.get("member_assignment") or {}).get("assigned_partitions") or []:
            parts |= set(t["partitions"])
        out.setdefault(m["client_id"], set()).update(parts)
    return g.get("group_state"), out


@pytest.fixture
def healthy(cluster):
    """All nodes running and registered, and no partition under-replicated (every partition's ISR ==
    its replicas, :meth:`LocalCluster.wait_in_sync`), before and after a test."""

    def all_up_in_sync() -> None:
        for k in cluster.nodes:
            if not cluster.pid(k):
                cluster.start(k)
        cluster.wait_ready(min_brokers=3)
        cluster.wait_in_sync(timeout=90)

    all_up_in_sync()
    yield cluster
    all_up_in_sync()
