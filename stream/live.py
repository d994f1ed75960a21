"""Live side-channel records for dashboards: per-clip scores and camera thumbnails.

* **Score** (``topics.scores``, key = camera, compact JSON, published by the engine when
  ``engine.publish_scores``): ``{"v":1,"kind":"score","camera","clip","time","score",
  "model_version","frame_start","frame_end"[, "anomaly_map"]}`` — ``time`` is the clip's capture end
  (Unix s), ``anomaly_map`` an optional rows × columns grid in [0, 1].
* **Thumbnail** (``topics.thumbnails``, key = camera, published by workers every
  ``worker.thumbnail_interval_s`` of stream time): ``b"FWT1"`` + 4-byte big-endian header length +
  a JSON header ``{"camera","time","frame","width","height"}`` + the JPEG bytes.

The decoders raise :class:`SchemaError` on anything else: NaN/Infinity, numbers out of range
(``time`` in Unix seconds 0 .. 1e11, ``score`` and map cells in [0, 1], indices 0 .. 2**53), camera
ids of 1..256 characters that encode as UTF-8.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass

import numpy as np

from .schema import MAX_INDEX, WALL_RANGE, SchemaError, checked_text, strict_json

THUMB_MAGIC = b"FWT1"
MAX_CAMERA = 256
"""Longest camera id (characters), as in alert records."""
MAX_TEXT = 256
"""Longest ``model_version`` kept (longer ones are cut)."""
MAX_MAP_CELLS = 65536
"""Most cells of a score record's ``anomaly_map``."""
MAX_THUMB_HEADER = 4096
"""Longest thumbnail JSON header (bytes)."""
MAX_THUMB_SIDE = 65535
"""Largest thumbnail width / height (px; JPEG's limit)."""


def encode_score(
    camera: str,
    clip: int,
    time: float,
    score: float,
    model_version: str = "",
    frame_start: int = 0,
    frame_end: int = 0,
    anomaly_map=None,
) -> bytes:
    d = {
        "v": 1,
        "kind": "score",
        "camera": camera,
        "clip": int(clip),
        "time": round(float(time), 3),
        "score": round(float(score), 5),
        "model_version": model_version,
        "frame_start": int(frame_start),
        "frame_end": int(frame_end),
    }
    if anomaly_map is not None:
        d["anomaly_map"] = [[round(float(x), 4) for x in row] for row in anomaly_map]
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def _text(d: dict, k: str, what: str, max_len: int, min_len: int = 0, default: str | None = None) -> str:
    """``d[k]``: text of ``min_len`` .. ``max_len`` characters that encodes as UTF-8."""
    return checked_text(d.get(k, default), f"{what} field {k!r}", max_len, min_len)


def _value(v, what: str, lo: float, hi: float, integer: bool = False):
    """``v`` as a finite number in ``[lo, hi]`` (an int when ``integer``); big ints never reach float()."""
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)):
        raise SchemaError("bad_field", f"{what} has type {type(v).__name__}")
    if isinstance(v, int) and not -(2**63) <= v < 2**63:
        raise SchemaError("out_of_range", f"{what}: an integer of {v.bit_length()} bits")
    if not (math.isfinite(v) and lo <= v <= hi):
        raise SchemaError(
            "non_finite" if not math.isfinite(v) else "out_of_range", f"{what} = {v!r} not in [{lo}, {hi}]"
        )
    return v


def _number(d: dict, k: str, what: str, lo: float, hi: float, integer: bool = False, default=None):
    return _value(d.get(k, default), f"{what} field {k!r}", lo, hi, integer)


