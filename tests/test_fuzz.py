"""Property-based fuzzing (Hypothesis, derandomized) of the wire schema, the engine service on the
in-process bus and the alert tracker: random and boundary values for every field of every message
kind. Properties: decoding either yields a message inside the documented ranges or raises
SchemaError; the engine stays alive and accounts for every record (scored with a finite score in
[0, 1], warming up a cold camera, dropped as a counted duplicate, or dead-lettered with a known
reason — never ``internal_error``); alert streams stay well-formed; the tracker never accepts a
non-finite input and its state stays consistent."""

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.alerts import AlertTracker, ClipScore
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.serving.service import EngineService
from fusewatch.engines.training.checkpoint import save_checkpoint
from fusewatch.stream.alert_schema import decode_alert
from fusewatch.stream.config import AlertsConfig, load_config
from fusewatch.stream.schema import (
    MAX_CLIP_SECONDS,
    MAX_EPOCH,
    MAX_INDEX,
    MAX_PTS,
    WALL_RANGE,
    Evidence,
    SchemaError,
    decode_dead_letter,
    decode_features,
)
from fusewatch.stream.transport import BusTransport, InProcessBus

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
DIMS = {"a": 12, "b": 5}
REASONS = {
    "not_bytes",
    "too_large",
    "empty",
    "undecodable",
    "not_a_map",
    "missing_version",
    "unsupported_version",
    "wrong_kind",
    "missing_field",
    "bad_field",
    "non_finite",
    "bad_dtype",
    "bad_shape",
    "size_mismatch",
    "duplicate_representation",
    "out_of_range",
    "extractor_mismatch",
    "dim_mismatch",
    "no_known_representation",
    "non_finite_after_cast",
    "invalid_features",
    "key_mismatch",
    "wrong_partition",
    "clip_regression",
    "clip_jump",
    "time_jump",
    "time_regression",
    "epoch_regression",
    "non_finite_score",
}

EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**53 - 1, 2**53, 2**63 - 1, -(2**63), 2**64 - 1]
EDGE_FLOATS = [
    0.0,
    -0.0,
    1.5,
    -1.5,
    1e-300,
    5e-324,
    1e10,
    1e11,
    1.7e9,
    1e300,
    -1e300,
    float("inf"),
    float("-inf"),
    float("nan"),
    3.4e38,
    65504.0,
]
ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-10, 10**6))
floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
anything = st.one_of(ints, floats, st.booleans(), st.none(), st.text(max_size=5), st.binary(max_size=8))


