"""The evidence writer: alert events in, clip + snapshot + ``evidence`` record out.

It reads the alerts topic (its own consumer group, ``evidence.group_id``), optionally only some
cameras, and for each alert waits until the alert ends (or reaches ``evidence.max_seconds``), then
until the camera's packet buffer (:mod:`.segments`, same host) covers the window
``start_time - pre_seconds`` .. ``min(end_time, that + max_seconds)`` (or the worker stopped, or
``wait_s`` passed), and writes ``<evidence.dir>/<camera>/<alert id>.mp4`` and ``.jpg`` (the
snapshot: the frame in the middle of the clip with the highest score among the alert's events, the
anomaly map of that event drawn over it when the model provided one). It then publishes an
``evidence`` record (:mod:`fusewatch.stream.records`) to the alerts topic, keyed by camera, and
applies the store's retention (age, total size; the oldest alert's files go first).

Offsets are committed only up to the first alert whose evidence is not written yet, so a writer
that restarts cuts it then (at-least-once; an existing clip is not cut again, its record is
published again). Runs inside ``fusewatch worker`` / ``replay`` / ``demo`` (a thread) or anywhere
with the buffer directory at hand.

Hostile records (every decoded field is untrusted; :mod:`.store`): file names are the
percent-encoded camera and id, checked to resolve inside ``evidence.dir`` (else refused). An
exception fails its record or job only (counted by reason in :attr:`EvidenceWriter.counts`, the
1st/10th/100th … logged); the position advances past it. Bounded state: an open alert with no event
for :attr:`~EvidenceWriter.expire_s` is cut at its last known end, beyond ``max_jobs`` the least
recently updated is dropped (logged), ``finished``/``records`` keep the newest. Jobs are keyed by
(camera, id, start time), so a forged event cannot take over a real alert's job, and a failure for
lack of footage does not mark the (camera, id) finished.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..alert_schema import decode_alert
from ..logs import get_logger
from ..records import RECORD_HEADERS, encode_evidence, record_kind
from ..schema import SchemaError
from .cut import EvidenceError, cut_clip, parse_mask, snapshot, video_duration
from .segments import read_index
from .store import EvidencePaths, Tally, UnsafeName, apply_retention, ensure_inside, evidence_paths, file_info, short

log = get_logger("fusewatch.stream.evidence")

__all__ = ["EvidenceWriter", "apply_retention", "file_info"]

MAX_MAP_CELLS = 65536
"""Largest anomaly map (cells) kept for a snapshot; kept as float32 (256 KiB at most a job)."""


@dataclass
class _Job:
    """One alert being collected: times are Unix s (capture clock), ``last_mono`` monotonic s."""

    alert_id: str
    camera: str
    start_time: float
    end_time: float
    peak: float
    best_score: float
    best_time: float
    anomaly_map: np.ndarray | None
    ended: bool
    first: tuple  # (topic, partition, offset) of its first event: commits stop before it
    paths: EvidencePaths
    last_mono: float
    ready_mono: float | None = None


class EvidenceWriter:
    """``transport``: subscribed here to the alerts topic (and used to publish the records unless
    ``producer`` is given; closed by :meth:`stop` when ``owns_transport``); ``cameras``: only these
    (None: all); ``on_evidence(record_dict)`` after each record is produced. Bounds: ``max_jobs``
    alerts open at once, ``max_finished`` (camera, id) keys remembered as done, ``max_records``
    records and ``max_failures`` failure lines kept; ``expire_s`` (None: derived from the config)."""

    def __init__(
        self,
        cfg,
        transport,
        *,
        cameras=None,
        producer=None,
        group_id: str | None = None,
        from_beginning: bool = False,
        on_evidence: Callable[[dict], None] | None = None,
        owns_transport: bool = False,
        max_jobs: int = 512,
        max_finished: int = 20_000,
        max_records: int = 1_000,
        max_failures: int = 1_000,
        expire_s: float | None = None,
    ):
        self.cfg, self.ecfg = cfg, cfg.evidence
        self.t, self.producer = transport, producer or transport
        self.root = Path(self.ecfg.dir).expanduser()
        self.masks = [parse_mask(m) for m in self.ecfg.masks]
        self.cameras = set(cameras) if cameras else None
        self.on_evidence = on_evidence
        self.owns_transport = owns_transport
        self.clip_s = cfg.clips.clip_len / cfg.source.sample_fps
        upd = float(cfg.alerts.update_interval)
        self.expire_s = float(expire_s) if expire_s is not None else self.ecfg.wait_s + self.ecfg.max_seconds + upd
        """An open alert with no event for this long (s, wall clock) is cut at its last known end."""
        self.max_jobs, self.max_finished, self.max_failures = (
            max(1, max_jobs),
            max(1, max_finished),
            max(0, max_failures),
        )
        self.jobs: OrderedDict[tuple, _Job] = OrderedDict()
        """Open and pending alerts by (camera, id, start time), least recently updated first."""
        self.finished: OrderedDict[tuple, tuple[float, bool]] = OrderedDict()
        """(camera, id) → (start time, written): events of a written alert are ignored, and of a
        failed one those with the same start time (a no-footage failure is not recorded)."""
        self.records: deque[dict] = deque(maxlen=max(1, max_records))
        self.failures: list[str] = []
        self.tally = Tally(log)
        self.deleted = 0
        self._pos: dict = {}
        self._empty_polls = 0
        self.flush_open = False
        """True: treat alerts still open as ended (the streams are over)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t.subscribe([cfg.topics.alerts], group_id or self.ecfg.group_id, from_beginning=from_beginning)

    @property
    def counts(self):
        """Records, events and jobs skipped or failed, by reason (a ``Counter``)."""
        return self.tally.counts

    # -- consuming ----------------------------------------------------------------------------
    def step(self, timeout: float = 0.2) -> int:
        """Poll once, update jobs, write what is ready, commit. Returns records polled."""
        recs = self.t.poll(500, timeout)
        for r in recs:
            try:
                self._on_record(r)
            except Exception as e:  # noqa: BLE001 - one hostile record never stops the writer
                self.tally.note(f"record failed ({type(e).__name__})", exc=e, at=f"{r.topic}[{r.partition}]@{r.offset}")
            self._pos[r.tp] = r.offset + 1  # handled (written into a job, skipped or failed: counted)
        self.process()
        self._commit()
        self._empty_polls = 0 if recs else self._empty_polls + 1
        return len(recs)

    def _on_record(self, r) -> None:
        if record_kind(r.value) not in ("alert", None):
            return  # evidence / health records on the same topic
        try:
            a = decode_alert(r.value, self.cfg.max_message_bytes)
        except SchemaError as e:
            self.tally.note("malformed alert skipped", at=f"{r.topic}[{r.partition}]@{r.offset}", error=short(e, 200))
            return
        self._on_alert(a, (r.topic, r.partition, r.offset))

    def _ignore(self, reason: str, a, level: int = logging.WARNING, **fields) -> None:
        self.tally.note(reason, level=level, alert=short(a.id), camera=short(a.camera), type=short(a.type), **fields)

    def _on_alert(self, a, pos) -> None:
        """Fold one decoded alert event into its job; events with unusable fields are counted."""
        if not (isinstance(a.camera, str) and isinstance(a.id, str)):
            return self._ignore("alert with a camera or id that is not text ignored", a)
        if self.cameras is not None and a.camera not in self.cameras:
            return self.tally.note("alert of another camera ignored", level=logging.DEBUG)
        if a.type not in ("new", "update", "end"):
            return self._ignore("alert event of unknown type ignored", a)
        try:
            t0, t1, score, peak = float(a.start_time), float(a.end_time), float(a.score), float(a.peak)
        except (TypeError, ValueError, OverflowError):
            return self._ignore("alert with non-numeric times or scores ignored", a)
        if not all(math.isfinite(x) for x in (t0, t1, score, peak)) or t1 < t0:
            return self._ignore("alert with non-finite or reversed times or scores ignored", a)
        done = self.finished.get((a.camera, a.id))
        if done is not None and (done[1] or done[0] == t0):
            return self._ignore("event of an alert already handled ignored", a, logging.INFO)
        key = (a.camera, a.id, t0)
        j = self.jobs.get(key)
        now = time.monotonic()
        if j is None:
            try:
                paths = evidence_paths(self.root, a.camera, a.id)
            except UnsafeName as e:
                return self._ignore("alert with an unsafe camera or id refused", a, error=short(e, 300))
            j = _Job(a.id, a.camera, t0, t1, peak, score, t1, None, False, pos, paths, now)
            self.jobs[key] = j
        else:
            self.jobs.move_to_end(key)
        j.last_mono = now
        j.end_time, j.peak = max(j.end_time, t1), max(j.peak, peak)
        if score > j.best_score or (a.anomaly_map is not None and j.anomaly_map is None):
            amap = self._map(a)
            j.best_score, j.best_time = max(score, j.best_score), t1
            j.anomaly_map = amap if amap is not None else j.anomaly_map
        j.ended = j.ended or a.type == "end"

    def _map(self, a) -> np.ndarray | None:
        if a.anomaly_map is None:
            return None
        try:
            m = np.asarray(a.anomaly_map, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            m = None
        if m is None or m.ndim != 2 or not 0 < m.size <= MAX_MAP_CELLS or not np.isfinite(m).all():
            self._ignore("unusable anomaly map ignored", a)
            return None
        return np.clip(m, 0.0, 1.0)

    def _cap_jobs(self) -> None:
        """Beyond ``max_jobs``: drop open alerts first, least recently updated first (counted)."""
        excess = len(self.jobs) - self.max_jobs
        for key in sorted(self.jobs, key=lambda k: self.jobs[k].ended)[: max(0, excess)]:
            self._fail(self.jobs.pop(key), "too many open alerts: the least recently updated dropped")

    def _expire(self, now: float) -> None:
        for j in self.jobs.values():  # least recently updated first
            if (idle := now - j.last_mono) <= self.expire_s:
                break
            if not j.ended:
                j.ended = True
                self.tally.note("open alert expired: cut at its last known end", alert=j.alert_id, idle_s=round(idle))

    def window(self, j: _Job) -> tuple[float, float]:
        """Capture span (Unix s) of ``j``'s clip: pre-roll before it opened .. its end, capped."""
        start = j.start_time - self.ecfg.pre_seconds
        return start, min(j.end_time, start + self.ecfg.max_seconds)

    def process(self) -> None:
        """Write every job that is ready (ended, expired or at the cap, and the buffer covers it or
        ``wait_s`` passed). A job that raises fails alone (counted); the others go on."""
        now = time.monotonic()
        self._expire(now)
        indexes: dict[Path, tuple] = {}
        for key, j in list(self.jobs.items()):
            try:
                self._process_job(key, j, now, indexes)
            except Exception as e:  # noqa: BLE001 - one bad job never stalls the others
                self.jobs.pop(key, None)
                self._fail(j, f"job failed ({type(e).__name__})", e, final=True, trace=True)
        self._cap_jobs()  # after the ready ones left: memory ≤ max_jobs + one poll's records

    def _process_job(self, key: tuple, j: _Job, now: float, indexes: dict) -> None:
        start, end = self.window(j)
        if not (j.ended or self.flush_open or end - start >= self.ecfg.max_seconds):
            return
        if j.ready_mono is None:
            j.ready_mono = now
        bdir = j.paths.buffer
        if bdir not in indexes:
            indexes[bdir] = read_index(bdir)
        segs, done = indexes[bdir]
        covered = done or (segs and segs[-1].end >= end - 1e-3)
        if not covered and now - j.ready_mono < self.ecfg.wait_s:
            return
        del self.jobs[key]
        fk = (j.camera, j.alert_id)
        if self.finished.get(fk, (None, False))[1]:
            self.tally.note("alert id already written for another start time: job dropped", alert=j.alert_id)
            return
        if not j.paths.clip.is_file() and not any(s.end > start and s.start < end for s in segs):
            self._fail(j, "no buffered footage for the alert", EvidenceError(f"none in {start:.3f} .. {end:.3f}"))
            return
        try:
            self._write(j, segs, start, end)
        except (EvidenceError, OSError, ValueError) as e:
            self._fail(j, "clip not written", e, final=True)
            return
        self._finish(fk, j.start_time, True)

    def _fail(self, j: _Job, reason: str, e: Exception | None = None, final: bool = False, trace=False) -> None:
        """Count a job that got no evidence; ``final``: events with its start time are ignored from now on."""
        self.failures.append(f"{j.alert_id}: {reason}" + (f": {e}" if e is not None else ""))
        del self.failures[: max(0, len(self.failures) - self.max_failures)]
        f = {"alert": j.alert_id, "camera": j.camera, "error": short(e, 300) if e is not None else ""}
        self.tally.note(reason, level=logging.ERROR, exc=e if trace else None, **f)
        if final:
            self._finish((j.camera, j.alert_id), j.start_time, False)

    def _finish(self, fk: tuple, start_time: float, written: bool) -> None:
        self.finished[fk] = (start_time, written)
        self.finished.move_to_end(fk)
        while len(self.finished) > self.max_finished:
            self.finished.popitem(last=False)

    def _write(self, j: _Job, segs, start: float, end: float) -> None:
        clip_p, snap_p = ensure_inside(self.root, j.paths.clip), ensure_inside(self.root, j.paths.snapshot)
        reencoded = None
        if clip_p.is_file():  # written before a restart: publish it again, do not cut twice
            dur, codec = video_duration(clip_p)
            c_start, c_end = start, end
        else:
            cut = cut_clip(
                j.paths.buffer, segs, start, end, clip_p, self.masks, self.ecfg.segment_seconds, self.ecfg.crf
            )
            dur, codec, c_start, c_end, reencoded = cut.duration, cut.codec, cut.start, cut.end, cut.reencoded
        peak_t = min(max(j.best_time - self.clip_s / 2, c_start), c_end)
        snap = None
        try:
            if not snap_p.is_file():
                amap = j.anomaly_map.tolist() if j.anomaly_map is not None else None
                snapshot(clip_p, peak_t - c_start, snap_p, self.masks, amap)
            snap = {
                **file_info(snap_p, self.root, self.ecfg.base_url),
                "time": peak_t,
                "anomaly_map": j.anomaly_map is not None,
            }
        except Exception as e:  # noqa: BLE001 - the clip is still published
            self.tally.note("snapshot not written", level=logging.ERROR, alert=j.alert_id, error=short(e, 300))
        clip = {
            **file_info(clip_p, self.root, self.ecfg.base_url),
            "duration": round(dur, 3),
            "start_time": c_start,
            "end_time": c_end,
            "codec": codec,
            "reencoded": reencoded,
        }
        rec_alert = {"start_time": j.start_time, "end_time": j.end_time, "peak": j.peak}
        data = encode_evidence(j.alert_id, j.camera, clip, snap, rec_alert)
        self.producer.produce(
            self.cfg.topics.alerts,
            j.camera,
            data,
            RECORD_HEADERS["evidence"],
            on_delivery=lambda e, i=j.alert_id: (
                e and log.error("evidence record lost", extra={"fields": {"alert": i, "error": str(e)}})
            ),
        )
        rec = json.loads(data)
        self.records.append(rec)
        log.info(
            "evidence written",
            extra={"fields": {"alert": j.alert_id, "clip": clip["path"], "duration": clip["duration"]}},
        )
        try:
            if self.on_evidence:
                self.on_evidence(rec)
            self.deleted += apply_retention(self.root, self.ecfg.max_age_days, self.ecfg.max_total_mb)
        except Exception as e:  # noqa: BLE001 - the evidence is written and published
            self.tally.note(f"after-write step failed ({type(e).__name__})", exc=e, alert=j.alert_id)

    def _commit(self) -> None:
        if not self._pos:
            return
        offs = dict(self._pos)
        for j in self.jobs.values():
            tp = j.first[:2]
            if tp in offs:
                offs[tp] = min(offs[tp], j.first[2])
        try:
            self.t.commit(offs)
        except Exception as e:  # noqa: BLE001 - retried with the next step
            log.warning("evidence: commit failed", extra={"fields": {"error": str(e)}})

    # -- thread -------------------------------------------------------------------------------
    def start(self) -> EvidenceWriter:
        self._thread = threading.Thread(target=self._run, name="evidence", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(0.2)
            except Exception as e:  # noqa: BLE001 - keep the writer alive (poll/commit trouble); counted
                self.tally.note(f"evidence writer step failed ({type(e).__name__})", level=logging.ERROR, exc=e)
                self._stop.wait(1.0)

    def stop(self, drain_s: float = 0.0, flush_open: bool = False) -> None:
        """Stop; with ``drain_s`` first keep working until no alert is pending (at most that long);
        ``flush_open``: cut alerts that never ended too (the cameras' streams are over)."""
        self.flush_open = self.flush_open or flush_open
        self._empty_polls = 0
        deadline = time.monotonic() + drain_s
        while (
            self._thread is not None
            and (self.jobs or self._empty_polls < 2)
            and drain_s > 0
            and time.monotonic() < deadline
            and self._thread.is_alive()
        ):
            time.sleep(0.1)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.owns_transport:
            self.t.close()
        if self.jobs:
            ids = sorted(j.alert_id for j in self.jobs.values())
            fields = {"count": len(ids), "alerts": ",".join(ids[:20]) + (",…" if len(ids) > 20 else "")}
            log.error("evidence: alerts left without evidence", extra={"fields": fields})
        if self.counts:
            log.warning("evidence: skipped or failed, by reason", extra={"fields": dict(self.counts)})
