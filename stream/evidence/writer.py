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
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from ..alert_schema import decode_alert
from ..logs import get_logger
from ..records import RECORD_HEADERS, encode_evidence, record_kind
from ..schema import SchemaError
from .cut import EvidenceError, cut_clip, parse_mask, snapshot
from .segments import camera_dir_name, read_index

log = get_logger("fusewatch.stream.evidence")


@dataclass
class _Job:
    alert_id: str
    camera: str
    start_time: float
    end_time: float
    peak: float
    best_score: float
    best_time: float
    anomaly_map: list | None
    ended: bool
    first: tuple  # (topic, partition, offset) of its first event: commits stop before it
    ready_mono: float | None = None


def file_info(path: Path, root: Path, base_url: str) -> dict:
    """``path``/``url``/``bytes``/``sha256`` of a stored evidence file."""
    data = path.read_bytes()
    rel = path.relative_to(root).as_posix()
    url = f"{base_url.rstrip('/')}/{quote(rel)}"  # a file named "cam%2F1" is the URL path "cam%252F1"
    return {"path": rel, "url": url, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class EvidenceWriter:
    """``transport``: subscribed here to the alerts topic (and used to publish the records unless
    ``producer`` is given; closed by :meth:`stop` when ``owns_transport``); ``cameras``: only these
    (None: all); ``on_evidence(record_dict)`` after each record is produced."""

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
    ):
        self.cfg, self.ecfg = cfg, cfg.evidence
        self.t, self.producer = transport, producer or transport
        self.root = Path(self.ecfg.dir).expanduser()
        self.masks = [parse_mask(m) for m in self.ecfg.masks]
        self.cameras = set(cameras) if cameras else None
        self.on_evidence = on_evidence
        self.owns_transport = owns_transport
        self.clip_s = cfg.clips.clip_len / cfg.source.sample_fps
        self.jobs: dict[str, _Job] = {}
        self.finished: set[str] = set()
        self.records: list[dict] = []
        self.failures: list[str] = []
        self.deleted = 0
        self._pos: dict = {}
        self._empty_polls = 0
        self.flush_open = False
        """True: treat alerts still open as ended (the streams are over)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t.subscribe([cfg.topics.alerts], group_id or self.ecfg.group_id, from_beginning=from_beginning)

    # -- consuming ----------------------------------------------------------------------------
    def step(self, timeout: float = 0.2) -> int:
        """Poll once, update jobs, write what is ready, commit. Returns records polled."""
        recs = self.t.poll(500, timeout)
        for r in recs:
            self._pos[r.tp] = r.offset + 1
            kind = record_kind(r.value)
            if kind not in ("alert", None):
                continue
            try:
                a = decode_alert(r.value, self.cfg.max_message_bytes)
            except SchemaError as e:
                log.warning(
                    "evidence: skipping malformed alert",
                    extra={"fields": {"at": f"{r.topic}[{r.partition}]@{r.offset}", "error": str(e)}},
                )
                continue
            self._on_alert(a, (r.topic, r.partition, r.offset))
        self.process()
        self._commit()
        self._empty_polls = 0 if recs else self._empty_polls + 1
        return len(recs)

    def _on_alert(self, a, pos) -> None:
        if (self.cameras is not None and a.camera not in self.cameras) or a.id in self.finished:
            return
        j = self.jobs.get(a.id)
        if j is None:
            j = self.jobs[a.id] = _Job(
                a.id, a.camera, a.start_time, a.end_time, a.peak, a.score, a.end_time, a.anomaly_map, False, pos
            )
        j.end_time, j.peak = max(j.end_time, a.end_time), max(j.peak, a.peak)
        if a.score > j.best_score or (a.anomaly_map is not None and j.anomaly_map is None):
            j.best_score, j.best_time = max(a.score, j.best_score), a.end_time
            j.anomaly_map = a.anomaly_map if a.anomaly_map is not None else j.anomaly_map
        j.ended = j.ended or a.type == "end"

    def window(self, j: _Job) -> tuple[float, float]:
        """Capture span (Unix s) of ``j``'s clip: pre-roll before it opened .. its end, capped."""
        start = j.start_time - self.ecfg.pre_seconds
        return start, min(j.end_time, start + self.ecfg.max_seconds)

    def process(self) -> None:
        """Write every job that is ready (ended or at the cap, and the buffer covers it)."""
        now = time.monotonic()
        for j in list(self.jobs.values()):
            start, end = self.window(j)
            if not (j.ended or self.flush_open or end - start >= self.ecfg.max_seconds):
                continue
            if j.ready_mono is None:
                j.ready_mono = now
            bdir = self.root / ".buffer" / camera_dir_name(j.camera)
            segs, done = read_index(bdir)
            covered = done or (segs and segs[-1].end >= end - 1e-3)
            if not covered and now - j.ready_mono < self.ecfg.wait_s:
                continue
            del self.jobs[j.alert_id]
            self.finished.add(j.alert_id)
            try:
                self._write(j, bdir, segs, start, end)
            except (EvidenceError, OSError, ValueError) as e:
                self.failures.append(f"{j.alert_id}: {e}")
                log.error(
                    "evidence: clip not written",
                    extra={"fields": {"alert": j.alert_id, "camera": j.camera, "error": str(e)}},
                )

    def _write(self, j: _Job, bdir: Path, segs, start: float, end: float) -> None:
        cam_dir = self.root / camera_dir_name(j.camera)
        clip_p, snap_p = cam_dir / f"{j.alert_id}.mp4", cam_dir / f"{j.alert_id}.jpg"
        reencoded = None
        if clip_p.is_file():  # written before a restart: publish it again, do not cut twice
            from .cut import video_duration

            dur, codec = video_duration(clip_p)
            c_start, c_end = start, end
        else:
            cut = cut_clip(bdir, segs, start, end, clip_p, self.masks, self.ecfg.segment_seconds, self.ecfg.crf)
            dur, codec, c_start, c_end, reencoded = cut.duration, cut.codec, cut.start, cut.end, cut.reencoded
        peak_t = min(max(j.best_time - self.clip_s / 2, c_start), c_end)
        snap = None
        try:
            if not snap_p.is_file():
                snapshot(clip_p, peak_t - c_start, snap_p, self.masks, j.anomaly_map)
            snap = {
                **file_info(snap_p, self.root, self.ecfg.base_url),
                "time": peak_t,
                "anomaly_map": j.anomaly_map is not None,
            }
        except (EvidenceError, OSError, ValueError) as e:
            log.error("evidence: snapshot not written", extra={"fields": {"alert": j.alert_id, "error": str(e)}})
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
        import json

        rec = json.loads(data)
        self.records.append(rec)
        log.info(
            "evidence written",
            extra={"fields": {"alert": j.alert_id, "clip": clip["path"], "duration": clip["duration"]}},
        )
        if self.on_evidence:
            self.on_evidence(rec)
        self.deleted += apply_retention(self.root, self.ecfg.max_age_days, self.ecfg.max_total_mb)

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
            except Exception:  # noqa: BLE001 - keep the writer alive; logged
                log.exception("evidence writer step failed")
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
            log.error(
                "evidence: alerts left without evidence", extra={"fields": {"alerts": ",".join(sorted(self.jobs))}}
            )


def apply_retention(root: Path, max_age_days: float, max_total_mb: float) -> int:
    """Delete stored evidence older than ``max_age_days`` (file time), then the oldest alerts'
    files while the store exceeds ``max_total_mb``. Returns the number of files deleted."""
    groups: dict[Path, list[Path]] = {}
    for p in root.glob("*/*"):
        if p.parent.name == ".buffer" or p.suffix not in (".mp4", ".jpg") or not p.is_file():
            continue
        groups.setdefault(p.with_suffix(""), []).append(p)
    items = []
    for _stem, files in groups.items():
        st = [f.stat() for f in files]
        items.append((max(s.st_mtime for s in st), sum(s.st_size for s in st), files))
    items.sort(key=lambda x: x[0])
    now, n, total = time.time(), 0, sum(i[1] for i in items)
    for k, (mtime, size, files) in enumerate(items):
        too_old = now - mtime > max_age_days * 86400
        too_big = total > max_total_mb * 1e6 and k < len(items) - 1
        if not (too_old or too_big):
            continue
        for f in files:
            f.unlink(missing_ok=True)
            n += 1
        total -= size
    return n
