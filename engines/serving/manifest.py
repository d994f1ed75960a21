"""Model manifests on the compacted ``topics.models`` topic, and the engine's model watcher.

A manifest is a small JSON record, key = deployment name (``engine.deployment``), value::

    {"kind": "fusewatch.model", "v": 1, "name": "default", "version": "<model_version>",
     "model": "/shared/models/lego-v2.pt", "sha256": "<64 hex>", "published": 1.7e9,
     "rollback": false, "previous": {"version": ..., "model": ..., "sha256": ...} | null}

The topic is compacted (one partition): the broker keeps at least the newest manifest per
deployment, so an engine that starts reads the current model of its deployment, and the
uncompacted tail is an audit trail of publications. ``previous`` makes ``fusewatch models
rollback`` independent of compaction (the rollback manifest is the previous one, with
``rollback = true`` and the current one as its ``previous``).

:class:`ModelWatcher` reads the topic (private consumer group, never committed: every engine reads
every manifest) in a background thread. For each new manifest of its deployment it checks the
file (exists, sha256), loads it (:func:`~fusewatch.engines.serving.runtime.load_serving_model`:
``.pt`` with ``torch.load(weights_only=True)``, ``.onnx`` with validated metadata), checks that
the file's ``model_version`` is the manifest's, and warms it with one scored dummy window. The
result — a ready :class:`ServingModel` or a failure reason — is queued for the engine's main
loop, which stages it (:mod:`~fusewatch.engines.serving.rollout`); the watcher never touches the
engine's state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

import numpy as np

from fusewatch.errors import CheckpointError, FusewatchError, one_line
from fusewatch.stream.transport import Transport, TransportError

log = logging.getLogger("fusewatch.engine")
KIND = "fusewatch.model"
MAX_MANIFEST_BYTES = 64 * 1024


class ManifestError(FusewatchError, ValueError):
    """A model manifest that is not what the contract says."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    model: str
    sha256: str
    published: float = 0.0
    rollback: bool = False
    previous: dict | None = field(default=None, compare=False)

    @property
    def ident(self) -> tuple[str, str]:
        """What identifies the model served: (sha256, version)."""
        return (self.sha256, self.version)

    def path(self) -> Path:
        """Local path of ``model`` (a path or a ``file://`` URL on shared storage)."""
        u = urlparse(self.model)
        if u.scheme == "file":
            return Path(unquote(u.path))
        if u.scheme and len(u.scheme) > 1:
            raise ManifestError(
                f"manifest {self.name!r}: model {self.model!r}: only paths and file:// URLs "
                f"(shared storage) are supported"
            )
        return Path(self.model).expanduser()

    def encode(self) -> bytes:
        return json.dumps(
            {
                "kind": KIND,
                "v": 1,
                "name": self.name,
                "version": self.version,
                "model": self.model,
                "sha256": self.sha256,
                "published": self.published,
                "rollback": self.rollback,
                "previous": self.previous,
            },
            sort_keys=True,
        ).encode()

    def brief(self) -> dict:
        return {"version": self.version, "model": self.model, "sha256": self.sha256}


