"""Create fusewatch's Kafka topics (features, alerts, dead letter, scores, thumbnails; the compacted
models topic) — idempotently — and check that a cluster's partitions are fully replicated."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import kafka.errors as kerr

from fusewatch.stream.config import Config
from fusewatch.stream.transport.base import TransportError
from fusewatch.stream.transport.kafka import _RECORD_OVERHEAD, _wrap, admin_client

log = logging.getLogger(__name__)


@dataclass
class TopicResult:
    """What :func:`create_topics` did for one topic: ``action`` is ``created`` or ``exists``."""

    name: str
    action: str
    partitions: int
    replication_factor: int = 0
    min_insync_replicas: int | None = None

    def __str__(self) -> str:
        isr = "" if self.min_insync_replicas is None else f", min.insync.replicas {self.min_insync_replicas}"
        return (
            f"{self.name}: {self.action} ({self.partitions} partition{'s' if self.partitions != 1 else ''}, "
            f"replication factor {self.replication_factor}{isr})"
        )


def replication_settings(cfg: Config, brokers: int) -> tuple[int, int]:
    """``(replication factor, min.insync.replicas)`` for a cluster of ``brokers``: the configured
    values, or (0 = auto) min(3, brokers) and 2 when that is >= 3, else 1. Raises
    :class:`TransportError` when the cluster has fewer brokers than the replication factor."""
    rf = cfg.topics.replication_factor or min(3, max(1, brokers))
    if rf > brokers:
        raise TransportError(
            f"topics: replication factor {rf} needs >= {rf} brokers, the cluster at "
            f"{cfg.kafka.bootstrap_servers} has {brokers} (set topics.replication_factor)"
        )
    isr = cfg.topics.min_insync_replicas or (2 if rf >= 3 else 1)
    if isr > rf:
        raise TransportError(f"topics: min.insync.replicas {isr} > replication factor {rf}")
    return rf, isr


def create_topics(
    cfg: Config, partitions: int | None = None, names: list[str] | None = None, configs: dict[str, str] | None = None
) -> list[TopicResult]:
    """Create ``cfg.topics.features``, ``alerts``, ``dead_letter``, ``scores`` and ``thumbnails`` (or
    ``names``) with ``partitions`` (default ``cfg.topics.partitions``), replication factor and
    ``min.insync.replicas`` from :func:`replication_settings` (3 and 2 on a cluster, 1 and 1 on a
    single broker, unless configured).

    Existing topics are left as they are (their partition count is reported, a smaller count than
    requested is logged as a warning). ``configs``: extra topic configs for topics created here.
    Raises :class:`TransportError` when the broker is unreachable
    or refuses the creation.
    """
    n = int(partitions or cfg.topics.partitions)
    if n <= 0:
        raise TransportError(f"topics: partitions must be > 0 (got {n})")
    names = list(
        dict.fromkeys(
            names
            or [
                cfg.topics.features,
                cfg.topics.alerts,
                cfg.topics.dead_letter,
                cfg.topics.scores,
                cfg.topics.thumbnails,
            ]
        )
    )
    admin = admin_client(cfg)
    try:
        rf, isr = replication_settings(cfg, len(admin.describe_cluster().get("brokers") or []))
        existing = set(admin.list_topics())
        todo = [t for t in names if t not in existing]
        created: set[str] = set()
        if todo:
            spec = {
                t: {
                    "num_partitions": n,
                    "replication_factor": rf,
                    "configs": {
                        "max.message.bytes": str(cfg.max_message_bytes + _RECORD_OVERHEAD),
                        "min.insync.replicas": str(isr),
                        **(configs or {}),
                    },
                }
                for t in todo
            }
            resp = admin.create_topics(spec, timeout_ms=int(cfg.kafka.request_timeout_ms), raise_errors=False)
            for t in resp.get("topics", []):
                code = t.get("error_code", 0)
                if code == 0:
                    created.add(t["name"])
                elif code != kerr.TopicAlreadyExistsError.errno:  # raced with another creator: fine
                    raise TransportError(
                        f"create topic {t['name']!r} failed: "
                        f"{kerr.for_code(code).__name__}: {t.get('error_message') or ''}".rstrip(": ")
                    )
            admin.wait_for_topics(todo, timeout_ms=int(cfg.kafka.request_timeout_ms))
        # each describe may be answered by another broker, whose metadata may not list a new topic yet
        deadline = time.monotonic() + cfg.kafka.request_timeout_ms / 1000
        while True:
            desc = {t["name"]: t.get("partitions") or [] for t in admin.describe_topics(names)}
            if all(desc.get(t) for t in names) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except kerr.KafkaError as e:
        raise _wrap(e, f"create topics on {cfg.kafka.bootstrap_servers}") from None
    finally:
        admin.close()
    out = []
    for t in names:
        parts = desc.get(t, [])
        r = TopicResult(
            t,
            "created" if t in created else "exists",
            len(parts),
            max((len(p.get("replica_nodes") or []) for p in parts), default=0),
            isr if t in created else None,
        )
        if r.action == "exists" and r.partitions < n:
            log.warning("topic %s exists with %d partitions (< %d requested); left unchanged", t, r.partitions, n)
        log.info("%s", r)
        out.append(r)
    return out


def create_models_topic(cfg: Config) -> TopicResult:
    """Create ``cfg.topics.models`` (model manifests for live rollout): one partition (one total
    order of publications), compacted (at least the newest manifest per deployment is kept
    forever; the uncompacted tail is the audit trail)."""
    return create_topics(cfg, partitions=1, names=[cfg.topics.models], configs={"cleanup.policy": "compact"})[0]


def under_replicated(cfg: Config) -> list[str]:
    """Partitions of every topic on the cluster (internal ones such as ``__consumer_offsets``
    included) that are not fully replicated: no leader, an error, or an ISR (in-sync replicas)
    different from the replica set — ``"topic-P (replicas [1, 2, 3], in sync [1, 3])"`` each; empty
    when every partition's ISR equals its replicas. Read from the cluster metadata (kafka-python
    ``KafkaAdminClient.describe_topics()``, all topics). Raises :class:`TransportError`."""
    admin = admin_client(cfg)
    try:
        topics = admin.describe_topics()
    except kerr.KafkaError as e:
        raise _wrap(e, f"describe topics on {cfg.kafka.bootstrap_servers}") from None
    finally:
        admin.close()
    out = []
    for t in sorted(topics, key=lambda t: str(t.get("name"))):
        if t.get("error_code"):
            out.append(f"{t.get('name')} ({kerr.for_code(t['error_code']).__name__})")
        for p in sorted(t.get("partitions") or [], key=lambda p: p.get("partition_index", -1)):
            reps, isr = sorted(p.get("replica_nodes") or []), sorted(p.get("isr_nodes") or [])
            if p.get("error_code") or p.get("leader_id", -1) < 0 or not reps or set(isr) != set(reps):
                out.append(f"{t.get('name')}-{p.get('partition_index')} (replicas {reps}, in sync {isr})")
    return out


def wait_fully_replicated(cfg: Config, timeout: float, poll_s: float = 0.5) -> float:
    """Wait until :func:`under_replicated` is empty; return the seconds waited. Raises
    :class:`TransportError` naming the lagging partitions (or the last error) after ``timeout`` s."""
    t0 = time.monotonic()
    while True:
        err = None
        try:
            lagging = under_replicated(cfg)
        except TransportError as e:  # a broker that has just restarted may not answer yet: ask again
            lagging, err = ["?"], e
        if not lagging:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= timeout:
            if err is not None:
                raise TransportError(f"replication state unknown after {timeout:g} s: {err}")
            more = f" and {len(lagging) - 4} more" if len(lagging) > 4 else ""
            raise TransportError(
                f"{len(lagging)} partition(s) still under-replicated after {timeout:g} s: "
                f"{', '.join(lagging[:4])}{more}"
            )
        time.sleep(poll_s)
