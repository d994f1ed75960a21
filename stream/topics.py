"""Create fusewatch's Kafka topics (features, alerts, dead letter) — idempotently."""
from __future__ import annotations

import logging
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

    def __str__(self) -> str:
        return f"{self.name}: {self.action} ({self.partitions} partition{'s' if self.partitions != 1 else ''})"


def create_topics(cfg: Config, partitions: int | None = None,
                  names: list[str] | None = None) -> list[TopicResult]:
    """Create ``cfg.topics.features``, ``alerts``, ``dead_letter``, ``scores`` and ``thumbnails`` (or ``names``) with
    ``partitions`` (default ``cfg.topics.partitions``) and ``cfg.topics.replication_factor``.

    Existing topics are left as they are (their partition count is reported, a smaller count than
    requested is logged as a warning). Raises :class:`TransportError` when the broker is unreachable
    or refuses the creation.
    """
    n = int(partitions or cfg.topics.partitions)
    if n <= 0:
        raise TransportError(f"topics: partitions must be > 0 (got {n})")
    names = list(dict.fromkeys(names or [cfg.topics.features, cfg.topics.alerts, cfg.topics.dead_letter,
                                                 cfg.topics.scores, cfg.topics.thumbnails]))
    admin = admin_client(cfg)
    try:
        existing = set(admin.list_topics())
        todo = [t for t in names if t not in existing]
        created: set[str] = set()
        if todo:
            spec = {t: {"num_partitions": n, "replication_factor": cfg.topics.replication_factor,
                        "configs": {"max.message.bytes": str(cfg.max_message_bytes + _RECORD_OVERHEAD)}}
                    for t in todo}
            resp = admin.create_topics(spec, timeout_ms=int(cfg.kafka.request_timeout_ms),
                                       raise_errors=False)
            for t in resp.get("topics", []):
                code = t.get("error_code", 0)
                if code == 0:
                    created.add(t["name"])
                elif code != kerr.TopicAlreadyExistsError.errno:  # raced with another creator: fine
                    raise TransportError(f"create topic {t['name']!r} failed: "
                                         f"{kerr.for_code(code).__name__}: {t.get('error_message') or ''}".rstrip(": "))
            admin.wait_for_topics(todo, timeout_ms=int(cfg.kafka.request_timeout_ms))
        counts = {t["name"]: len(t.get("partitions") or []) for t in admin.describe_topics(names)}
    except kerr.KafkaError as e:
        raise _wrap(e, f"create topics on {cfg.kafka.bootstrap_servers}") from None
    finally:
        admin.close()
    out = []
    for t in names:
        r = TopicResult(t, "created" if t in created else "exists", counts.get(t, 0))
        if r.action == "exists" and r.partitions < n:
            log.warning("topic %s exists with %d partitions (< %d requested); left unchanged",
                        t, r.partitions, n)
        log.info("%s", r)
        out.append(r)
    return out