@st.composite
def array_values(draw, n, dtype):
    base = draw(st.sampled_from(["normal", "edge", "big", "zero"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if base == "normal":
        v = rng.normal(size=n) * draw(st.sampled_from([1.0, 1e3, 1e-3]))
    elif base == "zero":
        v = np.zeros(n)
    elif base == "big":
        v = np.full(n, draw(st.sampled_from([1e300, -1e300, 3.4e38, 3.5e38, 65504.0, 7e4, 1e-45, 1e19])))
    else:
        v = np.array([draw(st.sampled_from(EDGE_FLOATS)) for _ in range(n)])
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(v, np.dtype(dtype))


@st.composite
def rep(draw, name=None):
    name = name or draw(st.sampled_from(["a", "b", "c", ""]))
    dtype = draw(st.sampled_from(["<f4", "<f8", "<f2", "<i4", "f4", ">f4"]))
    n = draw(st.sampled_from([DIMS.get(name, 4), 1, 3, 12, 5]))
    npd = np.dtype(dtype if dtype not in ("f4",) else "<f4")
    arr = draw(array_values(n, npd.str))
    d = {"name": name, "dtype": dtype, "shape": [n], "data": arr.tobytes(), "extractor": name, "version": ""}
    if draw(st.integers(0, 9)) == 0:
        k = draw(st.sampled_from(sorted(d)))
        d[k] = draw(anything)
    return d


@st.composite
def feature_map(draw, camera=None, clip=None, t=None, epoch=None):
    """A feature message map: valid-looking by default, with random fields replaced by edge values."""
    camera = camera or draw(st.sampled_from(["c1", "c2", "c3"]))
    clip = draw(ints) if clip is None else clip
    t = draw(floats) if t is None else t
    m = {
        "v": 1,
        "kind": "features",
        "camera": camera,
        "clip": clip,
        "pts_start": t,
        "pts_end": t + 1.5,
        "wall_start": 1.7e9 + t,
        "wall_end": 1.7e9 + t + 1.5,
        "frame_start": 16 * max(clip, 0),
        "frame_end": 16 * max(clip, 0) + 15,
        "produced": 1.7e9,
        "reps": [draw(rep("a")), draw(rep("b"))] if draw(st.integers(0, 3)) else draw(st.lists(rep(), max_size=3)),
    }
    if epoch is not None:
        m["epoch"] = epoch
    elif draw(st.booleans()):
        m["epoch"] = draw(ints)
    for _ in range(draw(st.integers(0, 2))):
        k = draw(st.sampled_from(sorted(m) + ["extra"]))
        if draw(st.integers(0, 4)) == 0:
            m.pop(k, None)
        else:
            m[k] = draw(anything)
    return m


def pack(m):
    try:
        return msgpack.packb(m, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return b"\xc1"  # never used by msgpack: undecodable


@FUZZ
@given(st.one_of(feature_map().map(pack), st.binary(max_size=64)))
def test_schema_decode_is_total_and_enforces_documented_ranges(data):
    try:
        m = decode_features(data)
    except SchemaError as e:
        assert e.reason in REASONS
        return
    assert 0 <= m.clip < MAX_INDEX and 0 <= m.epoch < MAX_EPOCH and 0 <= m.frame_start <= m.frame_end < MAX_INDEX
    assert 0 <= m.pts_start <= m.pts_end <= MAX_PTS and m.pts_end - m.pts_start <= MAX_CLIP_SECONDS
    for x in (m.wall_start, m.wall_end, m.produced):
        assert WALL_RANGE[0] <= x <= WALL_RANGE[1]
    assert m.wall_start <= m.wall_end and m.reps
    for r in m.reps:
        assert np.isfinite(r.array).all() and r.array.dtype.str in ("<f2", "<f4", "<f8")


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "kind",
                "id",
                "type",
                "camera",
                "score",
                "peak",
                "start_clip",
                "end_clip",
                "start_time",
                "end_time",
                "model",
                "evidence",
                "produced",
                "epoch",
                "late",
            ]
        ),
        anything,
        max_size=16,
    )
)
def test_alert_decode_is_total(m):
    m = {"v": 1, "kind": "alert", **m}
    try:
        a = decode_alert(pack(m))
    except SchemaError:
        return
    assert math.isfinite(a.score) and math.isfinite(a.peak) and a.type in ("new", "update", "end")


# -- engine -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    cfg = load_config(overrides={"model.window": "8", "model.representations": "a,b"}, env={})
    p = tmp_path_factory.mktemp("m") / "m.pt"
    save_checkpoint(build_model(cfg.model, DIMS), p)
    return p, load_serving_model(engine_cfg(p))


def engine_cfg(p):
    return load_config(
        env={},
        overrides={
            "engine.model": str(p),
            "engine.backend": "onnxruntime",
            "engine.max_batch": "8",
            "engine.max_cameras": "2",
            "engine.resync_after": "2",
            "engine.max_clip_step": "100",
            "engine.max_time_jump": "100",
            "alerts.thresholds": "config",
            "alerts.on": "0.3",
            "alerts.off": "0.2",
            "alerts.min_duration": "0",
            "alerts.cooldown": "2",
            "alerts.update_interval": "3",
        },
    )


@st.composite
def stream(draw):
    """Records: mostly well-formed clips continuing each camera's stream, mixed with restarts,
    regressions, jumps, wrong keys, edge-valued features and fully random maps."""
    out, state = [], {}
    for _ in range(draw(st.integers(1, 24))):
        cam = draw(st.sampled_from(["c1", "c2", "c3"]))
        clip, t, ep = state.get(cam, (-1, 0.0, 5))
        kind = draw(st.sampled_from(["next"] * 6 + ["restart", "regress", "jump", "random", "badkey", "edge"]))
        if kind == "restart":
            ep, clip, t = draw(st.sampled_from([0, 6, 2**63 - 1])), -1, 0.0
        nxt = {
            "next": clip + 1,
            "restart": 0,
            "regress": max(clip - 1, 0),
            "jump": clip + 10**6,
            "random": clip + 1,
            "badkey": clip + 1,
            "edge": clip + 1,
        }[kind]
        tt = t + 1.6 if kind != "jump" else draw(st.sampled_from([t + 1e5, 9e9]))
        if kind == "random":
            m = draw(feature_map(cam))
        else:
            m = (
                draw(feature_map(cam, nxt, tt, ep))
                if kind == "edge"
                else {
                    "v": 1,
                    "kind": "features",
                    "camera": cam,
                    "clip": nxt,
                    "pts_start": tt,
                    "pts_end": tt + 1.5,
                    "wall_start": 1.7e9 + tt,
                    "wall_end": 1.7e9 + tt + 1.5,
                    "frame_start": 16 * nxt,
                    "frame_end": 16 * nxt + 15,
                    "produced": 1.7e9,
                    "epoch": ep,
                    "reps": [
                        draw(rep("a"))
                        if draw(st.integers(0, 4)) == 0
                        else {
                            "name": "a",
                            "dtype": "<f4",
                            "shape": [12],
                            "extractor": "a",
                            "version": "",
                            "data": np.random.default_rng(nxt).normal(size=12).astype("<f4").tobytes(),
                        },
                        {
                            "name": "b",
                            "dtype": "<f4",
                            "shape": [5],
                            "extractor": "b",
                            "version": "",
                            "data": np.random.default_rng(nxt + 1).normal(size=5).astype("<f4").tobytes(),
                        },
                    ],
                }
            )
        if kind in ("next", "restart", "edge", "jump"):
            state[cam] = (nxt, tt, ep)
        out.append((cam if kind != "badkey" else cam + "x", pack(m)))
    return out


