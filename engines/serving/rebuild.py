"""Bounded state rebuild of one partition on assignment.

Reads back from the committed offset in chunks, newest first, until the records read cover
``window + rebuild_history`` records per camera seen so far (cameras capped at
``engine.max_cameras``), the partition's beginning, or the time budget (70 % of
``engine.rebuild_max_seconds`` for reading, the rest for replaying) is spent. So a rebuild reads at
most ``(window + rebuild_history) × cameras`` records (plus one chunk) whatever the camera mix, and
short camera histories are accepted as they are instead of widening the read to the whole
partition. Chunks are at most :data:`CHUNK` records, so a read cut short by the time budget keeps
all but the last one. Cameras whose whole history (from clip 0 of their epoch, or a full window) lies inside
the read range continue exactly as an uninterrupted engine; the others start cold (counted as
``cold_starts{reason="rebuild_partial"}``): their alerts resume once their window is full. Only
the ``max_cameras`` cameras most recently active in the range are replayed (the store holds no
more); the others are counted as ``rebuild_not_held`` and start cold when they return. Records that
were dead-lettered live (:func:`camera_of` is None) are neither cameras nor replayed.
"""

from __future__ import annotations

import logging
import time

from fusewatch.stream.schema import SchemaError, decode_features
from fusewatch.stream.transport import Record, TopicPartition, Transport

log = logging.getLogger("fusewatch.engine")
CHUNK = 4096
"""Records per read-back chunk: when the time budget runs out, only the unfinished chunk is lost."""


def read_range(t: Transport, tp: TopicPartition, start: int, stop: int, deadline: float) -> tuple[list[Record], bool]:
    """Records of ``[start, stop)`` of one partition (other partitions are put back where they were)
    → ``(records, complete)``; ``complete`` is False when ``deadline`` (monotonic) passed first."""
    others = {o: t.position(o) for o in t.assignment() if o != tp}
    t.seek(tp, start)
    out: list[Record] = []
    done = False
    while time.monotonic() < deadline:
        for r in t.poll(max_records=2000, timeout=0.2):
            if r.tp == tp and start <= r.offset < stop:
                out.append(r)
            elif r.tp != tp:
                others[r.tp] = min(others.get(r.tp, r.offset), r.offset)
        if (out and out[-1].offset >= stop - 1) or t.position(tp) >= stop:
            done = True
            break
    for o, pos in others.items():
        t.seek(o, pos)
    return out, done


def camera_of(rec: Record, max_bytes: int) -> str | None:
    """The camera of a record that the engine would have admitted as one (it decodes as a feature
    message whose camera is its key), else None: records dead-lettered live (hostile keys,
    undecodable payloads) neither count as cameras nor take the place of real ones in a rebuild."""
    try:
        msg = decode_features(rec.value, max_bytes)
    except SchemaError:
        return None
    try:
        key = None if rec.key is None else bytes(rec.key).decode("utf-8")
    except UnicodeDecodeError:
        return None
    return msg.camera if key == msg.camera else None


def rebuild_partition(svc, tp: TopicPartition) -> None:
    """Restore the state of ``tp``'s cameras in ``svc`` (an EngineService) from the log, bounded in
    records and time; leaves ``tp`` positioned at its committed offset."""
    t, ecfg = svc.t, svc.cfg.engine
    t0 = time.monotonic()
    committed = t.committed(tp)
    begin = t.beginning_offset(tp)
    if committed is None or committed <= begin:
        t.seek(tp, begin if committed is None else committed)
        return
    need = svc.window + ecfg.rebuild_history
    read_deadline = t0 + 0.7 * ecfg.rebuild_max_seconds
    chunks: list[list[Record]] = []
    cams: set[bytes | None] = set()
    start, truncated = committed, False
    while start > begin:
        want = need * max(1, min(len(cams), ecfg.max_cameras))
        have = committed - start
        if cams and have >= want:
            break
        lo = max(begin, start - min(max(want - have, need), CHUNK))
        recs, complete = read_range(t, tp, lo, start, read_deadline)
        if not complete:
            truncated = True
            break
        recs = [r for r in recs if camera_of(r, svc.cfg.max_message_bytes) is not None]
        chunks.append(recs)
        cams.update(r.key for r in recs)
        start = lo
    recs = [r for chunk in reversed(chunks) for r in chunk]
    nread = committed - start
    for k in cams:  # this partition's cameras: their state is rebuilt from the log
        svc.store.drop((k or b"").decode("utf-8", errors="replace"))
    keep: dict[bytes | None, None] = {}  # the max_cameras most recently active cameras: the store holds no more
    for r in reversed(recs):
        if len(keep) >= ecfg.max_cameras:
            break
        keep.setdefault(r.key)
    if len(keep) < len(cams):
        svc._count("cold_starts", "rebuild_not_held", len(cams) - len(keep))
        recs = [r for r in recs if r.key in keep]
    svc._process(recs, live=False, first_clip_exact=(start == begin))
    partial = 0
    for k in keep:
        c = svc.store.cams.get((k or b"").decode("utf-8", errors="replace"))
        if c is not None and not c.exact:
            partial += 1
    if partial:
        svc._count("cold_starts", "rebuild_partial", partial)
    dt = time.monotonic() - t0
    svc.stats.rebuilt_records += nread
    svc.stats.rebuild_seconds += dt
    svc.stats.rebuilds += 1
    svc.stats.rebuild_max_records = max(svc.stats.rebuild_max_records, nread)
    svc.metrics.rebuild_records.inc(nread)
    svc.metrics.rebuild_seconds.observe(dt)
    t.seek(tp, committed)
    log.info(
        "rebuilt %s[%d] from %d records before offset %d (%d replayed) in %.2f s (%d cameras, %d held, "
        "%d without full history%s)",
        tp[0],
        tp[1],
        nread,
        committed,
        len(recs),
        dt,
        len(cams),
        len(keep),
        partial,
        ", time budget spent" if truncated else "",
    )
