"""Live model rollout inside one engine: stage a warmed model, switch each camera at a clip boundary.

A model arrives ready (loaded and warmed by :class:`~fusewatch.engines.serving.manifest.ModelWatcher`
in a background thread, or given to :meth:`Rollout.stage` directly). Staging, on the engine's main
loop between two steps, checks it against the features seen on the topic (representations, dims,
extractor versions; before any clip is seen: against the model served), then makes it the
engine's *target*: new cameras, restarted streams and partition rebuilds use it at once.

Cameras already held switch one by one, each at a clip boundary, with **warm shadow state**: from
staging on, each accepted clip is pushed into the camera's old state (which keeps scoring) *and*
into a fresh state of the new model. When the shadow holds a full window (``window`` clips; or
every clip of the camera), the camera switches before its next clip is scored: that clip and all
later ones are scored by the new model from a window holding exactly the clips a fresh engine
with the new model would hold — so scores after the switch equal those of such an engine. Nothing
is carried over from the old graphs (a new projection / node encoders make them useless); no clip
goes unscored (the old model scores while the shadow fills). The camera's open alert, if any, is
ended at its last clip under the *old* model version (alert ids include the version); alert state
restarts under the new one. Rolling back is the same operation towards the previous model.
"""

from __future__ import annotations

import logging
import time

from fusewatch.engines.serving.manifest import Loaded

log = logging.getLogger("fusewatch.engine")
MAX_OBSERVED = 64


def _version(model) -> str:
    return model.meta.model_version


