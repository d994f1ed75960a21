"""Engine service on the in-process bus: scoring, dead letters, restart = uninterrupted."""

import time

import numpy as np
import pytest

from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.serving.service import EngineService, ScoreSink, effective_alerts
from fusewatch.engines.training.checkpoint import save_checkpoint
from fusewatch.stream.alert_schema import decode_alert
from fusewatch.stream.config import load_config
from fusewatch.stream.schema import FeatureMessage, Representation, decode_dead_letter
from fusewatch.stream.transport import BusTransport, InProcessBus

DIMS = {"a": 12, "b": 5}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    cfg = load_config(overrides={"model.window": "8", "model.representations": "a,b"}, env={})
    m = build_model(cfg.model, DIMS)
    p = tmp_path_factory.mktemp("m") / "m.pt"
    save_checkpoint(m, p)
    return p


def make_cfg(model_path, **over):
    o = {
        "engine.model": str(model_path),
        "engine.backend": "onnxruntime",
        "engine.max_batch": "16",
        "engine.rebuild_history": "16",
        "alerts.min_duration": "0",
        "alerts.cooldown": "0",
        "alerts.update_interval": "3",
    }
    o.update(over)
    return load_config(overrides=o, env={})


def publish(bus, cams=("c1", "c2"), clips=60, seed=1):
    rng = np.random.default_rng(seed)
    t = BusTransport(bus)
    for i in range(clips):
        for c in cams:
            phase = np.sin(i / 5.0 + hash(c) % 7)
            reps = [
                Representation("a", (rng.normal(size=12) + 3 * phase).astype(np.float32)),
                Representation("b", (rng.normal(size=5) * (1 + phase)).astype(np.float32)),
            ]
            t.produce(
                "fusewatch.features",
                c,
                FeatureMessage(
                    c,
                    i,
                    i * 1.6,
                    i * 1.6 + 1.5,
                    1e9 + i * 1.6,
                    1e9 + i * 1.6 + 1.5,
                    i * 16,
                    i * 16 + 15,
                    reps,
                    produced=0.0,
                ).encode(),
            )


class Scores(ScoreSink):
    def __init__(self):
        self.s = {}

    def on_score(self, camera, msg, score):
        self.s[(camera, msg.clip)] = score


def alerts_on(bus):
    t = BusTransport(bus)
    t.subscribe(["fusewatch.alerts"], "reader")
    return [decode_alert(r.value) for r in t.poll(100000, 0.2)]


def run_engine(cfg, bus, max_records=None, sink=None):
    t = BusTransport(bus)
    svc = EngineService(cfg, load_serving_model(cfg), t, sink=sink)
    svc.run(idle_exit_s=0.3, max_records=max_records)
    t.close()
    return svc


def thresholds(model_path):
    bus = InProcessBus(partitions=3)
    publish(bus)
    sink = Scores()
    run_engine(make_cfg(model_path), bus, sink=sink)
    v = np.array(list(sink.s.values()))
    assert len(v) == 120 and np.all((v >= 0) & (v <= 1))
    return float(np.quantile(v, 0.55)), float(np.quantile(v, 0.45))


def test_restart_mid_stream_gives_identical_alerts(model_path):
    on, off = thresholds(model_path)
    cfg = make_cfg(model_path, **{"alerts.on": str(on), "alerts.off": str(off)})
    clean = InProcessBus(partitions=3)
    publish(clean)
    run_engine(cfg, clean)
    ref = {(a.id, a.type, a.end_clip) for a in alerts_on(clean)}
    assert any(t == "new" for _, t, _ in ref) and any(t == "end" for _, t, _ in ref)

    bus = InProcessBus(partitions=3)
    publish(bus)
    first = run_engine(cfg, bus, max_records=50)  # stops mid-stream (committed what it processed)
    assert 0 < first.stats.records < 120
    second = run_engine(cfg, bus)  # same group: rebuilds state from the log
    assert second.stats.rebuilt_records > 0
    got = {(a.id, a.type, a.end_clip) for a in alerts_on(bus)}
    assert got == ref


