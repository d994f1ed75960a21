"""Issue 10, engine side: one regression test per defect of the adversarial run (in-process bus;
the real-broker ones are in tests/integration/test_hostile_kafka.py)."""

import math
import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest

from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.alerts import AlertTracker, ClipScore
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.serving.service import EngineService
from fusewatch.engines.training.checkpoint import save_checkpoint
from fusewatch.stream.alert_schema import decode_alert
from fusewatch.stream.config import load_config
from fusewatch.stream.schema import Evidence, FeatureMessage, Representation, decode_dead_letter, decode_features
from fusewatch.stream.transport import BusTransport, InProcessBus

DIMS = {"a": 12, "b": 5}
FEAT = "fusewatch.features"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    cfg = load_config(overrides={"model.window": "8", "model.representations": "a,b"}, env={})
    p = tmp_path_factory.mktemp("m") / "m.pt"
    save_checkpoint(build_model(cfg.model, DIMS), p)
    return p


@pytest.fixture(scope="module")
def serving(model_path):
    return load_serving_model(make_cfg(model_path))


def make_cfg(model_path, **over):
    o = {
        "engine.model": str(model_path),
        "engine.backend": "onnxruntime",
        "engine.max_batch": "16",
        "engine.rebuild_history": "16",
        "alerts.thresholds": "config",
        "alerts.on": "0.0",
        "alerts.off": "0.0",
        "alerts.min_duration": "0",
        "alerts.cooldown": "0",
        "alerts.update_interval": "1000",
    }
    o.update({k: str(v) for k, v in over.items()})
    return load_config(overrides=o, env={})


def msg(cam, clip, epoch=0, t0=0.0, a=None, dtype=np.float32, seed=None, at=None, **kw):
    """Clip ``clip`` of ``cam``; capture times and frames as for clip ``at`` (default: ``clip``)."""
    rng = np.random.default_rng(clip if seed is None else seed)
    a = rng.normal(size=12) + 2 if a is None else a
    reps = [Representation("a", np.asarray(a, dtype)), Representation("b", rng.normal(size=5).astype(np.float32))]
    at = clip if at is None else at
    t = t0 + at * 1.6
    f = dict(
        pts_start=t,
        pts_end=t + 1.5,
        wall_start=1.7e9 + t,
        wall_end=1.7e9 + t + 1.5,
        frame_start=16 * at,
        frame_end=16 * at + 15,
    )
    f.update(kw)
    return FeatureMessage(cam, clip, reps=reps, produced=0.0, epoch=epoch, **f)


def put(bus, m, key=None):
    BusTransport(bus).produce(
        FEAT, m.camera if key is None else key, m.encode() if isinstance(m, FeatureMessage) else m
    )


def engine(cfg, bus, serving, sink=None):
    return EngineService(cfg, serving, BusTransport(bus), sink=sink)


def drain(svc):
    svc.run(idle_exit_s=0.2)
    return svc


def read(bus, topic):
    t = BusTransport(bus)
    t.subscribe([topic], f"reader-{time.monotonic_ns()}")
    return t.poll(100000, 0.2)


def dead(bus):
    return [decode_dead_letter(r.value)["reason"] for r in read(bus, "fusewatch.deadletter")]


def alerts(bus):
    return [decode_alert(r.value) for r in read(bus, "fusewatch.alerts")]


def accounted(st):
    return st.scored + st.warmup + st.dead_letters + sum(st.dropped.values())


def test_f8_beyond_float32_is_dead_lettered_and_the_engine_goes_on(model_path, serving):
    """Finding 1: a schema-valid ``<f8`` feature with 1e300 (Inf after the cast) crashed the engine."""
    bus = InProcessBus(partitions=3)
    put(bus, msg("c1", 0, a=np.full(12, 1e300), dtype=np.float64))
    for i in range(1, 6):
        put(bus, msg("c1", i))
    svc = drain(engine(make_cfg(model_path), bus, serving))
    assert dead(bus) == ["non_finite_after_cast"]
    assert svc.stats.scored == 5 and accounted(svc.stats) == svc.stats.records == 6


