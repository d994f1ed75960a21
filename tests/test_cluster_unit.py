"""Cluster pieces that need no broker: replication settings, node layout, rendered configs, CLI."""

from __future__ import annotations

import pytest

from fusewatch.stream.broker import BrokerError
from fusewatch.stream.cluster import LocalCluster
from fusewatch.stream.config import ConfigError, load_config
from fusewatch.stream.topics import replication_settings
from fusewatch.stream.transport.base import TransportError


def test_replication_settings_auto_and_explicit():
    auto = load_config(env={})
    assert (auto.topics.replication_factor, auto.topics.min_insync_replicas) == (0, 0)
    assert replication_settings(auto, 1) == (1, 1)
    assert replication_settings(auto, 2) == (2, 1)
    assert replication_settings(auto, 3) == (3, 2)
    assert replication_settings(auto, 5) == (3, 2)
    fixed = load_config(env={}, overrides={"topics.replication_factor": 2, "topics.min_insync_replicas": 2})
    assert replication_settings(fixed, 3) == (2, 2)
    with pytest.raises(TransportError, match="replication factor 2 needs >= 2 brokers.*has 1"):
        replication_settings(fixed, 1)
    with pytest.raises(ConfigError, match="topics.min_insync_replicas"):
        load_config(env={}, overrides={"topics.replication_factor": 2, "topics.min_insync_replicas": 3})
    with pytest.raises(ConfigError, match="topics.replication_factor"):
        load_config(env={}, overrides={"topics.replication_factor": -1})


def test_cluster_layout_and_rendered_config(tmp_path):
    c = LocalCluster(tmp_path, brokers=3, base_port=30000)
    assert c.bootstrap == "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
    assert [c.controller_port(k) for k in c.nodes] == [30001, 30003, 30005]
    assert not c.exists() and c.running() == []
    props = c._render(2).read_text()
    assert "node.id=2\n" in props
    assert "controller.quorum.voters=1@127.0.0.1:30001,2@127.0.0.1:30003,3@127.0.0.1:30005\n" in props
    assert "listeners=PLAINTEXT://127.0.0.1:30002,CONTROLLER://127.0.0.1:30003\n" in props
    assert "offsets.topic.replication.factor=3\n" in props and "min.insync.replicas=2\n" in props
    import re

    assert not re.search(r"@[A-Z_]+@", props), "unreplaced placeholder"
    with pytest.raises(BrokerError, match="no broker 4"):
        c.start(4)
    c.cluster_id = "x"
    c._save()
    with pytest.raises(BrokerError, match="has 3 brokers, not 5"):
        LocalCluster(tmp_path, brokers=5)
    with pytest.raises(BrokerError, match="needs a majority of the other brokers running"):
        c.recover(1)
    c1 = LocalCluster(tmp_path / "one", brokers=1, base_port=30010)
    assert "offsets.topic.replication.factor=1\n" in c1._render(1).read_text()


def test_cli_cluster_commands_parse(tmp_path, monkeypatch, capsys):
    from fusewatch.cli import main

    monkeypatch.setenv("LOCALKAFKA_CLUSTER_DIR", str(tmp_path))
    assert main(["kafka", "status", "--cluster"]) == 3
    assert "no cluster in" in capsys.readouterr().out
    assert main(["kafka", "recover", "--broker", "2"]) != 0  # no cluster: a clear error, not a traceback


