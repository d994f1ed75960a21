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