def test_feature_values_at_float32_edges_never_reach_a_score_as_nan(model_path, serving):
    """Finite float32 values whose squares / projections overflow: the graph code normalises in
    float64 or rejects (invalid_features); scores that are published are finite."""
    bus = InProcessBus(partitions=3)
    edge = np.float32(3.0e38)
    for i, a in enumerate([np.full(12, edge), np.array([edge, -edge] * 6), np.full(12, 1e-45), np.ones(12)]):
        put(bus, msg("c1", i, a=a))
    scores = []

    class Sink:
        def on_score(self, camera, m, s):
            scores.append(s)

        def on_alert(self, a):
            pass

    svc = drain(engine(make_cfg(model_path), bus, serving, sink=Sink()))
    assert accounted(svc.stats) == 4 and all(math.isfinite(s) for s in scores)
    assert all(math.isfinite(a.score) and math.isfinite(a.peak) for a in alerts(bus))
    assert set(dead(bus)) <= {"invalid_features"}


def test_nan_scores_are_dead_lettered_not_alerted(model_path, serving):
    """Finding 1: NaN scores were published in a ``new`` alert. A model that yields NaN for one clip."""
    bus = InProcessBus(partitions=3)
    for i in range(6):
        put(bus, msg("c1", i))
    svc = engine(make_cfg(model_path), bus, serving)
    real = serving.score

    class NanOnClip3:
        def __getattr__(self, k):
            return getattr(serving, k)

        def score(self, snaps):
            out = real(snaps).copy()
            out[[i for i, s in enumerate(snaps) if s[1].sum() == 4]] = np.nan  # the window holding clip 3
            return out

    svc.model = NanOnClip3()
    drain(svc)
    assert dead(bus) == ["non_finite_score"] and svc.stats.scored == 5
    got = alerts(bus)
    assert got and all(math.isfinite(a.score) and math.isfinite(a.peak) for a in got)


def test_absurd_end_timestamp_cannot_push_the_cooldown_forever(model_path, serving):
    """Finding 1: one clip with an absurd end that ended an alert moved the cool-down past every
    later clip. Clips spanning more than max_time_jump are rejected; the camera alerts again."""
    bus = InProcessBus(partitions=3)
    cfg = make_cfg(model_path, **{"alerts.on": "0.0", "alerts.off": "0.0", "alerts.cooldown": "5"})
    put(bus, msg("c1", 0))
    put(bus, msg("c1", 1, pts_end=1.6 + 80000.0))  # within the wire's 1-day limit, not the engine's
    for i in range(2, 12):
        put(bus, msg("c1", i))
    svc = drain(engine(cfg, bus, serving))
    assert dead(bus) == ["time_jump"] and svc.stats.scored == 11


def test_tracker_refuses_non_finite_input_and_keeps_its_state():
    from fusewatch.stream.config import AlertsConfig

    tr = AlertTracker("c", AlertsConfig(on=0.5, off=0.4, min_duration=0, cooldown=0), "lego", "v", "ort")
    ev = Evidence("t", 0, 0)
    assert [m.type for m in tr.step(ClipScore(0, 0.9, 0, 1, 0, 1, ev))] == ["new"]
    with pytest.raises(ValueError):
        tr.step(ClipScore(1, float("nan"), 1, 2, 1, 2, ev))
    assert tr.state == "open" and tr.last.clip == 0
    assert [m.type for m in tr.close()] == ["end"] and tr.state == "idle"


