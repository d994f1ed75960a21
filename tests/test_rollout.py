"""Live model rollout on the in-process bus (issue 13 item 4): manifests on the models topic, a
watcher that loads and warms the new model in the background, per-camera switch at a clip
boundary with warm shadow state, rollback, and bad models that leave the old one serving.

Property asserted for the switch: with the new model staged before camera c's clip s, clips
s .. s+W-2 are scored by the old model with exactly the old model's uninterrupted scores, and
every clip from s+W-1 on (W = window) is scored with exactly the score a fresh engine running the
new model over the whole stream gives it (|Δ| ≤ 1e-5) — the shadow window holds the same W clips.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

pytest.importorskip("torch")

from fusewatch.engines.serving.manifest import (  # noqa: E402
    Manifest,
    ManifestError,
    ModelWatcher,
    build_manifest,
    decode_manifest,
    rollback_manifest,
)
from fusewatch.engines.serving.runtime import load_serving_model  # noqa: E402
from fusewatch.engines.serving.service import EngineService, ScoreSink  # noqa: E402
from fusewatch.stream.alert_schema import decode_alert  # noqa: E402
from fusewatch.stream.config import load_config  # noqa: E402
from fusewatch.stream.schema import FeatureMessage, Representation  # noqa: E402
from fusewatch.stream.transport import BusTransport, InProcessBus  # noqa: E402

DIMS = {"a": 12, "b": 5}
WINDOW = 8
CAMS = ("cam-0", "cam-1", "cam-2")
OVR = {
    "engine.backend": "torch",
    "engine.max_batch": 16,
    "alerts.thresholds": "config",
    "alerts.on": 0.0,
    "alerts.off": 0.0,
    "alerts.min_duration": 0,
    "alerts.cooldown": 0,
    "alerts.update_interval": 3,
    "engine.model_poll_s": 0.05,
}


def save_model(path, seed: int, node_dim: int, dims=DIMS) -> str:
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.training.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    mcfg = load_config(
        overrides={"model.window": WINDOW, "model.representations": ",".join(dims), "model.node_dim": node_dim}, env={}
    )
    save_checkpoint(build_model(mcfg.model, dims), path)
    return str(path)


def messages(start: int, stop: int, cams=CAMS, seed=3) -> list[FeatureMessage]:
    out = []
    for i in range(start, stop):
        for k, c in enumerate(cams):
            rng = np.random.default_rng([seed, i, k])
            ph = np.sin(i / 4.0 + k)
            reps = [
                Representation("a", (rng.normal(size=DIMS["a"]) + 3 * ph).astype(np.float32), "a", "1"),
                Representation("b", (rng.normal(size=DIMS["b"]) * (1 + ph)).astype(np.float32), "b", "1"),
            ]
            t = 1.7e9 + i * 1.6
            out.append(
                FeatureMessage(c, i, i * 1.6, i * 1.6 + 1.5, t, t + 1.5, i * 16, i * 16 + 15, reps, produced=t + 1.5)
            )
    return out


class Scores(ScoreSink):
    def __init__(self):
        self.s: dict = {}
        self.n: dict = {}

    def on_score(self, camera, msg, score):
        self.s[(camera, msg.clip)] = score
        self.n[(camera, msg.clip)] = self.n.get((camera, msg.clip), 0) + 1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("rollout-models")
    return {
        "v1": save_model(d / "v1.pt", 0, 0),
        "v2": save_model(d / "v2.pt", 1, 16),
        "dims7": save_model(d / "dims7.pt", 2, 0, {"a": 7, "b": 5}),
    }


def cfg_for(model: str, **over):
    return load_config(env={}, overrides={**OVR, "engine.model": model, **over})


def reference(model: str, clips: int) -> dict:
    """Scores of a fresh, uninterrupted engine serving ``model`` over clips 0..clips-1."""
    cfg = cfg_for(model)
    bus = InProcessBus(partitions=3)
    p = BusTransport(bus)
    for m in messages(0, clips):
        p.produce(cfg.topics.features, m.camera, m.encode())
    sink = Scores()
    svc = EngineService(cfg, load_serving_model(cfg), BusTransport(bus), sink=sink)
    svc.run(idle_exit_s=0.3)
    return sink.s


def drain(svc, until=None, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    idle = 0
    while time.monotonic() < deadline:
        n = svc.step(timeout=0.05)
        idle = 0 if n else idle + 1
        if (until is None or until()) and idle >= 3:
            return
    raise AssertionError("engine did not settle")


def test_switch_mid_stream_and_rollback(models):
    cfg = cfg_for(models["v1"])
    bus = InProcessBus(partitions=3)
    prod = BusTransport(bus)
    sink = Scores()
    watcher = ModelWatcher(cfg, BusTransport(bus))
    svc = EngineService(cfg, load_serving_model(cfg), BusTransport(bus), sink=sink, watcher=watcher)
    svc.start()
    v1 = svc.model.meta.model_version

    def feed(a, b):
        for m in messages(a, b):
            prod.produce(cfg.topics.features, m.camera, m.encode())
        drain(svc)

    def publish(m):
        prod.produce(cfg.topics.models, m.name, m.encode())

    feed(0, 20)
    m2 = build_manifest("default", models["v2"], build_manifest("default", models["v1"]))
    publish(m2)
    drain(svc, until=lambda: svc.stats.model_loads == 1)
    v2 = svc.stats.model_version
    assert v2 == m2.version != v1
    assert svc.stats.model_switches == 0  # staged; nobody switched before a clip boundary
    feed(20, 40)
    assert svc.stats.model_switches == len(CAMS)
    publish(rollback_manifest(m2))
    drain(svc, until=lambda: svc.stats.model_loads == 2)
    assert svc.stats.model_version == v1
    feed(40, 60)
    watcher.stop()
    assert svc.stats.model_switches == 2 * len(CAMS)
    assert not svc.stats.model_load_failures and svc.stats.dead_letters == 0

    # every clip scored exactly once
    assert sorted(sink.n) == sorted((c, i) for c in CAMS for i in range(60)) and set(sink.n.values()) == {1}
    r1, r2 = reference(models["v1"], 60), reference(models["v2"], 60)
    w = WINDOW
    for c in CAMS:
        for i in range(WINDOW - 1, 60):
            want = r2 if 20 + w - 1 <= i < 40 + w - 1 else r1
            assert sink.s[(c, i)] == pytest.approx(want[(c, i)], abs=1e-5), (c, i)
        assert abs(r1[(c, 30)] - r2[(c, 30)]) > 1e-4  # the two models are told apart

    # alerts: on = off = 0 keeps one alert open per model period; the switch ends it under the old version
    r = BusTransport(bus)
    r.subscribe([cfg.topics.alerts], "reader")
    alerts = [decode_alert(x.value) for x in r.poll(1_000_000, 0.2)]
    for c in CAMS:
        mine = [(a.type, a.end_clip, a.model_version) for a in alerts if a.camera == c]
        assert ("end", 20 + w - 2, v1) in mine and ("new", 20 + w - 1, v2) in mine, mine
        assert ("end", 40 + w - 2, v2) in mine and ("new", 40 + w - 1, v1) in mine, mine
        for typ, end, ver in mine:
            assert ver == (v2 if 20 + w - 1 <= end < 40 + w - 1 else v1), (typ, end, ver)
    text = svc.metrics.registry.get_sample_value
    assert text("fusewatch_engine_model_switches_total") == 2 * len(CAMS)
    assert text("fusewatch_engine_model", {"version": v1}) == 1


def test_bad_models_keep_the_old_one(models, tmp_path):
    cfg = cfg_for(models["v1"])
    bus = InProcessBus(partitions=3)
    prod = BusTransport(bus)
    watcher = ModelWatcher(cfg, BusTransport(bus))
    svc = EngineService(cfg, load_serving_model(cfg), BusTransport(bus), watcher=watcher)
    svc.start()
    v1 = svc.model.meta.model_version
    for m in messages(0, 12):
        prod.produce(cfg.topics.features, m.camera, m.encode())
    drain(svc)
    good = build_manifest("default", models["v2"])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    bad = [
        (Manifest("default", good.version, good.model, "0" * 64), "sha256_mismatch"),
        (Manifest("default", good.version, str(tmp_path / "gone.pt"), good.sha256), "not_found"),
        (Manifest("default", "x", str(junk), hashlib.sha256(junk.read_bytes()).hexdigest()), "load_error"),
        (Manifest("default", "deadbeef", good.model, good.sha256), "version_mismatch"),
        (build_manifest("default", models["dims7"]), "incompatible"),
    ]
    for k, (m, reason) in enumerate(bad):
        prod.produce(cfg.topics.models, "default", m.encode())
        drain(svc, until=lambda: sum(svc.stats.model_load_failures.values()) == k + 1)  # noqa: B023
        assert svc.stats.model_load_failures.get(reason) == 1, svc.stats.model_load_failures
    prod.produce(cfg.topics.models, "default", b"{not json")
    prod.produce(cfg.topics.models, "other-deployment", good.encode())  # not ours: ignored
    drain(svc, until=lambda: svc.stats.model_load_failures.get("bad_manifest") == 1)
    for m in messages(12, 24):
        prod.produce(cfg.topics.features, m.camera, m.encode())
    drain(svc)
    watcher.stop()
    assert svc.stats.model_version == v1 and svc.stats.model_loads == 0 and svc.stats.model_switches == 0
    assert svc.stats.scored == len(CAMS) * 24 and svc.stats.dead_letters == 0  # clip 0 on: every clip scored
    assert (
        svc.metrics.registry.get_sample_value("fusewatch_engine_model_load_failures_total", {"reason": "incompatible"})
        == 1
    )


def test_manifest_contract(models):
    m = build_manifest("default", models["v1"])
    assert decode_manifest(m.encode()) == m
    with pytest.raises(ManifestError, match="no previous model"):
        rollback_manifest(m)
    m2 = build_manifest("default", models["v2"], m)
    back = rollback_manifest(m2)
    assert (back.version, back.model, back.rollback, back.previous["version"]) == (m.version, m.model, True, m2.version)
    for bad, why in (
        (b"", "empty"),
        (b"[]", "not a version-1"),
        (b'{"kind": "fusewatch.model", "v": 1}', "'name'"),
        (m.encode().replace(m.sha256.encode(), b"abc"), "sha256"),
        # hostile records on the models topic (they used to raise RecursionError / OverflowError out
        # of the engine's start-up read)
        (b"[" * 60000, "not JSON"),
        (json.dumps({**json.loads(m.encode()), "published": 10**400}).encode(), "'published'"),
        (json.dumps({**json.loads(m.encode()), "name": "\ud800"}).encode(), "not valid Unicode"),
    ):
        with pytest.raises(ManifestError, match=why):
            decode_manifest(bad)
    with pytest.raises(ManifestError, match="file:// URLs"):
        Manifest("d", "v", "http://host/m.pt", "0" * 64).path()