def test_under_replicated_compares_isr_with_replicas(monkeypatch):
    import fusewatch.stream.topics as topics

    def part(i, replicas, isr, leader=1, err=0):
        return {
            "partition_index": i,
            "leader_id": leader,
            "replica_nodes": replicas,
            "isr_nodes": isr,
            "error_code": err,
        }

    meta = [
        {"name": "a", "error_code": 0, "partitions": [part(0, [1, 2, 3], [3, 1, 2]), part(1, [2, 3, 1], [2, 1])]},
        {
            "name": "__consumer_offsets",
            "error_code": 0,
            "partitions": [part(0, [1, 2, 3], [1, 2, 3], leader=-1, err=5)],
        },
        {"name": "b", "error_code": 0, "partitions": [part(0, [1, 2, 3], [1, 2, 3])]},
    ]

    class Admin:
        def describe_topics(self, topics=None):
            assert topics is None  # every topic, internal ones included
            return meta

        def close(self):
            pass

    monkeypatch.setattr(topics, "admin_client", lambda cfg: Admin())
    cfg = load_config(env={})
    assert topics.under_replicated(cfg) == [
        "__consumer_offsets-0 (replicas [1, 2, 3], in sync [1, 2, 3])",
        "a-1 (replicas [1, 2, 3], in sync [1, 2])",
    ]
    with pytest.raises(TransportError, match=r"^2 partition\(s\) still under-replicated after 0.2 s: __consumer"):
        topics.wait_fully_replicated(cfg, timeout=0.2, poll_s=0.05)
    meta[0]["partitions"][1]["isr_nodes"] = [1, 2, 3]
    meta[1]["partitions"][0].update(leader_id=2, error_code=0)
    assert topics.under_replicated(cfg) == [] and topics.wait_fully_replicated(cfg, timeout=0) < 1


def test_rolling_restart_waits_for_the_isr_before_the_next_broker(tmp_path, monkeypatch):
    c = LocalCluster(tmp_path, brokers=3, base_port=30020)
    calls: list = []
    running = {1, 2, 3}
    fail_after = [None]
    monkeypatch.setattr(c, "pid", lambda k: 1000 + k if k in running else None)
    monkeypatch.setattr(c, "restart", lambda k, kill=False, downtime=0.0: calls.append(("restart", k)))

    def wait_in_sync(timeout=None):
        calls.append("isr")
        if fail_after[0] is not None and calls.count("isr") > fail_after[0]:
            raise TransportError(
                "1 partition(s) still under-replicated after 180 s: t-0 (replicas [1, 2, 3], in sync [1, 3])"
            )
        return 0.5

    monkeypatch.setattr(c, "wait_in_sync", wait_in_sync)
    seen = []
    out = c.rolling_restart(progress=lambda *a: seen.append(a))
    assert calls == ["isr", ("restart", 1), "isr", ("restart", 2), "isr", ("restart", 3), "isr"]
    assert [k for k, _, w in out] == [1, 2, 3] and all(w == 0.5 for _, _, w in out) and seen == out

    calls.clear()
    fail_after[0] = 2  # the ISR wait after broker 2 times out: broker 3 must not go down
    with pytest.raises(BrokerError, match=r"under-replicated .* \(restarted: \[1, 2\], not restarted: \[3\]\)$"):
        c.rolling_restart()
    assert ("restart", 3) not in calls

    calls.clear()
    running.discard(3)  # another broker is down: restarting one would leave partitions without a quorum of replicas
    with pytest.raises(BrokerError, match=r"start broker\(s\) \[3\] first"):
        c.rolling_restart([1])
    with pytest.raises(BrokerError, match=r"start broker\(s\) \[3\] first"):
        c.rolling_restart()
    assert calls == []
    assert [k for k, _, _ in c.rolling_restart([1], sync=False)] == [1] and calls == [("restart", 1)]
    calls.clear()
    assert [k for k, _, _ in c.rolling_restart([3])] == [3] and calls == [("restart", 3), "isr"]  # start it, wait


def test_cli_restart_cluster_needs_a_cluster_and_the_session_default(tmp_path, monkeypatch, capsys):
    from fusewatch.cli import main

    monkeypatch.setenv("LOCALKAFKA_CLUSTER_DIR", str(tmp_path))
    assert main(["kafka", "restart", "--cluster"]) == 2
    err = capsys.readouterr().err
    assert "no kafka cluster in" in err and len(err.strip().splitlines()) == 1
    # a crashed engine's partitions move after the session timeout: 10 s by default (kafka-python
    # heartbeats from its I/O thread, so slow scoring does not expire a session)
    k = load_config(env={}).kafka
    assert (k.session_timeout_ms, k.heartbeat_interval_ms) == (10000, 3000)
