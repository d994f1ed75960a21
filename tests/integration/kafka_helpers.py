"""Helpers shared by the Kafka integration tests (fault and load suites)."""

from __future__ import annotations

import time
import uuid


def committed_total(monitor, topic: str) -> tuple[int, int]:
    """(Σ committed offsets of the monitor's group, Σ end offsets) over ``topic``'s partitions."""
    com = end = 0
    for p in monitor.partitions_for(topic):
        com += monitor.committed((topic, p)) or 0
        end += monitor.end_offset((topic, p))
    return com, end


def drain_topic(cfg, topic: str, timeout: float = 60.0) -> list:
    """Every record of ``topic`` up to its current end offsets (fresh consumer group)."""
    from fusewatch.stream.transport.kafka import KafkaTransport

    t = KafkaTransport(cfg, group_id=f"fwtest.reader.{uuid.uuid4().hex[:10]}", produce=False)
    try:
        t.subscribe([topic], t._group_id, from_beginning=True)
        parts = t.partitions_for(topic)
        deadline = time.monotonic() + timeout
        out: list = []
        while not t.assignment() and time.monotonic() < deadline:
            out += t.poll(2000, 0.2)
        ends = {tp: t.end_offset(tp) for tp in t.assignment()}
        assert {p for _, p in ends} == parts, f"reader assigned {sorted(ends)}, topic has {sorted(parts)}"
        seen = {tp: -1 for tp in ends}
        for r in out:
            seen[r.tp] = max(seen[r.tp], r.offset)
        while any(seen[tp] < end - 1 for tp, end in ends.items()) and time.monotonic() < deadline:
            for r in t.poll(2000, 0.2):
                out.append(r)
                seen[r.tp] = max(seen[r.tp], r.offset)
        missing = {tp: end - 1 - seen[tp] for tp, end in ends.items() if seen[tp] < end - 1}
        assert not missing, f"{topic}: records not read within {timeout}s: {missing}"
        return out
    finally:
        t.close()


def save_plain_lego(path, window: int, dims: dict) -> None:
    """A seeded, untrained LEGO checkpoint (plain rows-of-G head, ``node_dim`` 0) over ``dims``."""
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.training.checkpoint import save_checkpoint
    from fusewatch.stream.config import load_config

    torch.manual_seed(0)
    mcfg = load_config(
        overrides={"model.window": window, "model.representations": ",".join(dims), "model.node_dim": 0}, env={}
    )
    save_checkpoint(build_model(mcfg.model, dims), path)
