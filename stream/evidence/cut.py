"""Cutting evidence: an MP4 clip (H.264, faststart) from buffered segments, and a JPEG snapshot.

A clip is *copied* (``ffmpeg -f concat … -c copy``: no re-encode) when the source is H.264, no
privacy mask is configured and the whole segments covering the window are at most
``2 × segment_seconds`` longer than the window. Otherwise it is transcoded once with libx264
(``-preset veryfast``, ``evidence.crf``, yuv420p, even size), trimmed to the window exactly, with
every privacy mask box-blurred. Both carry ``-movflags +faststart`` so a browser starts playing
before the download ends. Files are written to ``<name>.tmp`` and renamed (never half a clip).

Privacy masks are rectangles ``"x:y:w:h"`` in fractions of the frame (0..1), e.g.
``"0.7:0:0.3:0.2"`` = the top-right 30 % × 20 %.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fusewatch.errors import FusewatchError

from .segments import Segment

Mask = tuple[float, float, float, float]


class EvidenceError(FusewatchError):
    """A clip or snapshot could not be made (no footage buffered, FFmpeg failed)."""


def parse_mask(text: str) -> Mask:
    """``"x:y:w:h"`` (fractions of width/height; ``:`` because config lists are comma separated)
    → tuple; ValueError when malformed or outside 0..1."""
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) != 4:
        raise ValueError(f"privacy mask {text!r}: expected x:y:w:h (fractions 0..1)")
    x, y, w, h = (float(p) for p in parts)
    if not all(0.0 <= v <= 1.0 for v in (x, y, w, h)) or w <= 0 or h <= 0 or x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
        raise ValueError(f"privacy mask {text!r}: needs 0 <= x, y; w, h > 0; x + w <= 1; y + h <= 1")
    return (x, y, w, h)


def mask_filter(masks: Sequence[Mask]) -> str:
    """FFmpeg filter graph (input ``[0:v]``, output ``[v]``): each mask box-blurred, then the size
    rounded down to even numbers (yuv420p)."""
    chain, cur = [], "0:v"
    for i, (x, y, w, h) in enumerate(masks):
        chain.append(
            f"[{cur}]split=2[b{i}][t{i}];[t{i}]crop=iw*{w}:ih*{h}:iw*{x}:ih*{y},"
            f"boxblur=luma_radius='min(w,h)/4':luma_power=3:chroma_radius='min(cw,ch)/4':"
            f"chroma_power=3[m{i}];[b{i}][m{i}]overlay=W*{x}:H*{y}[o{i}]"
        )
        cur = f"o{i}"
    chain.append(f"[{cur}]scale=trunc(iw/2)*2:trunc(ih/2)*2[v]")
    return ";".join(chain)


@dataclass
class ClipCut:
    """A written clip: capture span ``start`` .. ``end`` (Unix s), ``duration`` s (as muxed),
    ``codec`` (always ``h264``) and whether it was ``reencoded``."""

    start: float
    end: float
    duration: float
    codec: str
    reencoded: bool


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if not exe:
        raise EvidenceError("evidence: the ffmpeg program is not installed (needed to cut clips)")
    return exe


def video_duration(path: Path) -> tuple[float, str]:
    """(duration s, codec name) of the first video stream of ``path`` (PyAV)."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        if v.duration is not None and v.time_base is not None:
            d = float(v.duration * v.time_base)
        else:
            d = (c.duration or 0) / 1e6
        return d, v.codec_context.name


