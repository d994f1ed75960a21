"""In-process bus: keyed partitioning, ordering, groups, commit/seek semantics."""

from fusewatch.stream.transport import BusTransport, InProcessBus


def test_same_key_same_partition_and_order():
    bus = InProcessBus(partitions=3)
    p = BusTransport(bus)
    for i in range(30):
        p.produce("t", f"cam{i % 5}", str(i).encode())
    c = BusTransport(bus)
    c.subscribe(["t"], "g")
    recs = c.poll(1000, 0.5)
    assert len(recs) == 30
    parts = {}
    for r in recs:
        parts.setdefault(r.key, set()).add(r.partition)
    assert all(len(v) == 1 for v in parts.values())
    for cam in {r.key for r in recs}:
        vals = [int(r.value) for r in recs if r.key == cam]
        assert vals == sorted(vals)


def test_commit_and_rejoin_resumes_after_committed_offset():
    bus = InProcessBus(partitions=1)
    p = BusTransport(bus)
    for i in range(10):
        p.produce("t", "k", bytes([i]))
    c = BusTransport(bus)
    c.subscribe(["t"], "g")
    recs = c.poll(4, 0.2)
    c.commit({("t", 0): recs[-1].offset + 1})
    c.close()
    c2 = BusTransport(bus)
    c2.subscribe(["t"], "g")
    assert [r.value[0] for r in c2.poll(100, 0.2)] == list(range(4, 10))
    c2.seek(("t", 0), 1)
    assert c2.poll(1, 0.2)[0].offset == 1


def test_group_rebalance_splits_partitions():
    bus = InProcessBus(partitions=4)
    assigned = {}
    a, b = BusTransport(bus), BusTransport(bus)
    a.subscribe(
        ["t"],
        "g",
        on_assign=lambda s: assigned.setdefault("a", set()).update(s),
        on_revoke=lambda s: assigned.setdefault("a_rev", set()).update(s),
    )
    assert len(a.assignment()) == 4
    b.subscribe(["t"], "g")
    assert len(a.assignment()) == 2 and len(b.assignment()) == 2
    assert a.assignment().isdisjoint(b.assignment())
    assert len(assigned["a_rev"]) == 2
    b.close()
    assert len(a.assignment()) == 4
