"""One connection's decoding, run in a decode thread of a :class:`~.supervisor.VideoSource`.

:class:`DecodeLoop` turns a :class:`~.reader.Reader`'s events into queue items: it keeps the
source's timeline (``pts`` seconds since the first frame, continued across reconnects, replay
loops and timestamp jumps), samples frames to ``sample_fps`` before RGB conversion, holds each
sampled frame until the audio covering its sampling slot has been queued (at most
``AUDIO_HOLD_S``), paces replays, and reports how the connection ended as a
:class:`DecodeOutcome`. The supervisor owns the state it reads and writes (listed on the class).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..clips import AudioChunk, Frame
from .errors import SourceError
from .opener import open_reader
from .queue import Discontinuity
from .reader import AudioEvent, DecodeError, Reader

MAX_CONSECUTIVE_DECODE_ERRORS = 100
AUDIO_HOLD_S = 2.0
"""Longest a sampled frame waits in the decoder for its audio to be demuxed (interleaving slack)."""
DAMAGE_WINDOW_S = 10.0
"""After a sign of damage in a file (a decode error, a packet the demuxer flagged corrupt, a frame
that came out of order), frame-number gaps are read from its timestamps for this many seconds of
stream time: a decoder recovering from damage also loses frames without reporting an error."""
JUMP_FRAMES = 100
"""A forward timestamp step of more than this many frame intervals (and 10 s) is logged and
counted as a timestamp jump (the timeline keeps it: a recording with a gap), never as lost frames."""


@dataclass(frozen=True, slots=True)
class DecodeOutcome:
    """How one connection's decode thread ended.

    ``kind``: ``eof`` (the stream ended; ``detail`` set when it ended early or with decode
    errors), ``error`` (it failed; ``detail`` is one line), ``stopped`` (stopped or abandoned);
    the supervisor adds ``stall`` (no frame for too long) itself.
    """

    kind: str
    detail: str | None = None


STOPPED = DecodeOutcome("stopped")


class DecodeLoop:
    """The decode-thread half of :class:`~.supervisor.VideoSource` (a mixin).

    Reads: ``spec``, ``cfg``, ``want_audio``, ``live``, ``realtime``, ``speed``, ``queue``,
    ``counts``, ``_stop``, ``_gen``, ``_sampler``, ``_count()``, ``recorder`` (an evidence
    :class:`~fusewatch.stream.evidence.segments.SegmentRecorder` or None). Writes: ``info``,
    ``wall_anchor``, ``_pts_offset``, ``_last_pts``, ``_conn_frames``, ``_progress``, ``_pace_t0``,
    ``_results``, ``_conn_ref`` (container time of the connection's first frame).
    """

    def _alive(self, gen: int) -> bool:
        return self._gen == gen and not self._stop.is_set()

    def _touch(self) -> None:
        self._progress = time.monotonic()

    def _emit(self, item: Any, gen: int) -> bool:
        return self.queue.put(item, alive=lambda: self._alive(gen), on_wait=self._touch)

    def _pace(self, pts: float, gen: int) -> None:
        if not self.realtime:
            return
        if self._pace_t0 is None:
            self._pace_t0 = time.monotonic() - pts / self.speed
        target = self._pace_t0 + pts / self.speed
        while self._alive(gen):
            left = target - time.monotonic()
            if left <= 0:
                return
            self._touch()
            time.sleep(min(left, 0.1))

    def _wall_of_raw(self, raw: float) -> float | None:
        """Capture wall clock (Unix s) of container time ``raw`` s on the current connection
        (None until its first frame fixed the mapping); used by the evidence recorder."""
        ref, anchor = self._conn_ref, self.wall_anchor
        if ref is None or anchor is None:
            return None
        return anchor + self._pts_offset + (raw - ref)

    def _timestamp_jump(self, step: float) -> None:
        """Count (``counts["timestamp_jumps"]``) and log, the 1st, 10th, 100th … time, a timestamp
        step of ``step`` s the timeline continued across (negative: backwards)."""
        self._count("timestamp_jumps", "timestamp_jumps")
        n = self.counts["timestamp_jumps"]
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            self.log.warning(
                "timestamp jump",
                extra={"fields": {"step_s": round(step, 3), "jumps": n, "note": "timeline continued"}},
            )

    def _resolution_change(self, old: tuple[int, ...], new: tuple[int, ...], index: int) -> None:
        """Count (``counts["resolution_changes"]``) and log a mid-stream frame size change."""
        self._count("resolution_changes", "resolution_changes")
        n = self.counts["resolution_changes"]
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            self.log.warning(
                "frame size changed: partial clip dropped",
                extra={
                    "fields": {"from": f"{old[1]}x{old[0]}", "to": f"{new[1]}x{new[0]}", "frame": index, "changes": n}
                },
            )

    def _late_frame(self, raw: float, behind: float) -> None:
        n = self.counts["decode_errors"]
        if self._late_logged < 3:
            self._late_logged += 1
            self.log.warning(
                "frame out of order after damage dropped",
                extra={"fields": {"container_s": round(raw, 3), "behind_s": round(behind, 3), "decode_errors": n}},
            )

    def _decode_once(self, gen: int) -> None:
        result = DecodeOutcome("eof")
        self._conn_ref = None
        reader: Reader | None = None
        try:
            reader = open_reader(self.spec, self.cfg, self.want_audio)
            self.info.update(
                fps=reader.fps,
                width=reader.width,
                height=reader.height,
                audio_rate=reader.audio_rate,
                backend=reader.backend,
            )
            if not self.info["header_frames"]:
                self.info["header_frames"] = reader.header_frames
            rec = (
                self.recorder.connection(reader, self._wall_of_raw, lambda: self._alive(gen))
                if self.recorder is not None
                else None
            )
            try:
                result = self._decode_loop(reader, gen)
            finally:
                if rec is not None:
                    rec.close()
        except SourceError as e:
            result = DecodeOutcome("error", str(e).split(": ", 1)[-1] if str(e).startswith("source ") else str(e))
        except Exception as e:
            result = DecodeOutcome("error", f"{type(e).__name__}: {e}")
        finally:
            if reader is not None:
                reader.close()
            self._results[gen] = result

    def _decode_loop(self, reader: Reader, gen: int) -> DecodeOutcome:
        fps = reader.fps or self.cfg.sample_fps
        dur = 1.0 / fps
        slot = 1.0 / self.cfg.sample_fps
        ref: float | None = None
        conn_t0 = time.monotonic()
        pending_audio: list[AudioEvent] = []
        held: deque[Frame] = deque()
        audio_end = float("-inf")
        has_audio = reader.audio_rate is not None
        consecutive_errors = 0
        n_conn = 0
        first_error: str | None = None
        errors_since_frame = False
        last_raw: float | None = None  # newest container time of this connection
        damage_raw: float | None = None  # container time of the newest frame when damage was last seen
        skipped: deque[tuple[float, float]] = deque(maxlen=8)  # container times whose frame numbers were skipped
        shape: tuple[int, ...] | None = None  # of the last sampled frame

        def release(all_: bool = False) -> bool:
            while held and (
                all_ or not has_audio or held[0].pts + slot <= audio_end or held[-1].pts - held[0].pts > AUDIO_HOLD_S
            ):
                f = held.popleft()
                self._pace(f.pts, gen)
                if not self._emit(f, gen):
                    return False
            return True

        def audio_item(ev: AudioEvent) -> AudioChunk:
            if ev.raw_pts is None:
                start = audio_end if math.isfinite(audio_end) else self._pts_offset
            else:
                start = self._pts_offset + (ev.raw_pts - ref)
            return AudioChunk(pts=start, samples=ev.samples, rate=ev.rate)

        try:
            for ev in reader:
                if not self._alive(gen):
                    return STOPPED
                if isinstance(ev, DecodeError):
                    consecutive_errors += 1
                    errors_since_frame = True
                    first_error = first_error or ev.message
                    self._count("decode_errors", "decode_errors")
                    if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS:
                        return DecodeOutcome("error", f"{consecutive_errors} consecutive decode errors ({ev.message})")
                    continue
                if isinstance(ev, AudioEvent):
                    if ref is None:
                        pending_audio.append(ev)
                        continue
                    chunk = audio_item(ev)
                    audio_end = chunk.pts + chunk.samples.size / chunk.rate
                    if not self._emit(chunk, gen):
                        return STOPPED
                    if not release():
                        return STOPPED
                    continue
                # a VideoEvent
                consecutive_errors = 0
                raw = ev.raw_pts
                now_mono = time.monotonic()
                if ref is None:
                    ref = raw if raw is not None else 0.0
                    self._conn_ref = ref
                    if self.wall_anchor is None:
                        self.wall_anchor = time.time()
                    for a in pending_audio:
                        if a.raw_pts is not None and a.raw_pts < ref:
                            cut = int(round((ref - a.raw_pts) * a.rate))
                            if cut >= a.samples.size:
                                continue
                            a = AudioEvent(ref, a.samples[cut:], a.rate)
                        chunk = audio_item(a)
                        audio_end = chunk.pts + chunk.samples.size / chunk.rate
                        if not self._emit(chunk, gen):
                            return STOPPED
                    pending_audio.clear()
                if raw is not None:
                    pts = self._pts_offset + (raw - ref)
                elif self.live:
                    pts = self._pts_offset + (now_mono - conn_t0)
                else:
                    pts = self._pts_offset + n_conn * dur
                if errors_since_frame and raw is not None:
                    damage_raw = last_raw if last_raw is not None else raw
                damaged = errors_since_frame or (
                    damage_raw is not None and raw is not None and raw - damage_raw <= DAMAGE_WINDOW_S
                )
                step = None if self._last_pts is None else pts - self._last_pts
                if step is not None and step <= 0:
                    if raw is not None and not self.live and any(lo < raw < hi for lo, hi in skipped):
                        # a frame the damaged decoder gives out of order, from a stretch whose numbers
                        # were skipped (counted missing): placing it would shift every later frame
                        self._count("decode_errors", "decode_errors")
                        first_error = first_error or "frames out of order after damage"
                        damage_raw = last_raw
                        self._late_frame(raw, -step)
                        continue
                    # timestamp discontinuity (wrap, splice, bad PTS): continue the timeline
                    fix = self._last_pts + dur - pts
                    self._pts_offset += fix
                    pts += fix
                    self._timestamp_jump(step)
                elif step is not None and step > max(10.0, JUMP_FRAMES * dur):
                    self._timestamp_jump(step)  # a gap in the recording (or a jump): kept, not frames lost
                elif step is not None and damaged and raw is not None and not self.live:
                    # frames lost to damage: their numbers are skipped, so that later frames keep
                    # their numbers in the file (frame labels, evidence) instead of shifting
                    gap = int(round(step / dur)) - 1
                    if gap > 0:
                        self._count("missing", "frames_missing", gap)
                        skipped.append((raw - step, raw))
                errors_since_frame = False
                if raw is not None:
                    last_raw = raw if last_raw is None else max(last_raw, raw)
                self._last_pts = pts
                index = self.counts["decoded"] + self.counts["missing"]
                self._count("decoded", "frames_decoded")
                n_conn += 1
                self._conn_frames += 1
                self._touch()
                if not self._sampler.keep(pts):
                    continue
                image = ev.convert()
                if shape is not None and image.shape != shape:
                    # a clip never mixes frame sizes (extractors stack or difference its frames):
                    # consumers drop their partial clip, as after a reconnect
                    if not release(all_=True) or not self._emit(Discontinuity(reason="resolution_change"), gen):
                        return STOPPED
                    self._resolution_change(shape, image.shape, index)
                shape = image.shape
                self._count("sampled", "frames_sampled")
                frame = Frame(index=index, pts=pts, wall=self.wall_anchor + pts, image=image, mono=now_mono)
                held.append(frame)
                if not release():
                    return STOPPED
        except SourceError:
            raise
        except Exception as e:
            if not release(all_=True):
                return STOPPED
            return DecodeOutcome("error", f"{type(e).__name__}: {e}")
        if not release(all_=True):
            return STOPPED
        if n_conn == 0:
            return DecodeOutcome("error", first_error or "no frames decoded")
        if not self.live:
            hdr = self.info.get("header_frames") or 0
            if self.counts["decoded"] == n_conn and hdr and hdr - n_conn > max(2, hdr // 100):
                self._count("decode_errors", "decode_errors")
                return DecodeOutcome("eof", f"decoded {n_conn} of {hdr} frames announced by the header (truncated?)")
            if first_error:
                return DecodeOutcome("eof", f"decode errors ({first_error})")
        return DecodeOutcome("eof")
