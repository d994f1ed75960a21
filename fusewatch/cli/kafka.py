"""``fusewatch kafka up|down|status|restart|recover`` and ``fusewatch topics create``
(:mod:`fusewatch.stream.broker`: single broker; :mod:`fusewatch.stream.cluster`: ``--brokers N`` /
``--cluster`` / ``--broker K``)."""

from __future__ import annotations

from fusewatch.stream.broker import (
    DEFAULT_PORT,
    SASL_USER,
    kafka_down,
    kafka_restart,
    kafka_status,
    kafka_up,
)
from fusewatch.stream.config import Config


def _local_port(cfg: Config) -> int | None:
    """Port of the first bootstrap server when it is on this machine (so ``--bootstrap`` picks it)."""
    first = cfg.kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host.strip("[]") in ("127.0.0.1", "localhost", "::1", "") and port.isdigit():
        return int(port)
    return None


def _cluster(args, brokers: int | None = None):
    from fusewatch.stream.cluster import LocalCluster

    return LocalCluster(brokers=brokers, base_port=getattr(args, "base_port", None), heap=getattr(args, "heap", None))


def _on_cluster(args) -> bool:
    return bool(getattr(args, "cluster", False) or getattr(args, "broker", None))


def _cmd_up(args, cfg: Config) -> int:
    if args.brokers > 1:
        print(_cluster(args, args.brokers).up(quiet=False))
        return 0
    port = args.port or _local_port(cfg) or DEFAULT_PORT
    addr = kafka_up(port, args.sasl_port, args.controller_port, heap=args.heap)
    print(addr)
    return 0


def _cmd_down(args, cfg: Config) -> int:
    if _on_cluster(args):
        c = _cluster(args)
        if args.broker:
            c.stop(args.broker, kill=args.kill)
        else:
            c.down(kill=args.kill, purge=args.purge)
        return 0
    kafka_down(kill=args.kill, purge=args.purge)
    return 0


def _cmd_status(args, cfg: Config) -> int:
    c = _cluster(args)
    if _on_cluster(args):
        if not c.exists():
            print(f"no cluster in {c.run_dir}")
            return 3
        nodes = [n for n in c.status() if not args.broker or n.node == args.broker]
        for n in nodes:
            print(n)
        return 0 if all(n.running for n in nodes) else 3
    st = kafka_status()
    print(st)
    if c.exists():
        for n in c.status():
            print(f"cluster {n}")
    return 0 if st.running else 3


def _cmd_restart(args, cfg: Config) -> int:
    if _on_cluster(args):
        from fusewatch.stream.broker import BrokerError

        c = _cluster(args)
        if not c.exists():
            raise BrokerError(f"no kafka cluster in {c.run_dir} (start one: fusewatch kafka up --brokers 3)")
        if args.sync_timeout is not None and args.sync_timeout < 0:
            raise BrokerError(f"--sync-timeout must be >= 0 (got {args.sync_timeout:g})")
        sync = args.sync_timeout != 0
        if args.sync_timeout:
            c.sync_timeout = args.sync_timeout

        def report(k: int, restart_s: float, sync_s: float) -> None:
            isr = f", every partition's ISR complete {sync_s:.1f}s later" if sync else " (ISR not waited for)"
            print(f"broker {k}: restarted ({c.address(k)}) in {restart_s:.1f}s{isr}", flush=True)

        # one node at a time (a rolling restart); the next goes down only once no partition is under-replicated
        nodes = [args.broker] if args.broker else None
        c.rolling_restart(nodes, kill=args.kill, downtime=args.downtime, sync=sync, progress=report)
        return 0
    print(kafka_restart(kill=args.kill, downtime=args.downtime, quiet=False))
    return 0


def _cmd_recover(args, cfg: Config) -> int:
    c = _cluster(args)
    c.recover(args.broker)
    print(
        f"broker {args.broker}: data dir wiped, re-formatted (cluster {c.cluster_id}, node id "
        f"{args.broker}) and rejoined ({c.address(args.broker)})"
    )
    return 0


def _cmd_topics_create(args, cfg: Config) -> int:
    from fusewatch.stream.topics import create_topics  # kafka-python only when needed

    for r in create_topics(cfg, partitions=args.partitions):
        print(r)
    return 0