class Rollout:
    """Engine-side rollout state (one per :class:`~fusewatch.engines.serving.service.EngineService`)."""

    def __init__(self, svc, watcher=None):
        self.svc = svc
        self.watcher = watcher
        self.observed: dict[str, tuple[int, str]] = {}
        """Representation → (dim, extractor version) of the last accepted clip carrying it."""
        self.rolling = False
        self._check_at = 0.0
        self.manifest = None
        """Manifest of the model served to new cameras (None: started from ``--model``)."""

    # -- bookkeeping ------------------------------------------------------------------------------
    def observe(self, msg) -> None:
        for r in msg.reps:
            if r.name in self.observed or len(self.observed) < MAX_OBSERVED:
                self.observed[r.name] = (int(r.array.size), str(r.version or ""))

    def _fail(self, reason: str, detail: str, version: str = "") -> None:
        s = self.svc
        s.stats.model_load_failures[reason] = s.stats.model_load_failures.get(reason, 0) + 1
        s.metrics.model_load_failures.labels(reason).inc()
        log.error(
            "model rollout: %s%s: %s; still serving %s",
            reason,
            f" ({version})" if version else "",
            detail,
            _version(s.model),
        )

    def compatible(self, model) -> str:
        """Why ``model`` cannot score the features on the topic ("" when it can)."""
        names, dims = list(model.meta.representations), dict(model.meta.dims)
        vers = {k: str(v) for k, v in (model.meta.extractor_versions or {}).items() if v}
        seen = dict(self.observed) or {k: (int(d), self.svc.versions.get(k, "")) for k, d in self.svc.dims.items()}
        where = "on the topic" if self.observed else f"of the served model {_version(self.svc.model)}"
        if not any(k in seen for k in names):
            return f"none of its representations {names} among those {where} {sorted(seen)}"
        for k in names:
            if k in seen and seen[k][0] != int(dims[k]):
                return f"representation {k!r}: {seen[k][0]} values {where}, the model expects {dims[k]}"
            if k in seen and vers.get(k) and seen[k][1] and seen[k][1] != vers[k]:
                return f"representation {k!r}: extractor {seen[k][1]} {where}, the model was trained on {vers[k]}"
        return ""

    def _spec(self) -> None:
        """Engine-level representation spec = union over the models in use (target + cameras')."""
        s = self.svc
        models = {id(s.model): s.model}
        for c in s.store.cams.values():
            if c.model is not None:
                models.setdefault(id(c.model), c.model)
        names: list[str] = []
        dims: dict[str, int] = {}
        versions: dict[str, str] = {}
        for m in [s.model] + [m for k, m in models.items() if k != id(s.model)]:
            for k in m.meta.representations:
                if k not in dims:
                    names.append(k)
                    dims[k] = int(m.meta.dims[k])
            versions.update(
                {k: str(v) for k, v in (m.meta.extractor_versions or {}).items() if v and k not in versions}
            )
        s.names, s.dims, s.versions = names, dims, versions
        s.window = max(m.window for m in models.values())

    # -- staging ----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Stage what the watcher loaded (main loop, between steps)."""
        if self.watcher is None:
            return
        while True:
            try:
                got: Loaded = self.watcher.ready.get_nowait()
            except Exception:  # noqa: BLE001 - queue.Empty
                return
            if got.model is None:
                self._fail(got.reason, got.detail, got.manifest.version if got.manifest else "")
            else:
                self.stage(got.model, got.manifest, got.seconds)

    def stage(self, model, manifest=None, load_s: float = 0.0) -> bool:
        """Make ``model`` the target (see the module docstring); False (counted) when incompatible."""
        s = self.svc
        why = self.compatible(model)
        if why:
            self._fail("incompatible", why, _version(model))
            return False
        old = s.model
        s.model, s.meta = model, model.meta
        s.alerts_cfg = s.alerts_for(model.meta)
        s.backend_name = model.scorer.backend
        self.manifest = manifest
        self._spec()
        s.stats.model_version = _version(model)
        s.stats.model_loads += 1
        s.metrics.set_model(_version(model))
        s.metrics.model_loads.inc()
        self.rolling = True
        self._check_at = 0.0
        log.info(
            "model rollout: %s%s staged beside %s (loaded and warmed in %.2f s); cameras switch at a clip "
            "boundary once its window (%d clips) is warm",
            _version(model),
            " (rollback)" if manifest is not None and manifest.rollback else "",
            _version(old),
            load_s,
            model.window,
        )
        self.check()
        return True

    # -- per camera -------------------------------------------------------------------------------
    def advance(self, cam_id: str, cam, feats, items: list) -> None:
        """After ``cam`` accepted a clip (pushed into ``cam.graphs``): feed the shadow state, and
        switch the camera to the target model when its shadow window is warm (appends the old
        tracker's close to ``items``, before the clip's score)."""
        s = self.svc
        target = s.model
        if cam.model is target:
            return
        if cam.model is None or _version(cam.model) == _version(target):  # same weights: nothing to warm
            cam.model, cam.shadow = target, None
            return
        if cam.shadow is None or cam.shadow_model is not target:
            cam.shadow, cam.shadow_model = target.new_state(), target
        try:
            cam.shadow.push(feats)
        except ValueError:  # the new model's projection overflows on this clip: warm up again later
            cam.shadow = cam.shadow_model = None
            return
        if cam.shadow.count < target.window and cam.shadow.count < cam.graphs.count:
            return
        items.append(("close", cam_id, cam.tracker))  # an open alert ends under the old version
        cam.graphs, cam.model, cam.shadow, cam.shadow_model = cam.shadow, target, None, None
        cam.tracker = s._tracker(cam_id)
        cam.exact = cam.exact or cam.graphs.count >= target.window
        s.stats.model_switches += 1
        s.metrics.model_switches.inc()

    def check(self, every_s: float = 1.0) -> None:
        """Count cameras (of partitions assigned here) still on a previous model; log when the
        rollout is complete."""
        if not self.rolling:
            return
        now = time.monotonic()
        if now - self._check_at < every_s:
            return
        self._check_at = now
        s = self.svc
        held = s.t.assignment()  # cameras of partitions revoked from this engine are not waited for
        pending = sum(1 for c in s.store.cams.values() if c.model is not s.model and (c.tp is None or c.tp in held))
        s.metrics.model_pending.set(pending)
        if pending == 0:
            self.rolling = False
            self._spec()
            log.info("model rollout: every held camera scores with %s", _version(s.model))
