"""Local-motion representations (flow_grid, objects), the training-free local-motion baseline and the
inductive protocol's folds, on generated frames/videos with a known moving object."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from fusewatch.stream.config import Config, FeaturesConfig
from fusewatch.stream.extractors import KNOWN, build_extractor, build_extractors
from fusewatch.stream.extractors import flow_grid as FG
from fusewatch.stream.extractors import objects as OB

H, W = 240, 360  # Ped2's size: 180×120 at the extractors' scale, cells of 20×20 px


def _background(seed: int = 0) -> np.ndarray:
    """Static, smooth-textured RGB background (gives Farnebäck and MOG2 something real to chew on)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(60, 190, size=(H // 8, W // 8, 1)).astype(np.uint8)
    import cv2

    bg = cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    return np.repeat(bg.reshape(H, W, 1), 3, axis=2)


def _scene(n: int, objects: list[dict], noise: float = 2.0, seed: int = 1) -> list[np.ndarray]:
    """``n`` frames of the background with rectangles ``{x, y, w, h, vx, vy, value}`` moving at
    ``(vx, vy)`` px per frame (full resolution), plus mild sensor noise."""
    rng = np.random.default_rng(seed)
    bg = _background().astype(np.float32)
    out = []
    for t in range(n):
        f = bg.copy()
        for o in objects:
            x = int(round(o["x"] + o.get("vx", 0) * t))
            y = int(round(o["y"] + o.get("vy", 0) * t))
            # a textured block so that flow is well defined inside it
            tex = o["value"] + 30 * np.sin(np.arange(o["w"])[None, :] / 2.0) * np.cos(np.arange(o["h"])[:, None] / 3.0)
            f[y : y + o["h"], x : x + o["w"], :] = tex[..., None]
        f += rng.normal(0, noise, f.shape)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


# a fast object in the cell (row 4, col 2) at the 6×9 grid (y 160..200, x 80..120 at full size;
# it moves 8 px/frame right over the clip: x 60 → 180 i.e. cells col 1..4, centred on col 2..3),
# plus a slow walker far away (top left)
FAST = {"x": 60, "y": 164, "w": 24, "h": 30, "vx": 8, "vy": 0, "value": 230}
SLOW = {"x": 260, "y": 30, "w": 10, "h": 24, "vx": 0, "vy": 1, "value": 20}


def test_registered_and_configurable():
    assert "flow_grid" in KNOWN and "objects" in KNOWN
    cfg = Config()
    cfg.features.extractors = ["flow_grid", "objects"]
    cfg.validate()
    exs = build_extractors(cfg)
    assert [e.name for e in exs] == ["flow_grid", "objects"]
    assert exs[0].dim == FG.DIM == 128 and exs[1].dim == OB.DIM == 42
    assert exs[0].version.startswith("flow_grid-1") and exs[1].version.startswith("objects-1")
    assert build_extractor("flow_grid", FeaturesConfig()).width == FG.GRID_FLOW_WIDTH


def test_flow_grid_finds_the_moving_cell():
    fg = FG.FlowGridExtractor()
    frames = _scene(16, [FAST, SLOW])
    t0 = time.perf_counter()
    v = fg.extract(frames)
    ms = (time.perf_counter() - t0) * 1e3
    assert v.shape == (FG.DIM,) and v.dtype == np.float32 and np.isfinite(v).all()
    # the strongest cell is on the fast object's row and path, moving right
    top = v[FG.CELLS_SLICE].reshape(FG.K_CELLS, FG.CELL_DIM)
    row, col = top[0, 3] * FG.GRID_ROWS - 0.5, top[0, 4] * FG.GRID_COLS - 0.5
    assert round(row) in (4, 5), row  # y 164..194 → rows 4 (160..199)
    assert 1 <= round(col) <= 4, col
    assert top[0, 5] > 0.5 and abs(top[0, 6]) < 0.3  # mean direction: +x
    assert top[0, 9 + 0] + top[0, 9 + 7] > 0.5  # orientation bins around 0°
    # sorted by magnitude, and far above the static background
    mags = top[:, 0]
    assert np.all(np.diff(mags) <= 1e-6)
    stats = v[FG.STATS_SLICE]
    assert mags[0] > np.log1p(1.0) and stats[0] < np.log1p(0.2)  # max cell ≥ 1 px vs median < 0.2 px
    # the exposed grid agrees with the vector's grid block and peaks at the same cell
    g = fg.grid(frames)
    assert g.shape == (FG.GRID_ROWS, FG.GRID_COLS)
    np.testing.assert_allclose(np.log1p(g).reshape(-1), v[FG.GRID_SLICE], atol=1e-5)
    r, c = np.unravel_index(int(np.argmax(g)), g.shape)
    assert (r, c) == (round(row), round(col))
    series = fg.cell_series(frames)
    assert series.shape == (15, FG.GRID_ROWS, FG.GRID_COLS)
    # a static clip: nothing moves anywhere
    still = fg.extract(_scene(16, []))
    assert still[0] < np.log1p(0.2) and still[FG.GRID_SLICE].max() < np.log1p(0.2)
    assert ms < 5000


def test_flow_grid_single_frame_is_static():
    v = FG.FlowGridExtractor().extract(_scene(1, [FAST]))
    assert v.shape == (FG.DIM,) and not v.any()


def test_objects_fast_object_stands_out():
    ob = OB.ObjectsExtractor()
    frames = _scene(16, [FAST, SLOW])
    tracks = ob.tracks(frames)
    assert tracks, "no track found"
    fast = tracks[0]
    # 8 px/frame at 360 px → 4 px per step at the 180-px scale; 24×30 px → 12×15 = 180 px²
    assert 3.0 <= fast["speed"] <= 5.0, fast
    assert 100 <= fast["area"] <= 260, fast
    assert 0.6 <= fast["row"] <= 0.85 and fast["aspect"] > 1.0
    assert fast["length"] >= 0.5
    slow = [t for t in tracks if t["row"] < 0.35]
    assert slow and max(t["speed"] for t in slow) < 1.5
    v = ob.extract(frames)
    assert v.shape == (OB.DIM,) and v.dtype == np.float32 and np.isfinite(v).all()
    assert v[1] == pytest.approx(np.log1p(fast["speed"]), rel=1e-5)  # top track's speed first
    ext = v[OB.K_OBJECTS * OB.TRACK_DIM :]
    assert ext[1] >= 2 and ext[2] == pytest.approx(np.log1p(fast["speed"]), rel=1e-5)
    # static scene: no objects, the zero vector apart from nothing
    still = ob.extract(_scene(16, []))
    assert still[: OB.K_OBJECTS * OB.TRACK_DIM].max() == 0 and still[OB.K_OBJECTS * OB.TRACK_DIM + 1] <= 1


def test_extract_pipeline_writes_both(tmp_path):
    """The worker pipeline (``fusewatch extract``) runs both extractors on a real encoded video."""
    av = pytest.importorskip("av")
    vdir = tmp_path / "videos"
    vdir.mkdir()
    frames = _scene(40, [dict(FAST, vx=4), SLOW])
    with av.open(str(vdir / "cam.mp4"), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.bit_rate = 4_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    cfg = Config()
    cfg.features.extractors = ["flow_grid", "objects"]
    cfg.clips.clip_stride = 8
    from fusewatch.stream.extract import extract_videos

    out = extract_videos([vdir], tmp_path / "feats", cfg, progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["representations"]["flow_grid"]["dim"] == FG.DIM
    a = np.load(out / "flow_grid" / "cam.npy")
    b = np.load(out / "objects" / "cam.npy")
    assert a.shape == (4, FG.DIM) and b.shape == (4, OB.DIM)  # (40 − 16) // 8 + 1 overlapping clips
    assert meta["videos"]["cam"]["clip_frames"][1] == [8, 23]
    assert (a[:, 0] > np.log1p(0.8)).all() and (b[:, 1] > 0).all()


# ------------------------------------------------------------------------------------------------
# training-free baseline and the inductive protocol


def test_motion_baseline_scores_the_moving_frames():
    from fusewatch.engines.evaluation import motion_baseline as MB

    still = _scene(14, [])
    moving = _scene(14, [dict(FAST, x=20)], seed=2)
    frames = still + moving
    cells = MB.cell_magnitudes(frames)
    assert cells.shape == (28, FG.GRID_ROWS, FG.GRID_COLS)
    s = MB.frame_scores_from_cells(cells)
    assert s.shape == (28,)
    assert s[19:].min() > 3 * s[:9].max()
    # smoothing: centred and causal moving averages over a cut window
    x = np.arange(10, dtype=float)
    np.testing.assert_allclose(MB.smooth(x, 3), [0.5, 1, 2, 3, 4, 5, 6, 7, 8, 8.5])
    np.testing.assert_allclose(MB.smooth(x, 3, causal=True), [0, 0.5, 1, 2, 3, 4, 5, 6, 7, 8])
    gts = {"a": np.r_[np.zeros(14), np.ones(14)].astype(np.uint8)}
    assert MB.pooled_auc({"a": s}, gts) > 0.99


def _toy_dataset(n_normal=6, n_abnormal=3, T=12, d=5, seed=0):
    from fusewatch.engines.data import ClipRule, FeatureDataset, VideoFeatures

    rng = np.random.default_rng(seed)
    vids = []
    for i in range(n_normal + n_abnormal):
        ab = i >= n_normal
        x = rng.normal(0, 1, (T, d)).astype(np.float32)
        gt = np.zeros(T * 4 + 12, np.uint8)
        if ab:
            x[T // 2 :, 0] += 4.0
            gt[(T // 2) * 4 :] = 1
        vids.append(
            VideoFeatures(
                f"{'test' if ab else 'train'}_{i:02d}", {"m": x}, int(ab), gt, ClipRule(16, 4), n_frames=gt.size
            )
        )
    return FeatureDataset(vids, {"m": d}, "toy", "", {"clip_len": 16, "clip_stride": 4})


def test_loao_folds_and_restride():
    from fusewatch.engines.evaluation.inductive import loao_folds, restride

    ds = _toy_dataset()
    folds = loao_folds(ds.videos)
    assert len(folds) == 3
    held = [n for f in folds for n in f["held"]]
    assert sorted(held) == sorted(v.name for v in ds.videos)  # each video held out once
    for f in folds:
        assert sum(n.startswith("test") for n in f["held"]) == 1
        assert sum(n.startswith("train") for n in f["held"]) == 2
        assert not set(f["held"]) & set(f["train"])
    assert folds == loao_folds(ds.videos)  # fixed folds
    r = restride(ds, 16)
    v0, r0 = ds.videos[0], r.videos[0]
    assert r0.num_clips == 3 and r0.clip_ranges() == [(0, 15), (16, 31), (32, 47)]
    np.testing.assert_array_equal(r0.feats["m"], v0.feats["m"][[0, 4, 8]])


def test_run_fold_never_sees_held_out_labels(tmp_path):
    from fusewatch.engines.evaluation.inductive import Recipe, fold_metrics, frame_scores, loao_folds, run_fold

    ds = _toy_dataset()
    folds = loao_folds(ds.videos)[:1]  # one fold keeps the test fast
    rec = Recipe("toy", ["m"], "lego", stride=4, normalize="zscore", set={"train.epochs": 12, "model.window": 8})
    out = run_fold(ds, folds[0], rec, seed=0, work_dir=tmp_path)
    assert sorted(out) == sorted(folds[0]["held"])
    by = ds.by_name()
    frame = {n: frame_scores(by[n], s) for n, s in out.items()}
    m = fold_metrics(frame, {v.name: v.frame_gt for v in ds.videos}, folds)
    assert m["all"] > 0.7 and len(m["folds"]) == 1 and len(m["within"]) == 1
