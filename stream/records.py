"""Evidence and camera-health records: JSON objects on the alerts topic next to the v2 alerts.

Every record on the alerts topic is one UTF-8 JSON object with ``"v": 2`` and a ``"kind"``:
``"alert"`` (:mod:`.schema`), ``"evidence"`` or ``"health"`` (this module), keyed by camera id.
Readers that only want alerts check ``kind`` first (:func:`record_kind`); ``fusewatch alerts``
shows all three, ``fusewatch notify`` delivers alerts only.

Evidence (one per alert, when its clip and snapshot are written)::

    {"v": 2, "kind": "evidence", "alert_id": "3f2c…", "camera": "c1",
     "clip": {"path": "c1/3f2c….mp4", "url": "/evidence/c1/3f2c….mp4", "bytes": 182233,
              "sha256": "…", "duration": 11.6, "start_time": 1.7e9, "end_time": 1.7e9,
              "codec": "h264", "reencoded": true},
     "snapshot": {"path": "c1/3f2c….jpg", "url": "/evidence/c1/3f2c….jpg", "bytes": 20311,
                  "sha256": "…", "time": 1.7e9, "anomaly_map": false} | null,
     "alert": {"start_time": 1.7e9, "end_time": 1.7e9, "peak": 0.93},
     "produced": 1.7e9}

``path`` is relative to ``evidence.dir`` on the worker host; ``url`` = ``evidence.base_url`` +
``/`` + path (derived from the alert id: the engine never needs to know worker paths). Times are
Unix seconds of capture; ``duration`` is seconds of video in the clip.

Health (one per state change of a camera; ``state`` back to ``"ok"`` is the recovery)::

    {"v": 2, "kind": "health", "camera": "c1", "state": "frozen", "previous": "ok",
     "since": 1.7e9, "detail": "identical frames for 10.0 s", "produced": 1.7e9}

``state`` is one of :data:`HEALTH_STATES`; ``since`` is the capture (or, for ``offline``, system)
time in Unix seconds at which the condition started.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fusewatch.errors import SchemaError
from fusewatch.stream.schema import strict_json

HEALTH_STATES = ("ok", "offline", "frozen", "black", "tamper")
RECORD_HEADERS = {
    "evidence": (("content-type", b"application/json"), ("fusewatch-schema", b"evidence/2")),
    "health": (("content-type", b"application/json"), ("fusewatch-schema", b"health/2")),
}


def _dump(d: dict) -> bytes:
    try:
        return json.dumps(d, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except ValueError as e:
        raise SchemaError("non_finite", str(e)) from None


def record_kind(data: bytes) -> str | None:
    """``kind`` of a JSON record (``"alert"``, ``"evidence"``, ``"health"``, …) or None when the
    payload is not a JSON object (a v1 msgpack alert, garbage): cheap, for routing only."""
    head = bytes(data[:1]) if data else b""
    if head != b"{":
        return None
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    k = obj.get("kind") if isinstance(obj, dict) else None
    return k if isinstance(k, str) else None


def encode_health(
    camera: str, state: str, previous: str, since: float, detail: str = "", produced: float | None = None
) -> bytes:
    """A health record (see the module doc)."""
    if state not in HEALTH_STATES or previous not in HEALTH_STATES:
        raise SchemaError("bad_field", f"health state {state!r}/{previous!r} not in {HEALTH_STATES}")
    return _dump(
        {
            "v": 2,
            "kind": "health",
            "camera": camera,
            "state": state,
            "previous": previous,
            "since": float(since),
            "detail": str(detail)[:500],
            "produced": float(time.time() if produced is None else produced),
        }
    )


def encode_evidence(
    alert_id: str, camera: str, clip: dict, snapshot: dict | None, alert: dict, produced: float | None = None
) -> bytes:
    """An evidence record (see the module doc); ``clip``/``snapshot``/``alert`` as documented."""
    return _dump(
        {
            "v": 2,
            "kind": "evidence",
            "alert_id": alert_id,
            "camera": camera,
            "clip": clip,
            "snapshot": snapshot,
            "alert": alert,
            "produced": float(time.time() if produced is None else produced),
        }
    )


def decode_record(data: bytes, kind: str, max_bytes: int = 1_048_576) -> dict[str, Any]:
    """Parse and check an evidence or health record; raises :class:`SchemaError`."""
    obj = strict_json(data, max_bytes=max_bytes)
    if not isinstance(obj, dict) or obj.get("v") != 2 or obj.get("kind") != kind:
        raise SchemaError("wrong_kind", f"expected a v2 {kind!r} record")
    need = {
        "health": ("camera", "state", "previous", "since", "detail", "produced"),
        "evidence": ("alert_id", "camera", "clip", "snapshot", "alert", "produced"),
    }[kind]
    missing = [k for k in need if k not in obj]
    if missing:
        raise SchemaError("missing_field", ",".join(missing))
    if not isinstance(obj["camera"], str) or not 1 <= len(obj["camera"]) <= 256:
        raise SchemaError("bad_field", "camera must be 1..256 characters")
    if kind == "health" and obj["state"] not in HEALTH_STATES:
        raise SchemaError("bad_field", f"state {obj['state']!r}")
    _check_values(obj)
    return obj


def _check_values(x: Any, depth: int = 0) -> None:
    """Every number of a record fits float64 sanely (|x| < 2**63) and every string is valid Unicode:
    consumers format, store and re-encode these records."""
    if depth > 8:
        raise SchemaError("bad_field", "record nested deeper than 8 levels")
    if isinstance(x, dict):
        for k, v in x.items():
            _check_values(k, depth + 1)
            _check_values(v, depth + 1)
    elif isinstance(x, list):
        for v in x:
            _check_values(v, depth + 1)
    elif isinstance(x, int) and not isinstance(x, bool):
        if not -(2**63) <= x < 2**63:
            raise SchemaError("out_of_range", f"an integer of {x.bit_length()} bits")
    elif isinstance(x, str):
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:
            raise SchemaError("bad_field", "text that is not valid Unicode (lone surrogate)") from None