def test_malformed_messages_go_to_dead_letter_and_engine_keeps_scoring(model_path):
    bus = InProcessBus(partitions=3)
    p = BusTransport(bus)
    p.produce("fusewatch.features", "c1", b"\x00garbage")
    bad_dim = FeatureMessage("c1", 0, 0, 1, 0, 1, 0, 15, [Representation("a", np.ones(3, np.float32))])
    p.produce("fusewatch.features", "c1", bad_dim.encode())
    publish(bus, cams=("c1",), clips=10)
    svc = run_engine(make_cfg(model_path), bus)
    assert svc.stats.dead_letters == 2 and svc.stats.scored == 10
    t = BusTransport(bus)
    t.subscribe(["fusewatch.deadletter"], "dl")
    reasons = sorted(decode_dead_letter(r.value)["reason"] for r in t.poll(100, 0.2))
    assert reasons == ["dim_mismatch", "undecodable"]


def test_liveness_watchdog_exits_for_the_supervisor_when_the_engine_is_stuck():
    """A wedged engine (no completed step for engine.stall_timeout) exits with STALL_EXIT."""
    import subprocess
    import sys

    code = (
        "import threading, time\n"
        "from fusewatch.cli.engine import start_watchdog\n"
        "class Svc:\n"
        "    _stop = threading.Event()\n"
        "    last_progress = time.monotonic()\n"
        "start_watchdog(Svc, 0.4)\n"
        "time.sleep(10)\n"
    )
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    from fusewatch.cli.engine import STALL_EXIT

    assert r.returncode == STALL_EXIT and "no progress" in r.stderr
    assert time.monotonic() - t0 < 9


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_features_from_another_extractor_version_are_dead_lettered(tmp_path, backend):
    """A model trained on features of known extractor versions refuses (dead letter
    ``extractor_mismatch``) messages whose representation comes from another version, scores
    matching ones, and accepts messages that carry no version (other producers)."""
    import torch

    torch.manual_seed(0)
    cfg0 = load_config(overrides={"model.window": "8", "model.representations": "a,b"}, env={})
    p = tmp_path / "m.pt"
    model = build_model(cfg0.model, DIMS)
    th = {"on": 0.71, "off": 0.62}
    save_checkpoint(model, p, {"extractor_versions": {"a": "ext-a-1", "b": "ext-b-1"}, "alert_thresholds": th})
    cfg = make_cfg(p, **{"engine.backend": backend})
    # the same weights were exported before without this metadata (module fixture: same seed and
    # config → same model_version → same cached ONNX): the checkpoint's metadata must still win
    serving = load_serving_model(cfg)
    assert serving.meta["extractor_versions"] == {"a": "ext-a-1", "b": "ext-b-1"}
    assert serving.meta["alert_thresholds"] == th
    assert (effective_alerts(cfg, serving.meta).on, effective_alerts(cfg, serving.meta).off) == (0.71, 0.62)
    if backend == "onnxruntime":  # a standalone export (`fusewatch export`) carries both as well
        from fusewatch.engines.export.onnx import export_onnx, read_onnx_meta
        from fusewatch.engines.training.checkpoint import load_model

        m2, meta2 = load_model(p)
        onnx_meta = read_onnx_meta(export_onnx(m2, meta2, tmp_path / "m.onnx"))
        assert onnx_meta["extractor_versions"] == {"a": "ext-a-1", "b": "ext-b-1"}
        assert onnx_meta["alert_thresholds"] == th
    bus = InProcessBus(partitions=3)
    t = BusTransport(bus)
    rng = np.random.default_rng(0)
    versions = (
        [("ext-a-1", "ext-b-1")] * 4 + [("ext-a-2", "ext-b-1")] * 3 + [("ext-a-1", "ext-b-9")] * 2 + [("", "")] * 2
    )
    for i, (va, vb) in enumerate(versions):
        reps = [
            Representation("a", rng.normal(size=12).astype(np.float32), "a", va),
            Representation("b", rng.normal(size=5).astype(np.float32), "b", vb),
        ]
        t.produce(
            "fusewatch.features", "c1", FeatureMessage("c1", i, i, i + 1, i, i + 1, 16 * i, 16 * i + 15, reps).encode()
        )
    svc = EngineService(cfg, serving, BusTransport(bus))
    svc.run(idle_exit_s=0.3)
    assert svc.stats.scored == 6 and svc.stats.dead_letters == 5
    assert svc.stats.dead_letter_reasons == {"extractor_mismatch": 5}
    r = BusTransport(bus)
    r.subscribe(["fusewatch.deadletter"], "dl")
    details = [decode_dead_letter(x.value)["detail"] for x in r.poll(100, 0.2)]
    assert sum("ext-a-2" in d and "ext-a-1" in d for d in details) == 3
    assert sum("ext-b-9" in d for d in details) == 2