def add_commands(subparsers) -> None:
    """Register ``kafka up|down|status|restart`` and ``topics create`` on the ``fusewatch`` CLI."""
    from fusewatch.stream.cluster import DEFAULT_SYNC_TIMEOUT

    k = subparsers.add_parser(
        "kafka",
        help="run a local Kafka broker or N-node cluster (KRaft) for development and tests",
        description="Local Apache Kafka 4.x (fetched once from Maven Central; needs Java 17+ and "
        "Maven). PLAINTEXT on 127.0.0.1:9092, SASL_PLAINTEXT/PLAIN on :9094 "
        f"(user {SASL_USER}), data in ~/.cache/fusewatch/kafka/run.",
    )
    ks = k.add_subparsers(dest="kafka_command", metavar="ACTION")
    ks.required = True
    up = ks.add_parser("up", help="start the broker (no-op if running); print its bootstrap address")
    up.add_argument(
        "--port", type=int, default=None, help="PLAINTEXT port (default: from --bootstrap when local, else 9092)"
    )
    up.add_argument("--sasl-port", type=int, default=None, help="SASL_PLAINTEXT port (default 9094)")
    up.add_argument("--controller-port", type=int, default=None, help="controller port (default 9093)")
    up.add_argument("--heap", default=None, help="JVM max heap (default 512m; cluster nodes 384m)")
    up.add_argument(
        "--brokers",
        type=int,
        default=1,
        metavar="N",
        help="N > 1: a local N-node KRaft cluster (combined broker+controller nodes, static "
        "quorum) on ports --base-port, +2, +4, ... (controllers on +1, +3, ...)",
    )
    up.add_argument("--base-port", type=int, default=None, help="first cluster port (default 19092)")
    up.set_defaults(handler=_cmd_up)

    def cluster_opts(p, what: str) -> None:
        p.add_argument("--cluster", action="store_true", help=f"{what} the local cluster's nodes")
        p.add_argument("--broker", type=int, default=None, metavar="K", help=f"{what} cluster node K only")

    down = ks.add_parser("down", help="stop the broker (SIGTERM, then SIGKILL after a timeout)")
    down.add_argument("--kill", action="store_true", help="SIGKILL at once (crash; data kept)")
    down.add_argument("--purge", action="store_true", help="also delete topics and offsets")
    cluster_opts(down, "stop")
    down.set_defaults(handler=_cmd_down)
    st = ks.add_parser("status", help="running/stopped and the bootstrap address (exit 3: stopped)")
    cluster_opts(st, "report")
    st.set_defaults(handler=_cmd_status)
    rs = ks.add_parser("restart", help="stop and start again, keeping data")
    rs.add_argument("--kill", action="store_true", help="stop with SIGKILL (crash)")
    rs.add_argument("--downtime", type=float, default=0.0, metavar="S", help="seconds to stay down")
    cluster_opts(rs, "restart (one after the other: rolling)")
    rs.add_argument(
        "--sync-timeout",
        type=float,
        default=None,
        metavar="S",
        help="cluster: after each node is back, wait until no partition is under-replicated (every "
        f"partition's ISR = its replicas) before the next, at most S seconds (default {DEFAULT_SYNC_TIMEOUT:g}; "
        "0: do not wait)",
    )
    rs.set_defaults(handler=_cmd_restart)
    rc = ks.add_parser(
        "recover",
        help="cluster node lost its disk: wipe its data dir, re-format it with "
        "its node id and the cluster id, start it; it rejoins and catches up",
    )
    rc.add_argument("--broker", type=int, required=True, metavar="K", help="cluster node to recover")
    rc.set_defaults(handler=_cmd_recover)

    t = subparsers.add_parser("topics", help="manage fusewatch's Kafka topics")
    ts = t.add_subparsers(dest="topics_command", metavar="ACTION")
    ts.required = True
    c = ts.add_parser("create", help="create the features, alerts and dead-letter topics (idempotent)")
    c.add_argument("--partitions", type=int, default=None, help="partitions per topic (default: topics.partitions)")
    c.set_defaults(handler=_cmd_topics_create)
