"""Local multi-node Apache Kafka cluster (KRaft) for scale-out development and failure tests.

``fusewatch kafka up --brokers 3`` runs N combined broker+controller nodes on loopback from the same
cached Maven jars as the single broker (:mod:`fusewatch.stream.broker`). The quorum is **static**
(``controller.quorum.voters`` lists every node; ``kraft.version`` 0): every node is formatted with
the same cluster id and nothing else, so a node whose disk was lost is recovered by formatting an
empty data directory with its old node id and the cluster id (:meth:`LocalCluster.recover`): it
rejoins the quorum as the same voter, re-fetches the metadata log from the leader and re-replicates
its partitions from the other brokers. Not risk-free: the wiped node votes with an empty log at
once, so an election during its recovery can lose committed metadata if the other voter lags (what
KIP-853's dynamic quorum fixes); recover one node at a time, only while the others run in sync.

Layout under the run dir (default ``~/.cache/fusewatch/kafka/cluster``): ``cluster.json`` (cluster
id, node count, ports), ``node-K/{data,logs,server.properties,kafka.pid}``. Node K (1..N) listens
for clients on ``base_port + 2(K-1)`` and for the quorum on ``base_port + 2(K-1) + 1``.
"""

from __future__ import annotations

import base64
import fcntl
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fusewatch.stream.broker import DEPLOY_DIR, BrokerError, kafka_fetch
from fusewatch.stream.transport.base import TransportError

