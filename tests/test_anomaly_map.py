"""Anomaly maps (where in the frame): from the motion grids of generated frames with a known moving
object, through the engine into alert and score records, and zones that act on them."""

from __future__ import annotations

import numpy as np
import pytest

from fusewatch.engines.serving.anomaly_map import AnomalyMapper, scaled_map
from fusewatch.engines.serving.site import SiteZones, write_zones_file, zone_score
from fusewatch.stream.extractors import flow as FL
from fusewatch.stream.extractors import flow_grid as FG
from fusewatch.stream.live import decode_score
from fusewatch.stream.schema import FeatureMessage, Representation
from fusewatch.stream.transport import BusTransport, InProcessBus
from tests.test_engine_service import alerts_on, make_cfg, run_engine
from tests.test_local_motion import FAST, SLOW, _scene


def test_maps_point_at_the_moving_object():
    frames = _scene(16, [FAST, SLOW])  # 360×240; the fast block: y 164..194, x 60 → 180
    grid = AnomalyMapper.for_model(["mobilenetv2", "flow_grid", "flow"], None)
    assert grid is not None and (grid.name, grid.rows, grid.cols) == ("flow_grid", 6, 9)
    rel = grid.relative({"flow_grid": FG.FlowGridExtractor().extract(frames)})
    assert rel.shape == (6, 9) and rel.max() == pytest.approx(1.0) and rel.min() >= 0
    r, c = np.unravel_index(int(rel.argmax()), rel.shape)
    assert r in (4, 5) and 1 <= c <= 4, (r, c)  # rows of 40 px, columns of 40 px at full size
    assert rel[:2, 5:].max() < 0.5  # the slow walker (top right) is not where the anomaly is

    coarse = AnomalyMapper.for_model(["mobilenetv2", "flow"], None)
    assert (coarse.name, coarse.rows, coarse.cols) == ("flow", 4, 4)
    rel4 = coarse.relative({"flow": FL.FlowExtractor().extract(frames)})
    r, c = np.unravel_index(int(rel4.argmax()), rel4.shape)
    assert r in (2, 3) and c in (0, 1), (r, c)  # rows of 60 px, columns of 90 px

    m = scaled_map(rel4, 0.8)
    assert np.asarray(m).shape == (4, 4) and max(max(row) for row in m) == pytest.approx(0.8, abs=1e-4)
    assert AnomalyMapper.for_model(["mobilenetv2"], None) is None
    assert coarse.relative({"flow": np.zeros(80, np.float32)}) is None  # absent representation
    flat = coarse.relative({"flow": np.ones(80, np.float32)})  # nothing above normal: no location
    assert np.all(flat == 1.0)


def test_model_statistics_define_normal_motion():
    """With the model's z-score statistics a cell that always moves in training is normal."""
    mean = np.zeros(80, np.float32)
    std = np.full(80, 0.2, np.float32)
    mean[28 + 5] = mean[44 + 5] = 2.0  # cell (1, 1): busy in training (a walkway)
    m = AnomalyMapper.for_model(["flow"], {"flow": (mean, std)})
    x = np.full(80, 0.05, np.float32)
    x[28 + 5] = x[44 + 5] = 2.0  # as busy as usual
    x[28 + 14] = x[44 + 14] = 1.0  # cell (3, 2): moving where nothing moved in training
    r, c = np.unravel_index(int(m.relative({"flow": x}).argmax()), (4, 4))
    assert (r, c) == (3, 2)
    plain = AnomalyMapper.for_model(["flow"], None)  # without statistics the busiest cell wins
    assert np.unravel_index(int(plain.relative({"flow": x}).argmax()), (4, 4)) == (1, 1)


def test_zone_score_and_zones_file(tmp_path):
    amap = [[0.0, 0.0], [0.9, 0.1]]  # bottom-left cell
    left = [[[0, 0], [0.5, 0], [0.5, 1], [0, 1]]]
    right = [[[0.5, 0], [1, 0], [1, 1], [0.5, 1]]]
    assert zone_score(0.9, amap, left) == pytest.approx(0.9)
    assert zone_score(0.9, amap, right) == pytest.approx(0.1)
    assert zone_score(0.9, None, right) == 0.9  # no map: no location, the score passes
    p = tmp_path / "zones.json"
    cfg = make_cfg("unused.pt", **{"alerts.zones_file": str(p)})
    z = SiteZones(cfg, check_every_s=0)
    assert z.for_camera("c1") is None
    write_zones_file(p, "c1", right)
    assert z.for_camera("c1") == right and z.for_camera("c2") is None
    write_zones_file(p, "c1", [])
    assert z.for_camera("c1") is None


DIMS = {"a": 12, "flow": 80}
HOT = (3, 0)  # the flow cell that moves in every published clip: bottom row, left column


