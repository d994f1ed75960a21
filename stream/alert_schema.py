"""Alert records (wire contract): version 2 is one compact JSON object per record (UTF-8,
``allow_nan=False``, the camera as the key; JSON Schema in ``schemas/alert-v2.json``); version-1
msgpack records are still read. Feature messages and dead letters: :mod:`fusewatch.stream.schema`."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusewatch.errors import SchemaError
from fusewatch.stream.schema import (
    _NUM,
    ALERT_TYPES,
    DEFAULT_MAX_BYTES,
    MAX_EPOCH,
    MAX_INDEX,
    SCHEMA_VERSION,
    WALL_RANGE,
    Evidence,
    _float_range,
    _get,
    _int_range,
    _pack,
    _unpack,
    strict_json,
)

ALERT_SCHEMA_VERSION = 2


ALERT_SCHEMA_FILE = Path(__file__).with_name("schemas") / "alert-v2.json"


MAX_MAP_CELLS = 65536


ALERT_HEADERS = (("content-type", b"application/json"), ("fusewatch-schema", b"alert/2"))


@dataclass
class AlertMessage:
    """An alert event; ``id`` is stable across new/update/end and across re-processing.

    ``start_time``/``end_time`` are Unix seconds (capture wall clock) of the alert window,
    ``start_clip``/``end_clip`` its clip indices; ``score`` is the latest clip score and
    ``peak`` the highest so far. ``epoch``: the camera stream's run epoch (0 when unknown);
    ``anomaly_map``: optional rows × columns grid of per-region scores in [0, 1].
    """

    id: str
    type: str
    camera: str
    score: float
    peak: float
    start_clip: int
    end_clip: int
    start_time: float
    end_time: float
    model_name: str
    model_version: str
    backend: str
    evidence: list[Evidence] = field(default_factory=list)
    produced: float = field(default_factory=time.time)
    epoch: int = 0
    """The feature stream's epoch the alert belongs to (0: not given)."""
    late: bool = False
    """True when the clip that caused this message was older than ``engine.late_after_s`` when
    scored (the engine was behind)."""
    anomaly_map: list[list[float]] | None = None
    v: int = ALERT_SCHEMA_VERSION

    def encode(self) -> bytes:
        return encode_alert(self)

    @property
    def event_key(self) -> str:
        """Deduplication key of this event: ``id:type:end_clip`` (redeliveries share it)."""
        return f"{self.id}:{self.type}:{self.end_clip}"


def alert_record(a: AlertMessage) -> dict[str, Any]:
    """The version-2 record of ``a`` as a dict (what :func:`encode_alert` serialises)."""
    if a.type not in ALERT_TYPES:
        raise SchemaError("bad_alert_type", repr(a.type))
    d = {
        "v": ALERT_SCHEMA_VERSION,
        "kind": "alert",
        "id": a.id,
        "type": a.type,
        "camera": a.camera,
        "epoch": int(a.epoch),
        "score": float(a.score),
        "peak": float(a.peak),
        "start_clip": int(a.start_clip),
        "end_clip": int(a.end_clip),
        "start_time": float(a.start_time),
        "end_time": float(a.end_time),
        "model": {"name": a.model_name, "version": a.model_version, "backend": a.backend},
        "evidence": [{"topic": e.topic, "partition": int(e.partition), "offset": int(e.offset)} for e in a.evidence],
        "produced": float(a.produced),
    }
    if a.late:
        d["late"] = True
    if a.anomaly_map is not None:
        d["anomaly_map"] = [[float(x) for x in row] for row in a.anomaly_map]
    return d


