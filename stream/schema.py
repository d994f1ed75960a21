"""Wire contract: feature and alert messages (no pickle).

Feature messages (schema version 1) are msgpack maps with ``"v"`` (int version) and ``"kind"``
(``"features"``). Arrays travel as ``{"name", "dtype", "shape", "data"}`` with ``dtype`` one of
``<f2 <f4 <f8`` and ``data`` the C-order little-endian bytes.

Alert records (schema version 2, :data:`ALERT_SCHEMA_VERSION`) are JSON: one UTF-8 object per
record, no NaN/Infinity, described by the JSON Schema ``schemas/alert-v2.json`` (package data,
:data:`ALERT_SCHEMA_FILE`) so that any consumer (a console consumer, kcat, Node-RED, Java) reads
them without fusewatch code. :func:`decode_alert` still reads version-1 msgpack alert records.

:func:`decode_features` / :func:`decode_alert` validate everything (version, kind, field types,
array sizes, dtypes, finite values, total size) and raise :class:`SchemaError` whose ``reason``
is a short machine-readable code and ``str()`` a human sentence — the consumer routes the raw
bytes plus that reason to the dead-letter topic (:func:`dead_letter_payload`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgpack
import numpy as np

SCHEMA_VERSION = 1
"""Kafka record headers of a version-2 alert record (readers need not look at them)."""
DEFAULT_MAX_BYTES = 1_048_576
ALLOWED_DTYPES = ("<f2", "<f4", "<f8")
MAX_DIMS = 3
MAX_REPRESENTATIONS = 16
ALERT_TYPES = ("new", "update", "end")
MAX_INDEX = 2**53
"""Clip and frame indices: 0 <= value < 2**53 (exact in float64 / JSON)."""
MAX_EPOCH = 2**63
"""Stream epoch (per worker run): 0 <= epoch < 2**63; absent = 0 (producers before the field)."""
MAX_PTS = 1e10
"""Stream time (``pts_*``, s since the stream's first frame): 0 <= pts <= 1e10 (~317 years)."""
WALL_RANGE = (0.0, 1e11)
"""Unix seconds (``wall_*``, ``produced``): 0 <= t <= 1e11."""
MAX_CLIP_SECONDS = 86400.0
"""A clip spans at most one day of stream time (``pts_end - pts_start``)."""


from fusewatch.errors import SchemaError  # noqa: E402,F401 - re-exported (reason codes unchanged)


@dataclass
class Representation:
    """One feature vector/array of a clip. ``array`` shape e.g. (D,) float32."""

    name: str
    array: np.ndarray
    extractor: str = ""
    version: str = ""


@dataclass
class FeatureMessage:
    """Features of one clip of one camera.

    Times: ``pts_start``/``pts_end`` are seconds since the stream's first frame (from PTS and the
    stream time base); ``wall_start``/``wall_end`` are Unix seconds (capture wall clock, anchored at
    the first frame). ``frame_start``/``frame_end`` are inclusive decoded-frame indices.
    """

    camera: str
    clip: int
    pts_start: float
    pts_end: float
    wall_start: float
    wall_end: float
    frame_start: int
    frame_end: int
    reps: list[Representation]
    produced: float = field(default_factory=time.time)
    v: int = SCHEMA_VERSION
    epoch: int = 0
    """Identity of the worker run that produced the stream (set once per run; 0 = not given).
    Clip indices are monotonic within one ``(camera, epoch)``."""

    def rep(self, name: str) -> np.ndarray | None:
        for r in self.reps:
            if r.name == name:
                return r.array
        return None

    def encode(self) -> bytes:
        return encode_features(self)


@dataclass
class Evidence:
    """Where the scored clip came from: source topic/partition/offset."""

    topic: str
    partition: int
    offset: int


# ---------------------------------------------------------------------------------------------
def _pack(obj: dict[str, Any]) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _array_to_wire(name: str, arr: np.ndarray, extractor: str, version: str) -> dict[str, Any]:
    a = np.ascontiguousarray(arr)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder not in ("<", "=", "|") else a.dtype
    a = a.astype(dt.newbyteorder("<"), copy=False)
    return {
        "name": name,
        "dtype": a.dtype.str,
        "shape": list(a.shape),
        "data": a.tobytes(),
        "extractor": extractor,
        "version": version,
    }


def encode_features(m: FeatureMessage) -> bytes:
    for r in m.reps:
        if r.array.dtype.str.lstrip("<>=|")[0] != "f":
            raise SchemaError("bad_dtype", f"representation {r.name!r} has dtype {r.array.dtype}")
    extra = {"epoch": int(m.epoch)} if m.epoch else {}  # absent = 0: old messages stay byte-identical
    return _pack(
        {
            **extra,
            "v": m.v,
            "kind": "features",
            "camera": m.camera,
            "clip": int(m.clip),
            "pts_start": float(m.pts_start),
            "pts_end": float(m.pts_end),
            "wall_start": float(m.wall_start),
            "wall_end": float(m.wall_end),
            "frame_start": int(m.frame_start),
            "frame_end": int(m.frame_end),
            "produced": float(m.produced),
            "reps": [_array_to_wire(r.name, r.array, r.extractor, r.version) for r in m.reps],
        }
    )


# ---------------------------------------------------------------------------------------------
def _unpack(data: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise SchemaError("not_bytes", type(data).__name__)
    if len(data) > max_bytes:
        raise SchemaError("too_large", f"{len(data)} bytes > limit {max_bytes}")
    if len(data) == 0:
        raise SchemaError("empty", "zero-length payload")
    try:
        obj = msgpack.unpackb(
            bytes(data),
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bytes,
            max_str_len=65536,
            max_array_len=4096,
            max_map_len=256,
        )
    except Exception as e:  # msgpack raises several types (ExtraData, ValueError, ...)
        raise SchemaError("undecodable", f"{type(e).__name__}: {e}"[:200]) from None
    if not isinstance(obj, dict):
        raise SchemaError("not_a_map", type(obj).__name__)
    v = obj.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise SchemaError("missing_version", "field 'v' missing or not an integer")
    if v != SCHEMA_VERSION:
        raise SchemaError("unsupported_version", f"version {v}, this build reads {SCHEMA_VERSION}")
    return obj


def _get(obj: dict[str, Any], key: str, types: tuple[type, ...], ctx: str = "") -> Any:
    if key not in obj:
        raise SchemaError("missing_field", f"{ctx}{key}")
    val = obj[key]
    if isinstance(val, bool) and bool not in types:
        raise SchemaError("bad_field", f"{ctx}{key} has type bool")
    if not isinstance(val, types):
        raise SchemaError("bad_field", f"{ctx}{key} has type {type(val).__name__}")
    if isinstance(val, float) and not math.isfinite(val):
        raise SchemaError("non_finite", f"{ctx}{key} is {val}")
    if isinstance(val, int) and not isinstance(val, bool) and not -MAX_EPOCH <= val < MAX_EPOCH:
        raise SchemaError("out_of_range", f"{ctx}{key}: an integer of {val.bit_length()} bits")
    if isinstance(val, str) and not _utf8(val):
        raise SchemaError("bad_field", f"{ctx}{key} is not valid Unicode text (lone surrogate)")
    return val


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_json_constant(name: str) -> NoReturn:
    raise SchemaError("non_finite", f"JSON constant {name}")


def strict_json(data: bytes, what: str = "", max_bytes: int | None = None) -> Any:
    """Parse a JSON record from an untrusted topic: UTF-8, no NaN/Infinity, at most ``max_bytes``.
    Every decoding failure (deep nesting included) is a :class:`SchemaError` (``too_large``,
    ``non_finite``, ``undecodable``), never another exception."""
    if max_bytes is not None and len(data) > max_bytes:
        raise SchemaError("too_large", f"{len(data)} bytes > limit {max_bytes}")
    try:
        return json.loads(bytes(data).decode("utf-8"), parse_constant=_no_json_constant)
    except SchemaError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        prefix = f"{what}: " if what else ""
        raise SchemaError("undecodable", f"{prefix}{type(e).__name__}: {e}"[:200]) from None


def checked_text(v: Any, what: str, max_len: int, min_len: int = 0) -> str:
    """``v`` as text of ``min_len`` .. ``max_len`` characters that encodes as UTF-8 (no lone
    surrogates: consumers store, print and re-encode it); :class:`SchemaError` otherwise."""
    if not isinstance(v, str) or not min_len <= len(v) <= max_len:
        raise SchemaError("bad_field", f"{what} must be text of {min_len}..{max_len} characters")
    if not _utf8(v):
        raise SchemaError("bad_field", f"{what} is not valid Unicode text (lone surrogate)")
    return v


_NUM = (int, float)


def _int_range(obj: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    """An int field with ``lo <= value < hi`` (``default`` when absent and allowed)."""
    if default is not None and key not in obj:
        return default
    v: int = _get(obj, key, (int,))
    if not lo <= v < hi:
        raise SchemaError("out_of_range", f"{key} = {v} outside [{lo}, {hi})")
    return v


def _float_range(obj: dict[str, Any], key: str, lo: float, hi: float) -> float:
    """A finite number field with ``lo <= value <= hi``."""
    v = float(_get(obj, key, _NUM))
    if not (math.isfinite(v) and lo <= v <= hi):
        raise SchemaError(
            "out_of_range" if math.isfinite(v) else "non_finite", f"{key} = {v!r} outside [{lo:g}, {hi:g}]"
        )
    return v


def _array_from_wire(d: Any, i: int) -> Representation:
    ctx = f"reps[{i}]."
    if not isinstance(d, dict):
        raise SchemaError("bad_field", f"reps[{i}] is not a map")
    name = _get(d, "name", (str,), ctx)
    dtype = _get(d, "dtype", (str,), ctx)
    shape = _get(d, "shape", (list,), ctx)
    data = _get(d, "data", (bytes,), ctx)
    if dtype not in ALLOWED_DTYPES:
        raise SchemaError("bad_dtype", f"{ctx}dtype {dtype!r} not in {ALLOWED_DTYPES}")
    if not (1 <= len(shape) <= MAX_DIMS) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 20 for s in shape
    ):
        raise SchemaError("bad_shape", f"{ctx}shape {shape!r}")
    n = int(np.prod(shape))
    itemsize = np.dtype(dtype).itemsize
    if n * itemsize != len(data):
        raise SchemaError("size_mismatch", f"{ctx}{name}: shape {shape} × {itemsize} B != {len(data)} B")
    arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    if not np.isfinite(arr).all():
        raise SchemaError("non_finite", f"{ctx}{name} contains NaN/Inf")
    return Representation(
        name=name, array=arr, extractor=str(d.get("extractor", "")), version=str(d.get("version", ""))
    )


def decode_features(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> FeatureMessage:
    """Decode and validate a feature message; raises :class:`SchemaError`."""
    obj = _unpack(data, max_bytes)
    if obj.get("kind") != "features":
        raise SchemaError("wrong_kind", f"expected 'features', got {obj.get('kind')!r}")
    reps_raw = _get(obj, "reps", (list,))
    if not 1 <= len(reps_raw) <= MAX_REPRESENTATIONS:
        raise SchemaError("bad_field", f"reps has {len(reps_raw)} entries (1..{MAX_REPRESENTATIONS})")
    reps = [_array_from_wire(d, i) for i, d in enumerate(reps_raw)]
    names = [r.name for r in reps]
    if len(set(names)) != len(names):
        raise SchemaError("duplicate_representation", ",".join(names))
    camera = _get(obj, "camera", (str,))
    if not camera or len(camera) > 256:
        raise SchemaError("bad_field", "camera must be 1..256 characters")
    clip = _get(obj, "clip", (int,))
    if clip < 0:
        raise SchemaError("bad_field", f"clip index {clip} < 0")
    clip = _int_range(obj, "clip", 0, MAX_INDEX)
    m = FeatureMessage(
        camera=camera,
        clip=clip,
        pts_start=_float_range(obj, "pts_start", 0.0, MAX_PTS),
        pts_end=_float_range(obj, "pts_end", 0.0, MAX_PTS),
        wall_start=_float_range(obj, "wall_start", *WALL_RANGE),
        wall_end=_float_range(obj, "wall_end", *WALL_RANGE),
        frame_start=_int_range(obj, "frame_start", 0, MAX_INDEX),
        frame_end=_int_range(obj, "frame_end", 0, MAX_INDEX),
        produced=_float_range(obj, "produced", *WALL_RANGE),
        reps=reps,
        v=obj["v"],
        epoch=_int_range(obj, "epoch", 0, MAX_EPOCH, default=0),
    )
    if m.pts_end < m.pts_start or m.frame_end < m.frame_start or m.wall_end < m.wall_start:
        raise SchemaError("bad_field", "clip end precedes its start")
    if m.pts_end - m.pts_start > MAX_CLIP_SECONDS or m.wall_end - m.wall_start > MAX_CLIP_SECONDS:
        raise SchemaError("out_of_range", f"clip spans more than {MAX_CLIP_SECONDS:g} s")
    return m


DEAD_LETTER_KEY_BYTES = 1024
"""Most bytes of a rejected record's key a dead letter keeps (in its payload and as its own key)."""


def short_repr(b: bytes | str | None, limit: int = 80) -> str:
    """``repr`` of a possibly hostile key / id, cut to about ``limit`` characters (with its length)."""
    if b is None:
        return "None"
    if len(b) <= limit:
        return repr(b)
    return f"{b[:limit]!r}… ({len(b)} {'bytes' if isinstance(b, bytes) else 'chars'})"


def dead_letter_payload(
    raw: bytes | None,
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    keep_bytes: int = 65536,
    keep_key_bytes: int = DEAD_LETTER_KEY_BYTES,
) -> bytes:
    """Dead-letter record: msgpack map with the reason, origin and (a prefix of) the raw payload and
    of the record key (``key_size`` / ``key_truncated`` say how much of a hostile key was kept), so a
    dead letter stays far below any record size limit whatever the rejected record carried."""
    raw = bytes(raw or b"")
    kb = None if key is None else bytes(key)
    return _pack(
        {
            "v": SCHEMA_VERSION,
            "kind": "dead_letter",
            "reason": reason,
            "detail": detail[:500],
            "topic": topic,
            "partition": int(partition),
            "offset": int(offset),
            "key": None if kb is None else kb[:keep_key_bytes],
            "key_size": 0 if kb is None else len(kb),
            "key_truncated": kb is not None and len(kb) > keep_key_bytes,
            "size": len(raw),
            "payload": raw[:keep_bytes],
            "truncated": len(raw) > keep_bytes,
            "produced": time.time(),
        }
    )


def decode_dead_letter(data: bytes) -> dict[str, Any]:
    """Read a dead-letter record (trusted: produced by fusewatch itself)."""
    out: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return out
