"""In-memory picture of the site for the UI: cameras (latest thumbnail, recent scores, health) and
alerts (latest record per id, open first), with a fan-out of change events to SSE subscribers.

Thread-safe: the feed thread writes, the web server's event loop reads and subscribes.

Every record is checked before it is stored (:func:`check_json`: finite numbers, integers below
2**63, text that encodes as UTF-8, bounded sizes and nesting), so that no stored record can make an
API response fail; a bad one raises :class:`SchemaError` and is left out. Memory is bounded: at most
``max_alerts`` alerts (the oldest closed ones go first, then the oldest open ones), as many evidence
records, and ``max_cameras`` cameras (the least recently active one goes first).
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import threading
import time
from typing import Any

from fusewatch.errors import SchemaError
from fusewatch.stream.live import Thumbnail
from fusewatch.stream.schema import checked_text

MAX_CAMERA = 256
"""Longest camera id (characters)."""
MAX_ID = 256
"""Longest alert id (characters)."""
MAX_TEXT = 4096
"""Longest text value anywhere in a stored record (characters)."""
MAX_DEPTH = 8
"""Deepest nesting of a stored record."""
MAX_NODES = 100_000
"""Most values in one stored record (an alert's anomaly map has up to 65,536 cells)."""
MAX_JPEG = 16 << 20
"""Largest thumbnail kept (bytes)."""
MAX_CAMERAS = 4096
"""Cameras kept by default."""
ALERT_TYPES = ("new", "update", "end")


def check_json(obj: Any, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES, max_text: int = MAX_TEXT) -> None:
    """Raise :class:`SchemaError` unless ``obj`` is plain JSON data that re-encodes: dicts with text
    keys, lists, text (UTF-8, at most ``max_text`` characters), finite floats, ints below 2**63,
    bools, None; nested at most ``max_depth`` deep, ``max_nodes`` values in all. Iterative: a deep
    structure never exhausts the stack."""
    stack, n = [(obj, 0)], 0
    while stack:
        x, d = stack.pop()
        n += 1
        if n > max_nodes:
            raise SchemaError("too_large", f"more than {max_nodes} values")
        if x is None or isinstance(x, bool):
            continue
        if isinstance(x, int):
            if not -(2**63) <= x < 2**63:
                raise SchemaError("out_of_range", f"an integer of {x.bit_length()} bits")
        elif isinstance(x, float):
            if not math.isfinite(x):
                raise SchemaError("non_finite", repr(x))
        elif isinstance(x, str):
            _text(x, "text", max_text)
        elif isinstance(x, (dict, list, tuple)):
            if d >= max_depth:
                raise SchemaError("bad_field", f"nested deeper than {max_depth} levels")
            if isinstance(x, dict):
                for k in x:
                    if not isinstance(k, str):
                        raise SchemaError("bad_field", f"a key of type {type(k).__name__}")
                    _text(k, "key", max_text)
                stack.extend((v, d + 1) for v in x.values())
            else:
                stack.extend((v, d + 1) for v in x)
        else:
            raise SchemaError("bad_field", f"a value of type {type(x).__name__}")


def _text(v: Any, what: str, max_len: int, min_len: int = 0) -> str:
    return checked_text(v, what, max_len, min_len)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SchemaError("bad_field", f"{what} has type {type(v).__name__}")
    if isinstance(v, int) and not -(2**63) <= v < 2**63:
        raise SchemaError("out_of_range", f"{what}: an integer of {v.bit_length()} bits")
    if not math.isfinite(v):
        raise SchemaError("non_finite", f"{what} is {v}")
    return float(v)


def _int(v: Any, what: str, lo: int = -(2**63), hi: int = 2**63) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v < hi:
        raise SchemaError("bad_field", f"{what} must be an integer in [{lo}, {hi})")
    return v


def _camera_id(v: Any) -> str:
    return _text(v, "camera", MAX_CAMERA, 1)


class LiveState:
    def __init__(self, score_history: int = 600, max_alerts: int = 5000, max_cameras: int = MAX_CAMERAS):
        self.lock = threading.Lock()
        self.score_history = score_history
        self.max_alerts = max_alerts
        self.max_cameras = max_cameras
        self.scores: dict[str, collections.deque] = {}  # least recently active camera first
        self.thumbs: dict[str, Thumbnail] = {}
        self.health: dict[str, dict] = {}
        self.alerts: dict[str, dict] = {}
        self.evidence: dict[str, dict] = {}
        self.labels: dict[str, dict] = {}
        self._order: dict[str, list] = {"open": [], "closed": []}  # heaps (start_time, seq, id); lazy deletion
        self._seq = itertools.count()
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.events = 0

    # -- writers (feed thread) ------------------------------------------------------------------
    def _camera(self, cam: str) -> collections.deque:
        q = self.scores.pop(cam, None)
        if q is None:
            q = collections.deque(maxlen=self.score_history)
        self.scores[cam] = q  # (re)inserted last: the most recently active
        while len(self.scores) > max(1, self.max_cameras):
            old = next(iter(self.scores))
            del self.scores[old]
            self.thumbs.pop(old, None)
            self.health.pop(old, None)
        return q

    def add_score(self, d: dict) -> None:
        cam = _camera_id(d.get("camera"))
        row = (
            _int(d.get("clip"), "clip"),
            _num(d.get("time"), "time"),
            _num(d.get("score"), "score"),
            _int(d.get("frame_start", 0), "frame_start"),
            _int(d.get("frame_end", 0), "frame_end"),
        )
        with self.lock:
            self._camera(cam).append(row)
        self.publish("score", {"camera": cam, "clip": row[0], "time": row[1], "score": row[2]})

    def add_thumbnail(self, t: Thumbnail) -> None:
        cam = _camera_id(t.camera)
        _num(t.time, "thumbnail time")
        _int(t.frame, "thumbnail frame")
        for v in (t.width, t.height):
            _int(v, "thumbnail size", 1, 65536)
        if not isinstance(t.jpeg, bytes) or len(t.jpeg) > MAX_JPEG:
            raise SchemaError("too_large", f"thumbnail over {MAX_JPEG} bytes")
        with self.lock:
            self._camera(cam)
            self.thumbs[cam] = t
        self.publish("thumbnail", {"camera": cam, "time": t.time})

    def add_health(self, d: dict) -> None:
        if not isinstance(d, dict):
            raise SchemaError("bad_field", "health record is not an object")
        cam = _camera_id(d.get("camera"))
        check_json(d)
        with self.lock:
            self._camera(cam)
            self.health[cam] = d
        self.publish("health", d)

    def add_evidence(self, d: dict) -> None:
        if not isinstance(d, dict):
            raise SchemaError("bad_field", "evidence record is not an object")
        aid = _text(d.get("alert_id") or d.get("id"), "evidence alert_id", MAX_ID, 1)
        check_json(d)
        with self.lock:
            self.evidence.pop(aid, None)
            self.evidence[aid] = d  # insertion order: the oldest go first
            while len(self.evidence) > self.max_alerts:
                del self.evidence[next(iter(self.evidence))]
        self.publish("evidence", {"alert_id": aid, "camera": d.get("camera")})

    def add_alert(self, rec: dict) -> None:
        check_json(rec)
        aid, cam = _text(rec.get("id"), "alert id", MAX_ID, 1), _camera_id(rec.get("camera"))
        typ = rec.get("type")
        if typ not in ALERT_TYPES:
            raise SchemaError("bad_alert_type", repr(typ)[:40])
        start_time, end_time = _num(rec.get("start_time"), "start_time"), _num(rec.get("end_time"), "end_time")
        start_clip, end_clip = _int(rec.get("start_clip"), "start_clip"), _int(rec.get("end_clip"), "end_clip")
        score, peak = _num(rec.get("score"), "score"), _num(rec.get("peak"), "peak")
        epoch = _int(rec.get("epoch", 0), "epoch")
        with self.lock:
            self._camera(cam)
            a = self.alerts.get(aid)
            if a is None:
                a = self.alerts[aid] = {
                    "id": aid,
                    "camera": cam,
                    "start_time": start_time,
                    "start_clip": start_clip,
                    "events": 0,
                    "peak": 0.0,
                }
            before = a.get("state")
            if typ == "end" or before != "closed":
                a.update(
                    end_time=end_time,
                    end_clip=end_clip,
                    score=score,
                    state="closed" if typ == "end" else "open",
                    model=rec.get("model"),
                    epoch=epoch,
                    record=rec,
                )
            if a["state"] != before:
                heapq.heappush(self._order[a["state"]], (a["start_time"], next(self._seq), aid))
            a["peak"] = max(a["peak"], peak)
            a["events"] += 1
            if rec.get("anomaly_map") is not None:
                a["anomaly_map"] = rec["anomaly_map"]
            self._trim()
            out = self._summary(a)
        self.publish("alert", out)

    def set_label(self, aid: str, label: dict | None) -> None:
        with self.lock:
            if label is None:
                self.labels.pop(aid, None)
            else:
                self.labels[aid] = label
        self.publish("label", {"id": aid, "label": label})

    def _oldest(self, state: str) -> str | None:
        """Pop the id of the oldest alert in ``state`` off its heap (stale entries are dropped)."""
        h = self._order[state]
        while h:
            t, _, aid = heapq.heappop(h)
            a = self.alerts.get(aid)
            if a is not None and a["state"] == state and a["start_time"] == t:
                return aid
        return None

    def _trim(self) -> None:
        """Keep at most ``max_alerts`` alerts: the oldest closed first, then the oldest open."""
        while len(self.alerts) > self.max_alerts:
            aid = self._oldest("closed") or self._oldest("open")
            if aid is None:
                break
            del self.alerts[aid]
            self.evidence.pop(aid, None)
        if sum(map(len, self._order.values())) > 2 * len(self.alerts) + 1024:  # compact stale entries
            self._order = {"open": [], "closed": []}
            for a in self.alerts.values():
                self._order[a["state"]].append((a["start_time"], next(self._seq), a["id"]))
            for h in self._order.values():
                heapq.heapify(h)

    # -- readers ---------------------------------------------------------------------------------
    def _summary(self, a: dict) -> dict:
        lab = self.labels.get(a["id"])
        return {
            k: a.get(k)
            for k in (
                "id",
                "camera",
                "state",
                "start_time",
                "end_time",
                "start_clip",
                "end_clip",
                "score",
                "peak",
                "events",
                "epoch",
            )
        } | {"label": lab["label"] if lab else None, "has_evidence": a["id"] in self.evidence}

    def cameras(self) -> list[dict]:
        """One entry per camera; one pass over the alerts (open ones counted per camera) and at most
        120 scores per camera."""
        with self.lock:
            n_open = collections.Counter(a["camera"] for a in self.alerts.values() if a["state"] == "open")
            out = []
            for cam in sorted(self.scores):
                sc = list(itertools.islice(reversed(self.scores[cam]), 120))[::-1]
                th = self.thumbs.get(cam)
                out.append(
                    {
                        "camera": cam,
                        "last_score": sc[-1][2] if sc else None,
                        "last_time": sc[-1][1] if sc else None,
                        "scores": [[c, t, s] for c, t, s, _, _ in sc],
                        "thumbnail": {"time": th.time, "width": th.width, "height": th.height} if th else None,
                        "open_alerts": n_open.get(cam, 0),
                        "health": self.health.get(cam),
                    }
                )
            return out

    def alert_list(
        self,
        camera: str | None = None,
        since: float | None = None,
        until: float | None = None,
        state: str | None = None,
        limit: int = 500,
    ) -> list[dict]:
        with self.lock:
            al = [
                a
                for a in self.alerts.values()
                if (not camera or a["camera"] == camera)
                and (since is None or a["end_time"] >= since)
                and (until is None or a["start_time"] <= until)
                and (not state or a["state"] == state)
            ]
            al.sort(key=lambda a: (a["state"] != "open", -a["start_time"]))
            return [self._summary(a) for a in al[: max(0, limit)]]

    def alert(self, aid: str) -> dict | None:
        with self.lock:
            a = self.alerts.get(aid)
            if a is None:
                return None
            sc = self.scores.get(a["camera"], ())
            pad = max(2 * (a["end_time"] - a["start_time"]), 30.0)  # context around the alert
            lo, hi = a["start_time"] - pad, a["end_time"] + pad
            return self._summary(a) | {
                "record": a.get("record"),
                "anomaly_map": a.get("anomaly_map"),
                "evidence": self.evidence.get(aid),
                "label_detail": self.labels.get(aid),
                "timeline": [[c, t, s, fs, fe] for c, t, s, fs, fe in sc if lo <= t <= hi],
            }

    def thumbnail(self, cam: str) -> Thumbnail | None:
        with self.lock:
            return self.thumbs.get(cam)

    # -- events ------------------------------------------------------------------------------
    def subscribe(self, loop: asyncio.AbstractEventLoop, maxsize: int = 1000) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize)
        with self.lock:
            self._subs.append((loop, q))
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        with self.lock:
            self._subs = [(lp, x) for lp, x in self._subs if x is not q]

    def publish(self, kind: str, data: Any) -> None:
        self.events += 1
        ev = (kind, data, time.time())
        with self.lock:
            subs = list(self._subs)
        for loop, q in subs:

            def put(q=q):
                if q.full():  # a stalled client loses old events, never blocks the feed
                    q.get_nowait()
                q.put_nowait(ev)

            try:
                loop.call_soon_threadsafe(put)
            except RuntimeError:  # loop closed
                self.unsubscribe(q)
