"""Live side-channel records for dashboards: per-clip scores and camera thumbnails.

* **Score** (``topics.scores``, key = camera, compact JSON, published by the engine when
  ``engine.publish_scores``): ``{"v":1,"kind":"score","camera","clip","time","score",
  "model_version","frame_start","frame_end"[, "anomaly_map"]}`` — ``time`` is the clip's capture end
  (Unix s), ``anomaly_map`` an optional rows × columns grid in [0, 1].
* **Thumbnail** (``topics.thumbnails``, key = camera, published by workers every
  ``worker.thumbnail_interval_s`` of stream time): ``b"FWT1"`` + 4-byte big-endian header length +
  a JSON header ``{"camera","time","frame","width","height"}`` + the JPEG bytes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from .schema import SchemaError

THUMB_MAGIC = b"FWT1"


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


def decode_score(data: bytes) -> dict:
    """Parse a score record; raises :class:`SchemaError` on anything else."""
    try:
        d = json.loads(bytes(data).decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise SchemaError("undecodable", str(e)[:200]) from None
    if not isinstance(d, dict) or d.get("kind") != "score" or d.get("v") != 1:
        raise SchemaError("wrong_kind", "not a version-1 score record")
    for k, t in (("camera", str), ("clip", int), ("time", (int, float)), ("score", (int, float))):
        if not isinstance(d.get(k), t) or isinstance(d.get(k), bool):
            raise SchemaError("bad_field", f"score record field {k!r}")
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
    data = bytes(data)
    if data[:4] != THUMB_MAGIC or len(data) < 8:
        raise SchemaError("wrong_kind", "not a thumbnail record")
    n = struct.unpack(">I", data[4:8])[0]
    try:
        h = json.loads(data[8 : 8 + n].decode())
        return Thumbnail(
            str(h["camera"]), float(h["time"]), int(h.get("frame", 0)), int(h["width"]), int(h["height"]), data[8 + n :]
        )
    except (ValueError, KeyError, TypeError) as e:
        raise SchemaError("bad_field", f"thumbnail header: {e}") from None


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