class Sink:
    def __init__(self):
        self.scores, self.alerts = [], []

    def on_score(self, camera, msg, score):
        self.scores.append(score)

    def on_alert(self, a):
        self.alerts.append(a)


@FUZZ
@given(stream())
def test_engine_stays_alive_and_accounts_for_every_record(serving, recs):
    path, model = serving
    bus = InProcessBus(partitions=2)
    prod = BusTransport(bus)
    for key, value in recs:
        prod.produce("fusewatch.features", key, value)
    sink = Sink()
    svc = EngineService(engine_cfg(path), model, BusTransport(bus), sink=sink)
    svc.start()
    for _ in range(200):
        if svc.stats.records >= len(recs):
            break
        svc.step(timeout=0.0)
    st_ = svc.stats
    assert st_.records == len(recs)
    assert st_.scored + st_.warmup + st_.dead_letters + sum(st_.dropped.values()) == st_.records
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in sink.scores) and len(sink.scores) == st_.scored
    r = BusTransport(bus)
    r.subscribe(["fusewatch.deadletter", "fusewatch.alerts"], "check")
    got = r.poll(100000, 0.0)
    reasons = [decode_dead_letter(x.value)["reason"] for x in got if x.topic == "fusewatch.deadletter"]
    assert len(reasons) == st_.dead_letters and set(reasons) <= REASONS, reasons
    alerts = [decode_alert(x.value) for x in got if x.topic == "fusewatch.alerts"]
    assert len(alerts) == st_.alerts == len(sink.alerts)
    open_ = {}
    for a in alerts:  # per camera: new (update)* end, one open at a time
        assert math.isfinite(a.score) and math.isfinite(a.peak) and a.peak >= a.score - 1e-6
        if a.type == "new":
            assert a.camera not in open_
            open_[a.camera] = a.id
        else:
            assert open_.get(a.camera) == a.id
            if a.type == "end":
                del open_[a.camera]
    assert len(svc.cams) <= 2
    for c in svc.cams.values():
        tr = c.tracker
        assert not (tr.open and tr.pending) and not math.isnan(tr.cooldown_until)
        assert (tr.open is not None) == (open_.get(tr.camera) is not None)


# -- alert tracker ------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.tuples(floats, st.one_of(st.sampled_from([0.0, 1.6, -1.0, 1e9, 1e300]), floats)), max_size=40))
def test_tracker_rejects_non_finite_and_keeps_a_consistent_state(steps):
    tr = AlertTracker(
        "c", AlertsConfig(on=0.6, off=0.4, min_duration=1.6, cooldown=5, update_interval=5), "lego", "v", "ort"
    )
    t, clip, open_id, ids = 0.0, 0, None, set()
    for score, dt in steps:
        t2 = t + dt
        c = ClipScore(clip, score, t2, t2 + 1.5, 1.7e9 + t2, 1.7e9 + t2 + 1.5, Evidence("f", 0, clip))
        before = (tr.open, tr.pending, tr.cooldown_until, tr.last)
        if not all(math.isfinite(x) for x in (score, c.pts_start, c.pts_end, c.wall_start, c.wall_end)):
            with pytest.raises(ValueError):
                tr.step(c)
            assert (tr.open, tr.pending, tr.cooldown_until, tr.last) == before
            continue
        out = tr.step(c)
        t, clip = t2, clip + 1
        assert len(out) <= 1 and not (tr.open and tr.pending)
        for m in out:
            assert math.isfinite(m.score) and math.isfinite(m.peak)
            if m.type == "new":
                assert open_id is None and m.id not in ids
                open_id = m.id
                ids.add(m.id)
            else:
                assert m.id == open_id
                if m.type == "end":
                    open_id = None
        assert (tr.open is not None) == (open_id is not None)