def _str(d: dict, k: str, limit: int = 4096) -> str:
    v = d.get(k)
    if not isinstance(v, str) or not v or len(v) > limit:
        raise ManifestError(f"manifest: field {k!r} missing or not a non-empty string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"manifest: field {k!r} is not valid Unicode text") from None
    return v


def _sha(v: str) -> str:
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise ManifestError(f"manifest: sha256 {v[:80]!r} is not 64 lowercase hex digits")
    return v


def decode_manifest(value: bytes | None) -> Manifest:
    """Bytes → :class:`Manifest`; raises :class:`ManifestError` (one line) for anything else."""
    if not isinstance(value, (bytes, bytearray)) or not value:
        raise ManifestError("manifest: empty record")
    if len(value) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest: {len(value)} bytes (> {MAX_MANIFEST_BYTES})")
    try:
        d = json.loads(bytes(value).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ManifestError(f"manifest: not JSON ({one_line(e)[:200]})") from None
    if not isinstance(d, dict) or d.get("kind") != KIND or d.get("v") != 1:
        raise ManifestError(f"manifest: not a version-1 {KIND} record")
    prev = d.get("previous")
    if prev is not None:
        if not isinstance(prev, dict):
            raise ManifestError("manifest: field 'previous' is not an object")
        prev = {
            "version": _str(prev, "version", 200),
            "model": _str(prev, "model"),
            "sha256": _sha(_str(prev, "sha256")),
        }
    pub = d.get("published", 0.0)
    if isinstance(pub, bool) or not isinstance(pub, (int, float)) or not -1e11 <= pub <= 1e11:  # NaN fails too
        raise ManifestError("manifest: field 'published' is not a finite number")
    if not isinstance(d.get("rollback", False), bool):
        raise ManifestError("manifest: field 'rollback' is not a boolean")
    return Manifest(
        _str(d, "name", 200),
        _str(d, "version", 200),
        _str(d, "model"),
        _sha(_str(d, "sha256")),
        float(pub),
        bool(d.get("rollback", False)),
        prev,
    )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_file_version(path: str | Path) -> str:
    """``model_version`` stored in a checkpoint (.pt, ``torch.load(weights_only=True)``) or ONNX file."""
    p = Path(path)
    if p.suffix == ".onnx":
        from fusewatch.engines.export.onnx_meta import read_onnx_meta

        try:
            return read_onnx_meta(str(p)).model_version
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - protobuf errors: not an ONNX file
            raise CheckpointError(f"model {p}: not a readable ONNX file ({one_line(e)})") from None
    from fusewatch.extras import require

    require("torch", f"model {p}: reading a torch checkpoint's version")
    from fusewatch.engines.training.checkpoint import read_checkpoint

    return str(read_checkpoint(p)["meta"].get("model_version") or "")


def warm_up(model) -> None:
    """Score one dummy window (one clip of ones per representation) through the real backend;
    raises unless the score is finite and in [0, 1]."""
    st = model.new_state()
    st.push({k: np.ones(int(model.meta.dims[k]), np.float32) for k in model.names})
    s = float(np.asarray(model.score([st.window()]))[0])
    if not (math.isfinite(s) and 0.0 <= s <= 1.0):
        raise CheckpointError(f"warm-up window scored {s} (expected a finite score in [0, 1])")


@dataclass
class Loaded:
    """What the watcher hands to the engine: a warmed model, or why a manifest failed."""

    manifest: Manifest | None
    model: Any = None
    reason: str = ""
    """Failure reason: ``bad_manifest`` | ``not_found`` | ``sha256_mismatch`` | ``version_mismatch`` |
    ``load_error`` | ``warmup_error`` (``incompatible`` is decided by the engine)."""
    detail: str = ""
    seconds: float = 0.0


def load_manifest(cfg, m: Manifest, loader: Callable | None = None) -> Loaded:
    """Check, load and warm the model of ``m`` (never raises)."""
    t0 = time.monotonic()
    try:
        path = m.path()
    except ManifestError as e:
        return Loaded(m, reason="bad_manifest", detail=str(e))
    if not path.is_file():
        return Loaded(m, reason="not_found", detail=f"model {path}: not found")
    try:
        sha = file_sha256(path)
    except OSError as e:
        return Loaded(m, reason="not_found", detail=f"model {path}: {one_line(e)}")
    if sha != m.sha256:
        return Loaded(
            m, reason="sha256_mismatch", detail=f"model {path}: sha256 {sha[:16]}… != manifest {m.sha256[:16]}…"
        )
    if loader is None:
        from fusewatch.engines.serving.runtime import load_serving_model as loader
    try:
        model = loader(cfg, path)
    except Exception as e:  # noqa: BLE001 - any failure keeps the old model
        return Loaded(m, reason="load_error", detail=f"model {path}: {one_line(e)}"[:500])
    if model.meta.model_version != m.version:
        return Loaded(
            m,
            reason="version_mismatch",
            detail=f"model {path}: model_version {model.meta.model_version} != manifest {m.version}",
        )
    try:
        warm_up(model)
    except Exception as e:  # noqa: BLE001
        return Loaded(m, reason="warmup_error", detail=f"model {path}: {one_line(e)}"[:500])
    return Loaded(m, model=model, seconds=time.monotonic() - t0)


class ModelWatcher:
    """Follow the manifests of one deployment on ``cfg.topics.models`` (see the module docstring).

    ``transport``: a consumer of its own (the engine's consumer is in the engine group; this one
    reads the whole topic under a private group and never commits). ``current``: the manifest
    identity already served (``(sha256, version)``), not reloaded. The watcher owns ``transport``
    (closed by :meth:`stop`)."""

    def __init__(
        self,
        cfg,
        transport: Transport,
        deployment: str | None = None,
        current: tuple[str, str] | None = None,
        loader: Callable | None = None,
    ):
        self.cfg, self.t = cfg, transport
        self.name = deployment or cfg.engine.deployment
        self.handled = current
        self.loader = loader
        self.ready: queue.Queue[Loaded] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribed = False

    def _subscribe(self) -> None:
        if not self._subscribed:
            group = f"{self.cfg.engine.group_id}.models.{time.time_ns():x}"
            self.t.subscribe([self.cfg.topics.models], group, from_beginning=True)
            self._subscribed = True

    def _newest(self, recs) -> Manifest | None | Loaded:
        """Newest manifest of our deployment among ``recs`` (a :class:`Loaded` failure for a bad one)."""
        out: Manifest | None | Loaded = None
        for r in recs:
            if (r.key or b"") != self.name.encode():
                continue
            try:
                m = decode_manifest(r.value)
                out = (
                    m
                    if m.name == self.name
                    else Loaded(None, reason="bad_manifest", detail=f"manifest name {m.name!r} under key {self.name!r}")
                )
            except Exception as e:  # noqa: BLE001 - one record never stops the watcher or an engine start
                out = Loaded(
                    None, reason="bad_manifest", detail=f"{r.topic}[{r.partition}]@{r.offset}: {one_line(e)[:300]}"
                )
        return out

    def read_current(self, timeout: float = 30.0) -> Manifest | None:
        """Read the topic to its end offsets (engine start-up) → the newest valid manifest of the
        deployment, or None (none published, or the topic not readable within ``timeout``)."""
        self._subscribe()
        deadline = time.monotonic() + timeout
        latest: Manifest | None = None
        while time.monotonic() < deadline:
            got = self._newest(self.t.poll(1000, 0.2))
            if isinstance(got, Manifest):
                latest = got
            parts = self.t.assignment()
            if parts and all(self.t.position(tp) >= self.t.end_offset(tp) for tp in parts):
                break
        else:
            log.warning("model watcher: %s not read to its end within %.0f s", self.cfg.topics.models, timeout)
        return latest

    def poll_once(self, timeout: float = 0.2) -> None:
        """Poll the topic once; load a new manifest of the deployment (in this thread)."""
        got = self._newest(self.t.poll(1000, timeout))
        if isinstance(got, Loaded):
            self.ready.put(got)
        elif got is not None and got.ident != self.handled:
            self.handled = got.ident  # a manifest is tried once: a failure is not retried in a loop
            log.info(
                "model watcher: %s manifest %s (%s), loading",
                "rollback" if got.rollback else "new",
                got.version,
                got.model,
            )
            self.ready.put(load_manifest(self.cfg, got, self.loader))

    def _run(self) -> None:
        self._subscribe()
        while not self._stop.is_set():
            try:
                self.poll_once(timeout=min(self.cfg.engine.model_poll_s, 1.0))
            except TransportError as e:
                log.warning("model watcher: %s (retrying)", one_line(e))
                self._stop.wait(self.cfg.engine.model_poll_s)
            except Exception:  # noqa: BLE001 - the watcher never dies silently
                log.exception("model watcher: unexpected error (retrying)")
                self._stop.wait(self.cfg.engine.model_poll_s)
            else:
                if self.cfg.engine.model_poll_s > 1.0:
                    self._stop.wait(self.cfg.engine.model_poll_s - 1.0)

    def start(self) -> ModelWatcher:
        self._thread = threading.Thread(target=self._run, name="engine-model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.t.close()  # the watcher owns its transport
        except TransportError as e:
            log.debug("model watcher: close: %s", e)


def build_manifest(name: str, model: str | Path, previous: Manifest | None = None) -> Manifest:
    """A manifest for the model file ``model`` (absolute path; sha256 and ``model_version`` read
    from the file) whose ``previous`` is the current manifest of the deployment (for rollback)."""
    p = Path(model).expanduser().resolve()
    if not p.is_file():
        raise CheckpointError(f"model {p}: not found (publish a file on storage every engine host mounts)")
    version = model_file_version(p)
    if not version:
        raise CheckpointError(f"model {p}: carries no model_version")
    return Manifest(
        name, version, str(p), file_sha256(p), time.time(), False, previous.brief() if previous is not None else None
    )


def rollback_manifest(current: Manifest) -> Manifest:
    """The manifest that rolls ``current`` back to its ``previous`` model."""
    if not current.previous:
        raise ManifestError(
            f"deployment {current.name!r}: the current manifest ({current.version}) has no "
            f"previous model to roll back to"
        )
    p = current.previous
    return Manifest(current.name, p["version"], p["model"], p["sha256"], time.time(), True, current.brief())
