"""The rolling on-disk buffer of a camera's video *packets* (no second decode, no re-encode).

The worker's PyAV reader hands every demuxed video packet (after decoding it for the features) to
a :class:`SegmentRecorder`, which remuxes them unchanged into short Matroska segments
(``seg-<n>.mkv``; Matroska takes any codec, e.g. H.264 or MS-MPEG4). A segment starts at a
keyframe and is closed at the first keyframe after ``evidence.segment_seconds`` (so a source with
long GOPs has long segments). Closed segments are listed, with their capture wall-clock span, in
``index.json`` next to them (rewritten atomically)::

    <evidence.dir>/.buffer/<camera>/seg-000001.mkv
    <evidence.dir>/.buffer/<camera>/index.json
      {"camera": "c1", "done": false, "segments": [{"file": "seg-000001.mkv", "start": 1.7e9,
        "end": 1.7e9, "codec": "h264", "width": 360, "height": 240, "bytes": 81234}, ...]}

``start``/``end`` are Unix seconds of capture (the worker's ``wall`` timeline, the same clock as an
alert's ``start_time``/``end_time``; ``end`` includes the last frame's duration). ``done`` is
true once the worker stopped. Retention: segments whose ``end`` is older than ``buffer_seconds``
before the newest capture time, then the oldest while the buffer exceeds ``buffer_max_mb``.
The evidence writer (:mod:`.writer`) reads the index, never the recorder's memory, so it can run
in another process on the same host.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from ..logs import get_logger

INDEX = "index.json"


def camera_dir_name(camera: str) -> str:
    """File-system- and URL-safe directory name of a camera id (percent-encoded, ``.`` kept)."""
    name = quote(camera, safe="")
    return "%2E" + name[1:] if name.startswith(".") else name


@dataclass
class Segment:
    """One closed segment: ``file`` (name in the camera's buffer dir), capture span ``start`` ..
    ``end`` (Unix s), video ``codec`` (FFmpeg name), ``width``×``height`` px, size ``bytes``."""

    file: str
    start: float
    end: float
    codec: str
    width: int
    height: int
    bytes: int


def read_index(buffer_dir: Path) -> tuple[list[Segment], bool]:
    """``(segments oldest first, done)`` of a camera buffer; ``([], False)`` when there is none yet."""
    try:
        obj = json.loads((Path(buffer_dir) / INDEX).read_text())
    except (OSError, ValueError):
        return [], False
    segs = [Segment(**s) for s in obj.get("segments", [])]
    return segs, bool(obj.get("done"))


class SegmentRecorder:
    """Rolling packet buffer of one camera (all connections of its source, across reconnects and
    replay loops). Thread-safe; the buffer directory is emptied when the recorder starts."""

    def __init__(self, cfg, camera: str, root: Path | None = None):
        self.cfg = cfg  # the [evidence] section
        self.camera = camera
        self.dir = Path(root or Path(cfg.dir).expanduser()) / ".buffer" / camera_dir_name(camera)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.log = get_logger("fusewatch.stream.evidence", camera=camera)
        self.segments: list[Segment] = []
        self.done = False
        self.next_n = 1
        self._lock = threading.Lock()
        self._write_index()

    def connection(self, reader, wall_of: Callable[[float], float | None], alive: Callable[[], bool]):
        """A per-connection packet sink bound to ``reader`` (sets ``reader.on_packet``); None when
        the backend cannot hand over packets (OpenCV)."""
        if not hasattr(reader, "on_packet") or getattr(reader, "v", None) is None:
            self.log.warning("evidence: this source backend gives no packets; nothing is recorded")
            return None
        conn = _Connection(self, reader.v, wall_of, alive)
        reader.on_packet = conn.packet
        return conn

    def new_path(self) -> Path:
        with self._lock:
            n, self.next_n = self.next_n, self.next_n + 1
        return self.dir / f"seg-{n:06d}.mkv"

    def add(self, seg: Segment) -> None:
        with self._lock:
            self.segments.append(seg)
            self._retain()
            self._write_index()

    def close(self) -> None:
        with self._lock:
            self.done = True
            self._write_index()

    def _retain(self) -> None:
        newest = max(s.end for s in self.segments)
        limit = self.cfg.buffer_max_mb * 1e6
        while len(self.segments) > 1 and (
            newest - self.segments[0].end > self.cfg.buffer_seconds or sum(s.bytes for s in self.segments) > limit
        ):
            old = self.segments.pop(0)
            (self.dir / old.file).unlink(missing_ok=True)

    def _write_index(self) -> None:
        tmp = self.dir / (INDEX + ".tmp")
        tmp.write_text(
            json.dumps({"camera": self.camera, "done": self.done, "segments": [asdict(s) for s in self.segments]})
        )
        os.replace(tmp, self.dir / INDEX)


class _Connection:
    """Remuxes one connection's video packets into segments (runs on the decode thread)."""

    def __init__(self, rec: SegmentRecorder, stream, wall_of, alive):
        self.rec, self.stream, self.wall_of, self.alive = rec, stream, wall_of, alive
        self.out = self.ostream = self.path = self.base = None
        self.raw0 = self.raw1 = None  # container times (s) of the open segment's first / last pts
        rate = stream.average_rate or stream.guessed_rate
        self.frame_s = 1.0 / float(rate) if rate else 0.1
        self.failed = False

    def packet(self, pkt) -> None:
        if self.failed or not self.alive():
            return
        ts = pkt.pts if pkt.pts is not None else pkt.dts
        if ts is None or pkt.size == 0 or pkt.time_base is None:
            return
        raw = float(ts * pkt.time_base)
        try:
            if pkt.is_keyframe and (self.out is None or raw - self.raw0 >= self.rec.cfg.segment_seconds):
                self._finish()
                self.path = self.rec.new_path()
                self.out = __import__("av").open(str(self.path), "w", format="matroska")
                self.ostream = self.out.add_stream_from_template(self.stream)
                self.raw0 = self.raw1 = raw
                self.base = pkt.dts if pkt.dts is not None else pkt.pts
            if self.out is None:
                return  # waiting for the first keyframe
            self.raw0, self.raw1 = min(self.raw0, raw), max(self.raw1, raw)
            # each segment starts at time 0 (the concat demuxer then joins them back to back)
            if pkt.pts is not None:
                pkt.pts -= self.base
            if pkt.dts is not None:
                pkt.dts -= self.base
            pkt.stream = self.ostream
            self.out.mux(pkt)
        except Exception as e:  # never break decoding for the evidence buffer
            self.failed = True
            self.rec.log.error(
                "evidence: segment recording failed", extra={"fields": {"error": f"{type(e).__name__}: {e}"}}
            )

    def _finish(self) -> None:
        if self.out is None:
            return
        out, path, self.out = self.out, self.path, None
        try:
            out.close()
        except Exception as e:
            self.rec.log.error("evidence: closing a segment failed", extra={"fields": {"error": str(e)}})
            path.unlink(missing_ok=True)
            return
        start, end = self.wall_of(self.raw0), self.wall_of(self.raw1)
        if start is None or end is None:
            path.unlink(missing_ok=True)
            return
        cc = self.stream.codec_context
        self.rec.add(Segment(path.name, start, end + self.frame_s, cc.name, cc.width, cc.height, path.stat().st_size))

    def close(self) -> None:
        """End of the connection: the open segment is closed and indexed."""
        try:
            self._finish()
        except Exception as e:
            self.rec.log.error("evidence: closing a segment failed", extra={"fields": {"error": str(e)}})