def decode_score(data: bytes) -> dict:
    """Parse and check a score record; raises :class:`SchemaError` on anything else (NaN/Infinity,
    numbers out of range, a malformed ``anomaly_map`` included)."""
    d = strict_json(data, "score record")
    if not isinstance(d, dict) or d.get("kind") != "score" or d.get("v") != 1:
        raise SchemaError("wrong_kind", "not a version-1 score record")
    w = "score record"
    _text(d, "camera", w, MAX_CAMERA, 1)
    d["model_version"] = _text(d, "model_version", w, 1 << 16, default="")[:MAX_TEXT]
    _number(d, "clip", w, 0, MAX_INDEX - 1, integer=True)
    _number(d, "time", w, *WALL_RANGE)
    _number(d, "score", w, 0.0, 1.0)
    for k in ("frame_start", "frame_end"):
        _number(d, k, w, 0, MAX_INDEX - 1, integer=True, default=0)
    amap = d.get("anomaly_map")
    if amap is not None:
        if not isinstance(amap, list) or not amap or not all(isinstance(r, list) and r for r in amap):
            raise SchemaError("bad_field", "score record anomaly_map must be a non-empty list of non-empty rows")
        if len({len(r) for r in amap}) != 1 or len(amap) * len(amap[0]) > MAX_MAP_CELLS:
            raise SchemaError("bad_shape", "score record anomaly_map rows differ in length or are too many")
        for r in amap:
            for x in r:
                _value(x, "score record anomaly_map value", 0.0, 1.0)
    return d


@dataclass
class Thumbnail:
    camera: str
    time: float
    frame: int
    width: int
    height: int
    jpeg: bytes


def encode_thumbnail(
    camera: str, image_rgb: np.ndarray, time: float, frame: int, width: int = 320, quality: int = 75
) -> bytes:
    """Downscale an H×W×3 RGB frame to ``width`` (never up) and wrap the JPEG with its header."""
    import cv2

    h, w = image_rgb.shape[:2]
    if w > width:
        image_rgb = cv2.resize(image_rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SchemaError("encode_failed", "JPEG encoding failed")
    head = json.dumps(
        {
            "camera": camera,
            "time": round(float(time), 3),
            "frame": int(frame),
            "width": int(image_rgb.shape[1]),
            "height": int(image_rgb.shape[0]),
        }
    ).encode()
    return THUMB_MAGIC + struct.pack(">I", len(head)) + head + buf.tobytes()


def decode_thumbnail(data: bytes) -> Thumbnail:
    """Parse and check a thumbnail record; raises :class:`SchemaError` (NaN/Infinity, numbers out of
    range, a header longer than the record or than :data:`MAX_THUMB_HEADER` included)."""
    data = bytes(data)
    if data[:4] != THUMB_MAGIC or len(data) < 8:
        raise SchemaError("wrong_kind", "not a thumbnail record")
    n = struct.unpack(">I", data[4:8])[0]
    if n > MAX_THUMB_HEADER or 8 + n > len(data):
        raise SchemaError("bad_field", f"thumbnail header of {n} bytes (record {len(data)} bytes)")
    h = strict_json(data[8 : 8 + n], "thumbnail header")
    if not isinstance(h, dict):
        raise SchemaError("bad_field", "thumbnail header is not a JSON object")
    w = "thumbnail header"
    return Thumbnail(
        _text(h, "camera", w, MAX_CAMERA, 1),
        float(_number(h, "time", w, *WALL_RANGE)),
        _number(h, "frame", w, 0, MAX_INDEX - 1, integer=True, default=0),
        _number(h, "width", w, 1, MAX_THUMB_SIDE, integer=True),
        _number(h, "height", w, 1, MAX_THUMB_SIDE, integer=True),
        data[8 + n :],
    )


class ThumbnailPublisher:
    """Worker callback on sampled frames: one thumbnail per ``interval`` s of stream time."""

    def __init__(self, transport, topic: str, camera: str, interval: float, width: int):
        self.t, self.topic, self.camera, self.interval, self.width = transport, topic, camera, interval, width
        self.last: float | None = None
        self.published = 0

    def __call__(self, frame) -> None:
        if self.interval <= 0 or self.t is None:
            return
        if self.last is not None and frame.pts - self.last < self.interval:
            return
        self.last = frame.pts
        self.t.produce(
            self.topic, self.camera, encode_thumbnail(self.camera, frame.image, frame.wall, frame.index, self.width)
        )
        self.published += 1