DEFAULT_BASE_PORT = 19092
DEFAULT_HEAP = "384m"
_IO: dict = {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
DEFAULT_SYNC_TIMEOUT = 180.0  # s: a restarted node's partitions back in sync (rolling restart)


def _default_run_dir() -> Path:
    cache = Path(os.environ.get("FUSEWATCH_CACHE") or Path.home() / ".cache" / "fusewatch")
    home = os.environ.get("LOCALKAFKA_HOME") or cache / "kafka"
    return Path(os.environ.get("LOCALKAFKA_CLUSTER_DIR") or Path(home) / "cluster")


def _probe_mod():
    spec = importlib.util.spec_from_file_location("_fusewatch_kafka_probe", DEPLOY_DIR / "probe.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@dataclass
class NodeStatus:
    node: int
    running: bool
    bootstrap: str
    pid: int | None = None
    ready: bool = False

    def __str__(self) -> str:
        up = f"running pid {self.pid} {self.bootstrap} {'ready' if self.ready else 'NOT answering'}"
        return f"broker {self.node}: {up if self.running else f'stopped ({self.bootstrap})'}"


class LocalCluster:
    """N local KRaft nodes (combined roles). Settings are read from ``cluster.json`` when the cluster
    exists (the constructor's ``brokers``/``base_port`` only apply to a new one)."""

    def __init__(
        self,
        run_dir: str | os.PathLike | None = None,
        brokers: int | None = None,
        base_port: int | None = None,
        host: str = "127.0.0.1",
        heap: str | None = None,
        session_timeout_ms: int = 4000,
        start_timeout: float = 180.0,
        stop_timeout: float = 30.0,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT,
    ):
        self.run_dir = Path(run_dir) if run_dir else _default_run_dir()
        state = self._load()
        self.cluster_id: str | None = state.get("cluster_id")
        self.n = int(state.get("brokers") or brokers or 3)
        if brokers is not None and state and int(brokers) != self.n:
            raise BrokerError(
                f"kafka cluster in {self.run_dir} has {self.n} brokers, not {brokers} "
                f"(`fusewatch kafka down --cluster --purge` first to change it)"
            )
        if self.n < 1:
            raise BrokerError("kafka cluster: --brokers must be >= 1")
        self.base_port = int(state.get("base_port") or base_port or DEFAULT_BASE_PORT)
        self.host = state.get("host") or host
        self.heap = heap or os.environ.get("LOCALKAFKA_HEAP") or DEFAULT_HEAP
        self.session_timeout_ms = session_timeout_ms
        self.start_timeout, self.stop_timeout, self.sync_timeout = start_timeout, stop_timeout, sync_timeout
        self._probe = _probe_mod()
        self._procs: dict[int, subprocess.Popen] = {}

    # -- layout ---------------------------------------------------------------------------------
    @property
    def nodes(self) -> range:
        return range(1, self.n + 1)

    def port(self, k: int) -> int:
        return self.base_port + 2 * (k - 1)

    def controller_port(self, k: int) -> int:
        return self.port(k) + 1

    def address(self, k: int) -> str:
        return f"{self.host}:{self.port(k)}"

    @property
    def bootstrap(self) -> str:
        """Comma-separated client addresses of all nodes (``kafka.bootstrap_servers``)."""
        return ",".join(self.address(k) for k in self.nodes)

    def node_dir(self, k: int) -> Path:
        self._check(k)
        return self.run_dir / f"node-{k}"

    def data_dir(self, k: int) -> Path:
        return self.node_dir(k) / "data"

    def _check(self, k: int) -> None:
        if k not in self.nodes:
            raise BrokerError(f"kafka cluster: no broker {k} (brokers are 1..{self.n})")

    def _load(self) -> dict:
        f = self.run_dir / "cluster.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def _save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {"cluster_id": self.cluster_id, "brokers": self.n, "base_port": self.base_port, "host": self.host}
        (self.run_dir / "cluster.json").write_text(json.dumps(state))

    # -- processes ------------------------------------------------------------------------------
    def pid(self, k: int) -> int | None:
        """pid of node K when it runs (pid file + a live ``kafka.Kafka`` process on its config)."""
        f = self.node_dir(k) / "kafka.pid"
        try:
            pid = int(f.read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            return None
        return pid if " kafka.Kafka " in cmd and str(self.node_dir(k) / "server.properties") in cmd else None

    def _exited(self, k: int) -> bool:
        p = self._procs.get(k)
        return p.poll() is not None if p is not None else not self.pid(k)

    def running(self) -> list[int]:
        return [k for k in self.nodes if self.pid(k)]

    def _jvm(self, k: int, libs: Path) -> list[str]:
        java = os.environ.get("JAVA") or (
            str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "java"
        )
        opts = "-Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true"
        return [java, *os.environ.get("LOCALKAFKA_JVM_OPTS", "").split(), f"-Xmx{self.heap}", *opts.split()] + [
            "-Djava.net.preferIPv4Stack=true",
            f"-Dkafka.logs.dir={self.node_dir(k) / 'logs'}",
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.xml'}",
            "-cp",
            f"{libs}/*",
        ]

    def _render(self, k: int) -> Path:
        rf = min(3, self.n)
        voters = ",".join(f"{j}@{self.host}:{self.controller_port(j)}" for j in self.nodes)
        subs = {"NODE_ID": k, "VOTERS": voters, "HOST": self.host, "PORT": self.port(k), "RF": rf}
        subs |= {"CONTROLLER_PORT": self.controller_port(k), "DATA_DIR": self.data_dir(k)}
        subs |= {"MIN_ISR": max(1, min(2, rf - 1)), "SESSION_MS": self.session_timeout_ms}
        text = (DEPLOY_DIR / "cluster.properties.template").read_text()
        for name, val in subs.items():
            text = text.replace(f"@{name}@", str(val))
        props = self.node_dir(k) / "server.properties"
        props.parent.mkdir(parents=True, exist_ok=True)
        props.write_text(text)
        return props

    def _format(self, ks: list[int], libs: Path) -> None:
        """Format the empty data dirs of nodes ``ks`` (in parallel) with the cluster id and each
        node's id (static quorum: no --standalone / --initial-controllers)."""
        procs = {}
        for k in ks:
            props = self._render(k)
            (self.node_dir(k) / "logs").mkdir(parents=True, exist_ok=True)
            cmd = [*self._jvm(k, libs), "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(props)]
            procs[k] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **_IO)
        failed = []
        for k, p in procs.items():
            try:
                out, _ = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            (self.node_dir(k) / "logs" / "format.log").write_text(out)
            if p.returncode != 0:
                failed.append(f"broker {k}: {out.strip()[-300:]}")
        if failed:
            raise BrokerError(f"kafka cluster: formatting failed: {'; '.join(failed)}")

    def _start(self, k: int, libs: Path) -> None:
        if self.pid(k):
            return
        for port in (self.port(k), self.controller_port(k)):
            deadline = time.monotonic() + 10  # a just-killed JVM may still be closing its sockets
            while _port_open(self.host, port) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _port_open(self.host, port):
                raise BrokerError(
                    f"kafka cluster: port {self.host}:{port} (broker {k}) is in use by another "
                    f"process (choose another --base-port)"
                )
        props = self._render(k)
        if not (self.data_dir(k) / "meta.properties").exists():
            self._format([k], libs)
        logs = self.node_dir(k) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "stdout.log", "ab") as out:
            p = subprocess.Popen(
                [*self._jvm(k, libs), "kafka.Kafka", str(props)], stdout=out, start_new_session=True, **_IO
            )
        self._procs[k] = p  # reaped in stop()
        (self.node_dir(k) / "kafka.pid").write_text(str(p.pid))

    def wait_ready(
        self, nodes: list[int] | None = None, min_brokers: int | None = None, timeout: float | None = None
    ) -> None:
        """Wait until each of ``nodes`` (default: all) answers Metadata listing ``min_brokers``
        (default: the number of running nodes) unfenced brokers."""
        nodes = list(self.nodes if nodes is None else nodes)
        want = len(self.running()) if min_brokers is None else min_brokers
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        for k in nodes:
            while (why := self._probe.probe(self.host, self.port(k), 2.0, want)) is not None:
                if self._exited(k):
                    tail = (self.node_dir(k) / "logs" / "stdout.log").read_text(errors="replace")[-1500:]
                    raise BrokerError(f"kafka cluster: broker {k} exited during start-up: {tail.strip()}")
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"kafka cluster: broker {k} not ready on {self.address(k)} ({why}; "
                        f"logs: {self.node_dir(k) / 'logs'})"
                    )
                time.sleep(0.3)

    # -- public API -----------------------------------------------------------------------------
    def up(self, quiet: bool = True) -> str:
        """Start every node not running (formatting new ones), wait until all answer listing all
        brokers; return the bootstrap list. Idempotent."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".up.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            libs = kafka_fetch(quiet=quiet)
            if not self.cluster_id:
                self.cluster_id = _new_cluster_id()
                self._save()
            self._format(
                [k for k in self.nodes if not self.pid(k) and not (self.data_dir(k) / "meta.properties").exists()], libs
            )
            for k in self.nodes:
                self._start(k, libs)
        self.wait_ready(min_brokers=self.n)
        return self.bootstrap

    def start(self, k: int, wait: bool = True) -> None:
        """Start node K (its data dir kept) and wait until it has registered again."""
        self._check(k)
        self._start(k, kafka_fetch(quiet=True))
        if wait:
            self.wait_ready([k])

    def stop(self, k: int, kill: bool = False) -> None:
        """Stop node K: SIGTERM (controlled shutdown; SIGKILL after ``stop_timeout``) or SIGKILL."""
        pid = self.pid(k)
        if pid:
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while _alive(pid):
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    deadline += 10
                time.sleep(0.1)
        if k in self._procs:
            self._procs.pop(k).wait(5)
        (self.node_dir(k) / "kafka.pid").unlink(missing_ok=True)

    def restart(self, k: int, kill: bool = False, downtime: float = 0.0) -> None:
        """Stop node K, start it, wait until it has registered (no ISR wait: :meth:`rolling_restart`)."""
        self.stop(k, kill=kill)
        time.sleep(max(0.0, downtime))
        self.start(k)

    def wait_in_sync(self, timeout: float | None = None) -> float:
        """Wait until no partition of any topic (``__consumer_offsets`` included) is under-replicated:
        each has a leader and its ISR equals its replicas (:func:`fusewatch.stream.topics.under_replicated`).
        Returns the seconds waited; :class:`TransportError` after ``timeout`` (default ``sync_timeout``)."""
        from fusewatch.stream.config import load_config
        from fusewatch.stream.topics import wait_fully_replicated

        cfg = load_config(env={}, overrides={"kafka.bootstrap_servers": self.bootstrap, "kafka.connect_timeout_s": 5})
        return wait_fully_replicated(cfg, self.sync_timeout if timeout is None else timeout)

    def rolling_restart(self, nodes=None, kill=False, downtime=0.0, sync=True, progress=None) -> list[tuple]:
        """Restart ``nodes`` (default all) one at a time. With ``sync`` (a stopped node is refused unless
        it is the one node restarted; all in sync first when all run), per node: stop (SIGTERM: controlled shutdown),
        start, wait until it answers Metadata listing every running broker, then :meth:`wait_in_sync`
        (every partition's ISR == its replicas, ``sync_timeout``) before the next node goes down.
        Returns (and passes to ``progress``) ``(node, restart s, ISR wait s)`` per node; raises
        :class:`BrokerError` at the first wait that times out."""
        todo = list(self.nodes if nodes is None else nodes)
        for k in todo:
            self._check(k)
        if sync and (stopped := [j for j in self.nodes if not self.pid(j) and todo != [j]]):
            raise BrokerError(f"kafka cluster: start broker(s) {stopped} first (their replicas are out of sync)")
        done, out = [], []
        try:
            if sync and len(self.running()) == self.n:
                self.wait_in_sync()  # already under-replicated: taking a node down could block producers
            for k in todo:
                t0 = time.monotonic()
                self.restart(k, kill=kill, downtime=downtime)
                done.append(k)
                out.append((k, time.monotonic() - t0, self.wait_in_sync() if sync else 0.0))
                if progress is not None:
                    progress(*out[-1])
        except BrokerError:  # a node did not start: as it says
            raise
        except TransportError as e:  # an ISR wait timed out
            rest = [j for j in todo if j not in done] or "none"
            raise BrokerError(f"kafka cluster: {e} (restarted: {done or 'none'}, not restarted: {rest})") from None
        return out

    def recover(self, k: int) -> None:
        """Disk-loss recovery of node K (static quorum; see the module docstring for its risk): stop it,
        wipe its data dir (records *and* metadata log), format it with the cluster id and its old node
        id, start it; it rejoins and catches up. Needs a majority of the other nodes running."""
        self._check(k)
        if not self.cluster_id:
            raise BrokerError(f"kafka cluster: no cluster in {self.run_dir} (cluster.json missing)")
        others = [j for j in self.running() if j != k]
        if len(others) < self.n // 2 + 1:
            raise BrokerError(
                f"kafka cluster: recovering broker {k} needs a majority of the other "
                f"brokers running (running: {others or 'none'})"
            )
        self.stop(k, kill=True)
        shutil.rmtree(self.data_dir(k), ignore_errors=True)
        libs = kafka_fetch(quiet=True)
        self._format([k], libs)
        self._start(k, libs)
        self.wait_ready([k])

    def down(self, kill: bool = False, purge: bool = False) -> None:
        for k in self.nodes:
            self.stop(k, kill=kill)
        if purge:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.cluster_id = None

    def status(self) -> list[NodeStatus]:
        pids = {k: self.pid(k) for k in self.nodes}
        ready = {k: bool(p) and self._probe.probe(self.host, self.port(k), 2.0) is None for k, p in pids.items()}
        return [NodeStatus(k, bool(p), self.address(k), p, ready[k]) for k, p in pids.items()]

    def exists(self) -> bool:
        return bool(self.cluster_id)


def _new_cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
