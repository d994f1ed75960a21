"""Fixtures for tests against a real Kafka broker (marker ``kafka``).

* ``kafka_bootstrap`` (session): uses a broker already answering on 127.0.0.1:9092 (CI starts one
  with ``fusewatch kafka up``), else starts one with :func:`fusewatch.stream.broker.kafka_up` and stops it at
  the end of the session (only if this fixture started it).
* ``kafka_sasl_bootstrap``: its SASL_PLAINTEXT (PLAIN) listener, user fusewatch/fusewatch-secret.
* ``kafka_cfg``: a fresh validated :class:`Config` pointing at it (environment ignored).
* ``make_topic``: creates a uniquely named topic (uuid) per call, deleted at session end.
* ``make_transport``: builds :class:`KafkaTransport` objects and closes them after the test.
* ``kafka_make_cfg`` / ``kafka_free_ports``: helper functions as fixtures (plain helpers shared by
  several test modules live in :mod:`tests.integration.kafka_helpers`).
* ``private_kafka`` (module): a second broker on free ports with its own data dir, for tests that
  kill or restart the broker without disturbing the shared one.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from fusewatch.stream.broker import BrokerError, kafka_down, kafka_restart, kafka_status, kafka_up
from fusewatch.stream.config import Config, load_config
from fusewatch.stream.transport.base import TransportError

SHARED_BOOTSTRAP = "127.0.0.1:9092"
SHARED_SASL_BOOTSTRAP = "127.0.0.1:9094"


def make_cfg(bootstrap: str, **overrides) -> Config:
    """Config for tests: defaults + bootstrap + ``section.field`` overrides; environment ignored."""
    over = {"kafka.bootstrap_servers": bootstrap, "kafka.connect_timeout_s": 15}
    over.update(overrides)
    return load_config(env={}, overrides=over)


def answers(bootstrap: str, timeout: float = 2.0) -> bool:
    from fusewatch.stream.transport.kafka import check_broker

    try:
        check_broker(make_cfg(bootstrap), timeout=timeout)
        return True
    except TransportError:
        return False


def port_open(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="session")
def kafka_make_cfg():
    """``kafka_make_cfg(bootstrap, **{"section.field": value}) -> Config`` (environment ignored)."""
    return make_cfg


@pytest.fixture(scope="session")
def kafka_free_ports():
    """``kafka_free_ports(n) -> [port, ...]``: currently unused loopback ports."""
    return free_ports


@pytest.fixture(scope="session")
def kafka_bootstrap():
    if answers(SHARED_BOOTSTRAP):
        yield SHARED_BOOTSTRAP
        return
    try:
        addr = kafka_up(quiet=True)
    except BrokerError as e:
        pytest.fail(f"no Kafka broker on {SHARED_BOOTSTRAP} and `fusewatch kafka up` failed: {e}")
    try:
        yield addr
    finally:
        kafka_down(quiet=True)


@pytest.fixture(scope="session")
def kafka_sasl_bootstrap(kafka_bootstrap):
    """The SASL_PLAINTEXT/PLAIN listener of the shared broker (skips when it has none, e.g. a broker
    not started by deploy/kafka/up.sh)."""
    addr = kafka_bootstrap.rsplit(":", 1)[0] + ":" + SHARED_SASL_BOOTSTRAP.rsplit(":", 1)[1]
    if not port_open(addr):
        pytest.skip(f"no SASL listener on {addr} (broker not started by deploy/kafka/up.sh)")
    return addr


@pytest.fixture
def kafka_cfg(kafka_bootstrap) -> Config:
    return make_cfg(kafka_bootstrap)


@pytest.fixture(scope="session")
def _created_topics(kafka_bootstrap):
    names: list[str] = []
    yield names
    if names:
        from fusewatch.stream.transport.kafka import admin_client

        try:
            admin = admin_client(make_cfg(kafka_bootstrap, **{"kafka.connect_timeout_s": 5}))
            try:
                admin.delete_topics(names, raise_errors=False)
            finally:
                admin.close()
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass


@pytest.fixture
def make_topic(kafka_bootstrap, _created_topics):
    """``make_topic(prefix="t", partitions=3) -> name``: a new unique topic on the shared broker."""
    from fusewatch.stream.topics import create_topics

    def _make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"fwtest.{prefix}.{uuid.uuid4().hex[:10]}"
        create_topics(make_cfg(kafka_bootstrap), partitions=partitions, names=[name])
        _created_topics.append(name)
        return name

    return _make


@pytest.fixture
def make_transport():
    """``make_transport(cfg, **kw) -> KafkaTransport``, closed after the test."""
    from fusewatch.stream.transport.kafka import KafkaTransport

    made: list = []

    def _make(cfg: Config, *args, **kw):
        t = KafkaTransport(cfg, *args, **kw)
        made.append(t)
        return t

    yield _make
    for t in reversed(made):
        try:
            t.close()
        except Exception:  # noqa: BLE001 - a test may have broken it on purpose
            pass


class PrivateKafka:
    """A broker of our own (free ports, own data dir) that tests may kill and restart."""

    def __init__(self, run_dir: Path):
        self.port, self.sasl_port, self.controller_port = free_ports(3)
        self.run_dir = run_dir
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _kw(self) -> dict:
        return dict(run_dir=self.run_dir)

    def up(self) -> str:
        return kafka_up(self.port, self.sasl_port, self.controller_port, quiet=True, **self._kw())

    def down(self, kill: bool = False) -> None:
        kafka_down(kill=kill, quiet=True, **self._kw())

    def restart(self, kill: bool = False, downtime: float = 0.0) -> str:
        return kafka_restart(
            kill=kill,
            downtime=downtime,
            port=self.port,
            sasl_port=self.sasl_port,
            controller_port=self.controller_port,
            **self._kw(),
        )

    def status(self):
        return kafka_status(self.port, self.sasl_port, **self._kw())

    def cfg(self, **overrides) -> Config:
        return make_cfg(self.bootstrap, **overrides)


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory, kafka_bootstrap):
    # kafka_bootstrap first: the jars are fetched (once) before we need them here.
    pk = PrivateKafka(tmp_path_factory.mktemp("kafka-run"))
    pk.up()
    try:
        yield pk
    finally:
        pk.down(kill=True)
