"""In-memory picture of the site for the UI: cameras (latest thumbnail, recent scores, health) and
alerts (latest record per id, open first), with a fan-out of change events to SSE subscribers.

Thread-safe: the feed thread writes, the web server's event loop reads and subscribes.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

from fusewatch.stream.live import Thumbnail


class LiveState:
    def __init__(self, score_history: int = 600, max_alerts: int = 5000):
        self.lock = threading.Lock()
        self.score_history = score_history
        self.max_alerts = max_alerts
        self.scores: dict[str, collections.deque] = {}
        self.thumbs: dict[str, Thumbnail] = {}
        self.health: dict[str, dict] = {}
        self.alerts: dict[str, dict] = {}
        self.evidence: dict[str, dict] = {}
        self.labels: dict[str, dict] = {}
        self._subs: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.events = 0

    # -- writers (feed thread) ------------------------------------------------------------------
    def _camera(self, cam: str) -> collections.deque:
        q = self.scores.get(cam)
        if q is None:
            q = self.scores[cam] = collections.deque(maxlen=self.score_history)
        return q

    def add_score(self, d: dict) -> None:
        with self.lock:
            self._camera(d["camera"]).append(
                (
                    int(d["clip"]),
                    float(d["time"]),
                    float(d["score"]),
                    int(d.get("frame_start", 0)),
                    int(d.get("frame_end", 0)),
                )
            )
        self.publish("score", {k: d.get(k) for k in ("camera", "clip", "time", "score")})

    def add_thumbnail(self, t: Thumbnail) -> None:
        with self.lock:
            self._camera(t.camera)
            self.thumbs[t.camera] = t
        self.publish("thumbnail", {"camera": t.camera, "time": t.time})

    def add_health(self, d: dict) -> None:
        cam = str(d.get("camera", ""))
        if not cam:
            return
        with self.lock:
            self._camera(cam)
            self.health[cam] = d
        self.publish("health", d)

    def add_evidence(self, d: dict) -> None:
        aid = str(d.get("alert_id") or d.get("id") or "")
        if not aid:
            return
        with self.lock:
            self.evidence[aid] = d
        self.publish("evidence", {"alert_id": aid, "camera": d.get("camera")})

    def add_alert(self, rec: dict) -> None:
        aid = rec["id"]
        with self.lock:
            self._camera(rec["camera"])
            a = self.alerts.get(aid)
            if a is None:
                a = self.alerts[aid] = {
                    "id": aid,
                    "camera": rec["camera"],
                    "start_time": rec["start_time"],
                    "start_clip": rec["start_clip"],
                    "events": 0,
                    "peak": 0.0,
                }
            if rec["type"] == "end" or a.get("state") != "closed":
                a.update(
                    end_time=rec["end_time"],
                    end_clip=rec["end_clip"],
                    score=rec["score"],
                    state="closed" if rec["type"] == "end" else "open",
                    model=rec.get("model"),
                    epoch=rec.get("epoch", 0),
                    record=rec,
                )
            a["peak"] = max(a["peak"], float(rec["peak"]))
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

    def _trim(self) -> None:
        if len(self.alerts) <= self.max_alerts:
            return
        closed = sorted((a for a in self.alerts.values() if a["state"] == "closed"), key=lambda a: a["start_time"])
        for a in closed[: len(self.alerts) - self.max_alerts]:
            del self.alerts[a["id"]]

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
        with self.lock:
            out = []
            for cam in sorted(self.scores):
                sc = list(self.scores[cam])
                th = self.thumbs.get(cam)
                out.append(
                    {
                        "camera": cam,
                        "last_score": sc[-1][2] if sc else None,
                        "last_time": sc[-1][1] if sc else None,
                        "scores": [[c, t, s] for c, t, s, _, _ in sc[-120:]],
                        "thumbnail": {"time": th.time, "width": th.width, "height": th.height} if th else None,
                        "open_alerts": sum(
                            1 for a in self.alerts.values() if a["camera"] == cam and a["state"] == "open"
                        ),
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
            return [self._summary(a) for a in al[:limit]]

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