@pytest.fixture(scope="module")
def flow_model(tmp_path_factory):
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.training.checkpoint import save_checkpoint
    from fusewatch.stream.config import load_config

    torch.manual_seed(0)
    cfg = load_config(overrides={"model.window": "8", "model.representations": "a,flow"}, env={})
    p = tmp_path_factory.mktemp("m") / "m.pt"
    save_checkpoint(build_model(cfg.model, DIMS), p)
    return p


def _publish(bus, clips=24):
    rng = np.random.default_rng(3)
    t = BusTransport(bus)
    for i in range(clips):
        flow = np.abs(rng.normal(0.05, 0.02, 80)).astype(np.float32)
        k = HOT[0] * 4 + HOT[1]
        flow[28 + k] = flow[44 + k] = 1.5 + 0.1 * np.sin(i)
        reps = [Representation("a", rng.normal(size=12).astype(np.float32)), Representation("flow", flow)]
        msg = FeatureMessage(
            "c1", i, i * 1.6, i * 1.6 + 1.5, 1e9 + i * 1.6, 1e9 + i * 1.6 + 1.5, i * 16, i * 16 + 15, reps, produced=0.0
        )
        t.produce("fusewatch.features", "c1", msg.encode())


def _run(model, tmp_path, **over):
    bus = InProcessBus(partitions=3)
    _publish(bus)
    o = {"alerts.thresholds": "config", "alerts.on": "0.1", "alerts.off": "0.05"}
    run_engine(make_cfg(model, **(o | over)), bus)
    t = BusTransport(bus)
    t.subscribe(["fusewatch.scores"], "s")
    return alerts_on(bus), [decode_score(r.value) for r in t.poll(100000, 0.2)]


def test_engine_alerts_carry_the_peak_map_and_zones_filter(flow_model, tmp_path):
    alerts, scores = _run(flow_model, tmp_path)
    assert alerts and scores
    for a in alerts:
        m = np.asarray(a.anomaly_map)
        assert m.shape == (4, 4)
        assert np.unravel_index(int(m.argmax()), m.shape) == HOT
        assert m.max() == pytest.approx(a.peak, abs=1e-4)  # the peak clip's map
    for s in scores:
        assert np.asarray(s["anomaly_map"]).max() == pytest.approx(s["score"], abs=1e-3)

    away = [[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]]  # right half: the hot cell is left
    zones_file = tmp_path / "zones.json"
    write_zones_file(zones_file, "c1", away)
    alerts_away, scores_away = _run(flow_model, tmp_path, **{"alerts.zones_file": str(zones_file)})
    assert alerts_away == []
    assert max(s["score"] for s in scores_away) < 0.05  # what moves outside the zone scores ~0

    write_zones_file(zones_file, "c1", [[[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]])  # bottom left
    alerts_in, _ = _run(flow_model, tmp_path, **{"alerts.zones_file": str(zones_file)})
    assert [a.id for a in alerts_in] == [a.id for a in alerts]


def test_the_map_is_drawn_over_the_cell_it_names(tmp_path):
    """overlay_map tints red in proportion to each cell's score, at that cell's place; the HTML
    report's thumbnail (``_frame_jpeg``) carries the same overlay through JPEG."""
    import base64

    import av
    import cv2

    from fusewatch.engines.evaluation.report import _frame_jpeg
    from fusewatch.stream.evidence.cut import overlay_map

    amap = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # bottom-right cell hot
    img = np.full((90, 120, 3), 100, np.uint8)
    out = overlay_map(img, amap).astype(int)
    assert out.shape == img.shape
    red_gain = out[..., 0] - out[..., 1]  # 0 where untouched
    assert red_gain[75:, 100:].min() > 100  # the hot cell's centre: red at alpha 0.6
    assert red_gain[:30, :40].max() == 0 and (out[:30, :40] == 100).all()  # far cells untouched
    assert red_gain[60:, 80:].mean() > 5 * max(1e-6, red_gain[:60, :80].mean())

    video = tmp_path / "grey.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for _ in range(5):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 100, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    b64 = _frame_jpeg(video, 2, width=240, anomaly_map=amap)
    assert b64 is not None
    jpg = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert jpg.shape == (180, 240, 3)
    g = jpg.astype(int)[..., 0] - jpg.astype(int)[..., 1]
    assert g[150:, 200:].mean() > 80 and abs(g[:50, :70].mean()) < 8
    plain = _frame_jpeg(video, 2, width=240)
    p = cv2.imdecode(np.frombuffer(base64.b64decode(plain), np.uint8), cv2.IMREAD_COLOR).astype(int)
    assert abs(p[..., 2] - p[..., 1]).max() < 8  # no map: no tint