def cut_clip(
    buffer_dir: Path,
    segments: Sequence[Segment],
    start: float,
    end: float,
    out: Path,
    masks: Sequence[Mask] = (),
    segment_seconds: float = 2.0,
    crf: int = 23,
) -> ClipCut:
    """Write ``out`` (MP4) covering capture times ``start`` .. ``end`` (Unix s) from the buffered
    ``segments`` (oldest first). Raises :class:`EvidenceError` when none overlaps the window."""
    segs = [s for s in segments if s.end > start and s.start < end]
    if not segs:
        raise EvidenceError(f"evidence: no buffered footage between {start:.3f} and {end:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    lst = out.with_name(out.name + ".txt")
    lst.write_text("".join(f"file '{(Path(buffer_dir) / s.file).resolve()}'\n" for s in segs))
    tmp = out.with_name(out.name + ".tmp")
    span = segs[-1].end - segs[0].start
    copy = segs[0].codec == "h264" and not masks and span <= (end - start) + 2 * segment_seconds
    cmd = [_ffmpeg(), "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst)]
    if copy:
        c_start, c_end = segs[0].start, segs[-1].end
        cmd += ["-map", "0:v:0", "-c", "copy"]
    else:
        c_start, c_end = max(start, segs[0].start), min(end, segs[-1].end)
        cmd += [
            "-ss",
            f"{c_start - segs[0].start:.3f}",
            "-t",
            f"{c_end - c_start:.3f}",
            "-filter_complex",
            mask_filter(masks),
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            str(crf),
            "-pix_fmt",
            "yuv420p",
        ]
    cmd += ["-an", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise EvidenceError(f"evidence: ffmpeg failed ({p.stderr.strip()[-300:]})")
        duration, codec = video_duration(tmp)
        os.replace(tmp, out)
    finally:
        lst.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return ClipCut(c_start, c_end, duration, codec, not copy)


def blur_masks(img: np.ndarray, masks: Sequence[Mask]) -> np.ndarray:
    """``img`` (H×W×3 uint8) with each mask region strongly blurred (a copy)."""
    import cv2

    out = img.copy()
    h, w = img.shape[:2]
    for x, y, mw, mh in masks:
        x0, y0 = int(x * w), int(y * h)
        x1, y1 = max(x0 + 1, int(round((x + mw) * w))), max(y0 + 1, int(round((y + mh) * h)))
        k = max(3, (min(x1 - x0, y1 - y0) // 2) | 1)
        out[y0:y1, x0:x1] = cv2.blur(out[y0:y1, x0:x1], (k, k))
    return out


def overlay_map(img: np.ndarray, amap: Sequence[Sequence[float]]) -> np.ndarray:
    """``img`` (H×W×3 RGB uint8) with the anomaly map (rows × cols in [0, 1]) drawn over it: each
    cell tinted red in proportion to its score (alpha = 0.6 × score), bilinear upsampling."""
    import cv2

    h, w = img.shape[:2]
    m = cv2.resize(np.asarray(amap, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    m = np.clip(m, 0.0, 1.0)[..., None] * 0.6
    red = np.zeros_like(img, np.float32)
    red[..., 0] = 255.0
    return (img.astype(np.float32) * (1 - m) + red * m).round().astype(np.uint8)


def snapshot(
    clip: Path,
    offset_s: float,
    out: Path,
    masks: Sequence[Mask] = (),
    anomaly_map: Sequence[Sequence[float]] | None = None,
    quality: int = 90,
) -> None:
    """Write ``out`` (JPEG): the frame of ``clip`` nearest ``offset_s`` s from its start, masks
    blurred, the anomaly map (if any) drawn over it."""
    import av
    import cv2

    best, best_d, t0 = None, float("inf"), None
    with av.open(str(clip)) as c:
        v = c.streams.video[0]
        for i, fr in enumerate(c.decode(v)):
            t = float(fr.pts * fr.time_base) if fr.pts is not None else i / float(v.average_rate or 10)
            t0 = t if t0 is None else t0
            t -= t0
            d = abs(t - offset_s)
            if d < best_d:
                best, best_d = fr.to_ndarray(format="rgb24"), d
            elif t > offset_s:
                break
    if best is None:
        raise EvidenceError(f"evidence: {clip} has no frame for a snapshot")
    img = blur_masks(best, masks) if masks else best
    if anomaly_map:
        img = overlay_map(img, anomaly_map)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EvidenceError("evidence: JPEG encoding failed")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, out)