def test_restarted_worker_new_epoch_restarts_the_camera_with_new_alert_ids(model_path, serving):
    """Finding 2: a restarted worker numbering from 0 was ignored until it passed its old count."""
    bus = InProcessBus(partitions=3)
    for i in range(10):
        put(bus, msg("c1", i, epoch=111))
    for i in range(5):
        put(bus, msg("c1", i, epoch=222, t0=100.0))
    svc = drain(engine(make_cfg(model_path), bus, serving))
    st = svc.stats
    assert st.scored == 15 and st.dead_letters == 0 and st.restarts == {"new_epoch": 1}
    got = alerts(bus)
    news = [a for a in got if a.type == "new"]
    assert len(news) == 2 and news[0].id != news[1].id and {a.epoch for a in news} == {111, 222}
    ends = [a for a in got if a.type == "end"]
    assert ends and ends[0].id == news[0].id and ends[0].end_clip == 9  # the old stream's alert is closed


def test_regressions_inside_an_epoch_are_dead_lettered_and_a_huge_index_cannot_blind_a_camera(model_path, serving):
    """Finding 2: one huge clip index blinded a camera for good (also after an engine restart)."""
    bus = InProcessBus(partitions=3)
    cfg = make_cfg(model_path)
    for i in range(5):
        put(bus, msg("c1", i, epoch=7))
    put(bus, msg("c1", 3, epoch=7))  # regression
    put(bus, msg("c1", 4, epoch=7))  # duplicate: dropped, counted
    put(bus, msg("c1", 2**40, epoch=7, at=5))  # jump
    for i in range(5, 9):
        put(bus, msg("c1", i, epoch=7))
    svc = drain(engine(cfg, bus, serving))
    assert dead(bus) == ["clip_regression", "clip_jump"]
    assert svc.stats.dropped == {"duplicate_clip": 1} and svc.stats.scored == 9
    svc.t.close()
    # an engine restart re-reads the log: the huge index is rejected again, the camera keeps scoring
    for i in range(9, 12):
        put(bus, msg("c1", i, epoch=7))
    again = drain(engine(cfg, bus, serving))
    assert again.stats.rebuilt_records > 0 and again.stats.scored == 3 and again.stats.dead_letters == 0


def test_a_huge_first_index_is_outvoted_by_the_real_stream(model_path, serving):
    bus = InProcessBus(partitions=3)
    put(bus, msg("c1", 2**50, epoch=7, at=0))  # cold camera: nothing to compare with, accepted
    for i in range(8):
        put(bus, msg("c1", i, epoch=7))
    svc = drain(engine(make_cfg(model_path, **{"engine.resync_after": 3}), bus, serving))
    assert svc.stats.restarts == {"resync": 1} and svc.stats.dead_letter_reasons == {"clip_regression": 2}
    assert svc.stats.scored == 1 + 6 and svc.cams["c1"].last_clip == 7


def test_legacy_worker_restart_without_epoch(model_path, serving):
    bus = InProcessBus(partitions=3)
    for i in list(range(6)) + list(range(4)):
        put(bus, msg("c1", i))
    svc = drain(engine(make_cfg(model_path), bus, serving))
    assert svc.stats.restarts == {"legacy_restart": 1} and svc.stats.scored == 10


def test_key_camera_mismatch_is_dead_lettered(model_path, serving):
    """Finding 6: a record keyed ``attacker`` carrying camera ``victim`` was accepted."""
    bus = InProcessBus(partitions=3)
    put(bus, msg("victim", 0), key="attacker")
    put(bus, msg("victim", 0))
    svc = drain(engine(make_cfg(model_path), bus, serving))
    assert dead(bus) == ["key_mismatch"] and svc.stats.scored == 1 and "attacker" not in svc.cams


def test_camera_memory_is_bounded_and_evicted_cameras_come_back_cold(model_path, serving):
    """Finding 5: the engine kept every camera id forever."""
    bus = InProcessBus(partitions=3)
    cfg = make_cfg(model_path, **{"engine.max_cameras": 5})
    for c in range(20):
        for i in range(3):
            put(bus, msg(f"cam{c}", i))
    svc = engine(cfg, bus, serving)
    drain(svc)
    cold = svc.stats.cold_starts.get("evicted_lru", 0)  # a camera split over two polls may come back
    assert len(svc.cams) == 5 and svc.stats.evictions == {"lru": 15 + cold}
    rebuilt, warm = svc.stats.rebuilt_records, svc.stats.warmup
    put(bus, msg("cam0", 3))  # evicted, comes back: cold (warms up), no re-read
    drain(svc)
    assert svc.stats.cold_starts.get("evicted_lru") == cold + 1 and svc.stats.warmup == warm + 1
    assert svc.stats.rebuilt_records == rebuilt
    assert accounted(svc.stats) == svc.stats.records == 61