def encode_alert(a: AlertMessage) -> bytes:
    """Version-2 alert record: compact JSON, UTF-8, one object; NaN/Infinity raise ``non_finite``."""
    try:
        return json.dumps(alert_record(a), allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except ValueError as e:
        raise SchemaError("non_finite", str(e)) from None


def encode_alert_v1(a: AlertMessage) -> bytes:
    """The legacy version-1 msgpack alert (still accepted by :func:`decode_alert`)."""
    if a.type not in ALERT_TYPES:
        raise SchemaError("bad_alert_type", repr(a.type))
    extra = {"epoch": int(a.epoch)} if a.epoch else {}
    if a.late:
        extra["late"] = True
    return _pack(
        {
            **extra,
            "v": SCHEMA_VERSION,
            "kind": "alert",
            "id": a.id,
            "type": a.type,
            "camera": a.camera,
            "score": float(a.score),
            "peak": float(a.peak),
            "start_clip": int(a.start_clip),
            "end_clip": int(a.end_clip),
            "start_time": float(a.start_time),
            "end_time": float(a.end_time),
            "model": {"name": a.model_name, "version": a.model_version, "backend": a.backend},
            "evidence": [
                {"topic": e.topic, "partition": int(e.partition), "offset": int(e.offset)} for e in a.evidence
            ],
            "produced": float(a.produced),
        }
    )


def _unpack_json(data: bytes, max_bytes: int) -> dict[str, Any]:
    obj = strict_json(data, max_bytes=max_bytes)
    if not isinstance(obj, dict):
        raise SchemaError("not_a_map", type(obj).__name__)
    v = obj.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise SchemaError("missing_version", "field 'v' missing or not an integer")
    if v != ALERT_SCHEMA_VERSION:
        raise SchemaError("unsupported_version", f"alert version {v}, this build reads 1 and 2")
    return obj


def _anomaly_map(raw: Any) -> list[list[float]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(r, list) and r for r in raw):
        raise SchemaError("bad_field", "anomaly_map must be a non-empty list of non-empty rows")
    if len({len(r) for r in raw}) != 1 or len(raw) * len(raw[0]) > MAX_MAP_CELLS:
        raise SchemaError("bad_shape", "anomaly_map rows differ in length or exceed the cell limit")
    for r in raw:
        for x in r:
            if isinstance(x, bool) or not isinstance(x, _NUM) or not 0.0 <= x <= 1.0:
                raise SchemaError("bad_field", f"anomaly_map value {x!r} not a number in [0, 1]")
    return [[float(x) for x in r] for r in raw]


ALERT_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""What an alert id may be (the engine's are 16 hex digits): ids name files and HTTP headers downstream."""
MAX_TEXT = 256
"""Longest model name / version / backend / evidence topic kept from an alert record."""


def _in_range(v: int, lo: int, hi: int, what: str) -> int:
    if not lo <= v < hi:
        raise SchemaError("out_of_range", f"{what} = {v} outside [{lo}, {hi})")
    return v


def decode_alert(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> AlertMessage:
    """Decode and validate an alert record, version 2 (JSON) or 1 (msgpack); raises :class:`SchemaError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SchemaError("not_bytes", type(data).__name__)
    head = bytes(data[:64]).lstrip()
    obj = _unpack_json(data, max_bytes) if head[:1] == b"{" else _unpack(data, max_bytes)
    if obj.get("kind") != "alert":
        raise SchemaError("wrong_kind", f"expected 'alert', got {obj.get('kind')!r}")
    typ = _get(obj, "type", (str,))
    if typ not in ALERT_TYPES:
        raise SchemaError("bad_alert_type", repr(typ))
    camera = _get(obj, "camera", (str,))
    if not camera or len(camera) > 256:
        raise SchemaError("bad_field", "camera must be 1..256 characters")
    model = _get(obj, "model", (dict,))
    ev = []
    for i, e in enumerate(_get(obj, "evidence", (list,)) if "evidence" in obj or obj["v"] == 1 else []):
        if not isinstance(e, dict):
            raise SchemaError("bad_field", f"evidence[{i}] is not a map")
        ctx = f"evidence[{i}]."
        ev.append(
            Evidence(
                _get(e, "topic", (str,), ctx)[:MAX_TEXT],
                _in_range(_get(e, "partition", (int,), ctx), 0, 2**31, ctx + "partition"),
                _in_range(_get(e, "offset", (int,), ctx), 0, MAX_INDEX, ctx + "offset"),
            )
        )
    aid = _get(obj, "id", (str,))
    if not ALERT_ID.fullmatch(aid) or aid in (".", ".."):
        raise SchemaError("bad_field", f"id must match {ALERT_ID.pattern} (got {aid[:40]!r})")
    start_clip = _int_range(obj, "start_clip", 0, MAX_INDEX)
    end_clip = _int_range(obj, "end_clip", 0, MAX_INDEX)
    start_time = _float_range(obj, "start_time", *WALL_RANGE)
    end_time = _float_range(obj, "end_time", *WALL_RANGE)
    if end_clip < start_clip or end_time < start_time:
        raise SchemaError("bad_field", "alert ends before it starts")
    return AlertMessage(
        id=aid,
        type=typ,
        camera=camera,
        score=_float_range(obj, "score", 0.0, 1.0),
        peak=_float_range(obj, "peak", 0.0, 1.0),
        start_clip=start_clip,
        end_clip=end_clip,
        start_time=start_time,
        end_time=end_time,
        model_name=str(_get(model, "name", (str,), "model."))[:MAX_TEXT],
        model_version=str(_get(model, "version", (str,), "model."))[:MAX_TEXT],
        backend=str(_get(model, "backend", (str,), "model."))[:MAX_TEXT],
        evidence=ev,
        produced=_float_range(obj, "produced", *WALL_RANGE),
        epoch=_int_range(obj, "epoch", 0, MAX_EPOCH, default=0),
        late=obj.get("late") is True,
        anomaly_map=_anomaly_map(obj.get("anomaly_map")),
        v=obj["v"],
    )