def test_idle_cameras_are_evicted(model_path, serving):
    bus = InProcessBus(partitions=3)
    svc = engine(make_cfg(model_path, **{"engine.camera_idle_s": 0.3}), bus, serving)
    put(bus, msg("c1", 0))
    svc.start()
    while svc.stats.records == 0:
        svc.step()
    assert "c1" in svc.cams
    time.sleep(0.4)
    svc.step()
    assert "c1" not in svc.cams and svc.stats.evictions == {"idle": 1}


def test_any_exception_while_processing_a_record_dead_letters_it(model_path, serving):
    """A bug hit by one record (here: a state that raises for camera 'boom') is internal_error."""
    bus = InProcessBus(partitions=3)
    svc = engine(make_cfg(model_path), bus, serving)
    real = svc._new_camera

    def new_camera(cam):
        c = real(cam)
        if cam == "boom":

            def push(feats):
                raise RuntimeError("injected")

            c.graphs.push = push
        return c

    svc.store.factory = new_camera
    put(bus, msg("boom", 0))
    put(bus, msg("ok", 0))
    put(bus, b"\x91\x01", key="ok")  # valid msgpack, not a map (schema)
    drain(svc)
    assert sorted(dead(bus)) == ["internal_error", "not_a_map"] and svc.stats.scored == 1


def test_late_clips_are_scored_and_their_alerts_flagged(model_path, serving):
    bus = InProcessBus(partitions=3)
    for i in range(3):
        put(bus, msg("c1", i))  # wall clock of 2023: very late
    svc = drain(engine(make_cfg(model_path, **{"engine.late_after_s": 60}), bus, serving))
    assert svc.stats.scored == 3 and svc.stats.late_clips == 3
    assert alerts(bus) and all(a.late for a in alerts(bus))


def test_metrics_healthz_readyz(model_path, serving):
    bus = InProcessBus(partitions=3)
    put(bus, msg("c1", 0))
    put(bus, msg("c1", 0), key="x")
    svc = engine(make_cfg(model_path), bus, serving)
    port = svc.serve_http(port=0, addr="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "/readyz", timeout=5)
        assert e.value.code == 503
        svc.start()
        for _ in range(3):
            svc.step()
        assert urllib.request.urlopen(url + "/readyz", timeout=5).status == 200
        assert urllib.request.urlopen(url + "/healthz", timeout=5).status == 200
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        assert 'fusewatch_engine_dead_letters_total{reason="key_mismatch"} 1.0' in text
        assert "fusewatch_engine_scored_total 1.0" in text and "fusewatch_engine_cameras 1.0" in text
        assert 'backend="onnxruntime"' in text
    finally:
        svc.http.close()


def test_wire_ranges_and_epoch_round_trip():
    m = msg("c1", 3, epoch=2**63 - 1)
    assert decode_features(m.encode()).epoch == 2**63 - 1
    assert decode_features(msg("c1", 3).encode()).epoch == 0
    assert b"epoch" not in msg("c1", 3).encode()  # old messages stay byte-identical
    raw = msgpack.unpackb(m.encode())
    for k, v in [
        ("epoch", 2**63),
        ("epoch", -1),
        ("clip", 2**53),
        ("frame_end", 2**60),
        ("pts_end", 1e11),
        ("wall_start", -5.0),
        ("produced", 1e12),
    ]:
        bad = dict(raw, **{k: v})
        with pytest.raises(Exception) as e:
            decode_features(msgpack.packb(bad, use_bin_type=True))
        assert getattr(e.value, "reason", None) in ("out_of_range", "bad_field"), (k, v)
