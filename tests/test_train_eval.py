"""Training (weak supervision), causal scoring, checkpoints, evaluation and their CLI glue."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fusewatch.cli.evaluate import add_commands as add_eval
from fusewatch.cli.train import add_commands as add_train
from fusewatch.engines.data import ClipRule, FeatureDataset, VideoFeatures, load_dataset
from fusewatch.engines.evaluation.evaluate import ScoredVideo, evaluate, evaluate_scores
from fusewatch.engines.evaluation.metrics import roc_auc
from fusewatch.engines.evaluation.scoring import score_video
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.training.checkpoint import load_model, save_checkpoint
from fusewatch.engines.training.loop import train
from fusewatch.engines.training.losses import degree_variance_reg
from fusewatch.engines.training.split import stratified_split
from fusewatch.engines.training.windows import training_windows
from fusewatch.stream.config import Config, ModelConfig
from fusewatch.stream.paths import shared_data  # noqa: E402

UCF = shared_data("ucf_c3d_sample")
CLIP_LEN = 4


def synthetic(n_norm: int = 16, n_abn: int = 16, seed: int = 0) -> FeatureDataset:
    """Two representations; videos from 3 shared scenes (scene ≠ label); abnormal videos have a burst
    of 4..9 clips shifted along a fixed direction in both representations (frame GT = the burst)."""
    rng = np.random.default_rng(seed)
    dims = {"a": 16, "b": 8}
    shift = {r: rng.normal(size=d) for r, d in dims.items()}
    scenes = {r: rng.normal(size=(3, d)) for r, d in dims.items()}
    vids = []
    for i in range(n_norm + n_abn):
        abn = i >= n_norm
        T = int(rng.integers(20, 48))
        span = None
        if abn:
            L = int(rng.integers(4, 10))
            s = int(rng.integers(0, T - L))
            span = (s, s + L)
        sc = int(rng.integers(0, 3))
        feats = {}
        for r, d in dims.items():
            x = scenes[r][sc][None] + 0.5 * rng.normal(size=(T, d))
            if abn:
                x[span[0] : span[1]] += 3.0 * shift[r][None]
            feats[r] = x.astype(np.float32)
        gt = np.zeros(T * CLIP_LEN, np.uint8)
        if abn:
            gt[span[0] * CLIP_LEN : span[1] * CLIP_LEN] = 1
        vids.append(VideoFeatures(f"{'abn' if abn else 'nor'}_{i:02d}", feats, int(abn), gt, ClipRule(CLIP_LEN)))
    return FeatureDataset(vids, dims, "memory", "synthetic")


def small_cfg(epochs: int = 8) -> Config:
    cfg = Config()
    cfg.model.window = 16
    cfg.model.representations = ["a", "b"]
    cfg.train.epochs = epochs
    cfg.train.batch_size = 8
    cfg.train.val_fraction = 0.25
    return cfg


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (3× slower on 2 busy cores); restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data() -> FeatureDataset:
    return synthetic()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("lego") / "lego.pt"
    summary = train(data, small_cfg(), out, progress=False)
    return out, summary


# --------------------------------------------------------------------------------------- training --


def test_lego_training_beats_chance(trained, data):
    out, s = trained
    assert out.exists() and s.fusion == "lego" and s.reg is True and s.val_kind == "frame"
    assert s.train_videos == 24 and s.val_videos == 8
    assert all(np.isfinite(h.loss) and h.reg >= 0 for h in s.history)
    # chance: random scores on the same validation frames
    rng = np.random.default_rng(0)
    _, val = stratified_split(data.videos, 0.25, np.random.default_rng(0))
    y = np.concatenate([v.frame_gt for v in val])
    chance = roc_auc(y, rng.random(y.size))
    assert s.best_val_auc >= 0.9 and s.best_val_auc > chance + 0.1
    # the checkpoint is the best epoch's
    _, meta = load_model(out)
    assert meta["epoch"] == s.best_epoch and meta["val_auc"] == pytest.approx(s.best_val_auc)


def test_baseline_fusion_same_schedule(data, tmp_path):
    s = train(data, small_cfg(epochs=4), tmp_path / "concat.pt", fusion="concat", progress=False)
    assert s.fusion == "concat" and s.reg is False
    assert s.best_val_auc > 0.9
    model, meta = load_model(tmp_path / "concat.pt")
    assert meta["fusion"] == "concat" and model.names == ["a", "b"]


def test_training_is_reproducible(data, tmp_path):
    cfg = small_cfg(epochs=2)
    s1 = train(data, cfg, tmp_path / "a.pt", progress=False)
    s2 = train(data, cfg, tmp_path / "b.pt", progress=False)
    assert [h.loss for h in s1.history] == [h.loss for h in s2.history]
    w1 = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    w2 = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_training_user_errors(data, tmp_path):
    with pytest.raises(ValueError, match="unknown representation"):
        train(data, small_cfg(1), tmp_path / "x.pt", representations=["a", "flow"], progress=False)
    normal_only = FeatureDataset([v for v in data.videos if v.video_label == 0], data.dims)
    with pytest.raises(ValueError, match="all normal"):
        train(normal_only, small_cfg(1), tmp_path / "x.pt", progress=False)
    unlabeled = FeatureDataset([dataclasses.replace(data.videos[0], video_label=-1)] + data.videos[1:], data.dims)
    with pytest.raises(ValueError, match="without a label"):
        train(unlabeled, small_cfg(1), tmp_path / "x.pt", progress=False)
    with pytest.raises(FileNotFoundError):
        train(tmp_path / "missing", small_cfg(1), tmp_path / "x.pt", progress=False)


def test_degree_variance_regulariser():
    n = 6
    uniform = torch.ones(1, n, n)
    mask = torch.ones(1, n)
    hub = torch.zeros(1, n, n)
    hub[0, 0, :] = hub[0, :, 0] = 1.0  # a star: node 0 linked to all, others to node 0 only
    assert degree_variance_reg(hub, mask, 0.5) > 0.08  # degrees 1 and 5 × 0.2: variance 0.0889
    ring = torch.zeros(1, n, n)
    for i in range(n):
        ring[0, i, (i + 1) % n] = ring[0, (i + 1) % n, i] = 1.0
    assert degree_variance_reg(ring, mask, 0.5) < 1e-6  # regular graph: equal degrees
    assert torch.isfinite(degree_variance_reg(uniform, mask, 0.5))
    # padded nodes are ignored; windows with < 2 real nodes do not count
    pad_mask = torch.tensor([[0, 0, 1, 1, 1, 1.0]])
    g = torch.rand(1, n, n, requires_grad=True)
    r = degree_variance_reg(g, pad_mask, 0.5)
    r.backward()
    assert torch.all(g.grad[0, :2] == 0) and torch.all(g.grad[0, :, :2] == 0)
    assert float(degree_variance_reg(torch.rand(1, n, n), torch.tensor([[0, 0, 0, 0, 0, 1.0]]), 0.5)) == 0.0


def test_training_windows_cover_every_clip():
    rng = np.random.default_rng(0)
    assert training_windows(5, 8, rng) == [(0, 5)]
    for T in (9, 16, 17, 31):
        for _ in range(20):
            spans = training_windows(T, 8, rng, max_windows=4)
            covered = np.zeros(T, bool)
            for s, e in spans:
                assert 0 <= s < e <= T and e - s <= 8
                covered[s:e] = True
            assert covered.all()
    spans = training_windows(1000, 8, rng, max_windows=4)  # long video: a random crop of 4·N clips
    assert len(spans) <= 5 and max(e for _, e in spans) - min(s for s, _ in spans) <= 32


def test_stratified_split(data):
    tr, va = stratified_split(data.videos, 0.25, np.random.default_rng(3))
    assert len(va) == 8 and sum(v.video_label for v in va) == 4
    assert not {v.name for v in tr} & {v.name for v in va}


# --------------------------------------------------------------------------------- causal scoring --


@pytest.mark.parametrize("fusion", ["lego", "mtn"])
@pytest.mark.parametrize("T", [5, 23])
def test_score_video_equals_window_by_window(fusion, T):
    torch.manual_seed(0)
    N = 8
    model = build_model(ModelConfig(fusion=fusion, window=N, representations=["a", "b"]), {"a": 6, "b": 3}).eval()
    rng = np.random.default_rng(1)
    feats = {"a": rng.normal(size=(T, 6)).astype(np.float32), "b": rng.normal(size=(T, 3)).astype(np.float32)}
    fast = score_video(model, feats, batch_size=7)
    ref = np.empty(T, np.float32)
    with torch.no_grad():
        for t in range(T):
            lo = max(0, t - N + 1)
            L = t + 1 - lo
            w = {k: torch.zeros(1, N, a.shape[1]) for k, a in feats.items()}
            for k, a in feats.items():
                w[k][0, N - L :] = torch.from_numpy(a[lo : t + 1])
            mask = torch.zeros(1, N)
            mask[0, N - L :] = 1
            ref[t] = model(w, mask, torch.ones(1, 2))[0, -1]
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)
    assert fast.shape == (T,) and np.all((fast >= 0) & (fast <= 1))


def test_checkpoint_reload_weights_only_gives_identical_scores(data, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(window=16, representations=["a", "b"]), data.dims).eval()
    save_checkpoint(model, tmp_path / "m.pt", {"note": "test"})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["representations"] == ["a", "b"]
    loaded, meta = load_model(tmp_path / "m.pt")
    for v in data.videos[:4]:
        np.testing.assert_array_equal(score_video(model, v.feats), score_video(loaded, v.feats))


def test_trained_checkpoint_loads_weights_only(trained):
    out, _ = trained
    raw = torch.load(out, weights_only=True)
    assert raw["meta"]["layout"] == "memory" and raw["config"]["fusion"] == "lego"


# ------------------------------------------------------------------------------------- evaluation --


def test_evaluate_report_json_and_plots(trained, data, tmp_path):
    out, _ = trained
    rep = evaluate(
        out, data, out_json=tmp_path / "r.json", plots_dir=tmp_path / "plots", print_table=False, max_timelines=3
    )
    j = json.loads((tmp_path / "r.json").read_text())
    for k in ("auc", "ap", "ap_kind", "frames", "videos", "per_video"):
        assert k in j
    assert j["ap_kind"] == "sklearn.average_precision_score" and j["auc_kind"] == "frame"
    assert j["frames"] == sum(v.frames() for v in data.videos) and j["videos"] == len(data)
    assert 0.5 < j["auc"] <= 1 and 0 < j["ap"] <= 1
    pv = j["per_video"]["abn_20"]
    assert pv["clips"] == data.by_name()["abn_20"].num_clips and pv["label"] == 1 and pv["auc"] is not None
    assert j["per_video"]["nor_00"]["auc"] is None  # one class only: undefined
    assert (tmp_path / "plots" / "roc.png").stat().st_size > 1000
    assert len(list((tmp_path / "plots" / "timelines").glob("*.png"))) == 3
    assert j["model"]["fusion"] == "lego" and rep["auc"] == j["auc"]


def test_evaluate_precomputed_scores_from_a_stream(data):
    # perfect scores from e.g. the streaming engine: 1 inside the burst, 0 elsewhere
    scored = []
    for v in data.videos:
        s = np.array([v.frame_gt[a : b + 1].max() for a, b in v.clip_ranges()], float)
        scored.append(ScoredVideo(v.name, s, v.clip_ranges(), v.frame_gt))
    rep = evaluate_scores(scored, print_table=False)
    assert rep["auc"] == pytest.approx(1.0) and rep["ap"] == pytest.approx(1.0) and rep["video_auc"] == 1.0
    # the same as {name: scores} + dataset
    rep2 = evaluate_scores({sv.name: sv.scores for sv in scored}, data, print_table=False)
    assert rep2["auc"] == rep["auc"] and rep2["frames"] == rep["frames"]
    with pytest.raises(ValueError, match="7 scores for"):
        evaluate_scores({"nor_00": np.zeros(7)}, data, print_table=False)


def test_evaluate_rejects_mismatched_dims(trained, tmp_path):
    out, _ = trained
    other = FeatureDataset(
        [VideoFeatures("x", {"a": np.zeros((3, 5), np.float32), "b": np.zeros((3, 8), np.float32)}, 0)],
        {"a": 5, "b": 8},
    )
    with pytest.raises(ValueError, match="expects dim 16"):
        evaluate(out, other, print_table=False)
    only_a = FeatureDataset([VideoFeatures("x", {"a": np.zeros((3, 16), np.float32)}, 0)], {"a": 16})
    with pytest.raises(ValueError, match="lacks representation b"):
        evaluate(out, only_a, print_table=False)


@pytest.mark.skipif(not UCF.exists(), reason=f"{UCF} not available (../shared missing)")
def test_ucf_c3d_sample_auc(tmp_path):
    """The 10 real UCF-Crime test videos (32×4096 C3D) with their official annotations."""
    counts = {}
    for line in (UCF / "UCF_Annotation.txt").read_text().splitlines():
        tok = line.split()
        if tok:
            counts[Path(tok[0]).stem] = int(tok[1])
    ds = load_dataset(UCF)
    total = sum(counts[v.name] for v in ds)
    # 1) a heuristic scorer: cosine distance of each segment to the video's mean feature
    scores = {}
    for v in ds:
        x = v.feats["c3d"]
        m = x.mean(axis=0)
        cos = x @ m / (np.linalg.norm(x, axis=1) * np.linalg.norm(m) + 1e-12)
        scores[v.name] = 1.0 - cos
    rep = evaluate_scores(scores, UCF, print_table=False)
    assert rep["frames"] == total == 12459 and rep["videos"] == 10
    assert 0.0 <= rep["auc"] <= 1.0 and 0.0 < rep["ap"] <= 1.0
    assert rep["abnormal_frames"] == sum(int(v.frame_gt.sum()) for v in ds)
    # 2) a tiny LEGO model trained for a few epochs on the same features, evaluated from disk
    cfg = Config()
    cfg.train.epochs = 3
    cfg.train.val_fraction = 0.0
    s = train(UCF, cfg, tmp_path / "ucf.pt", progress=False)
    assert s.representations == ["c3d"] and s.best_epoch == 3
    rep = evaluate(tmp_path / "ucf.pt", UCF, out_json=tmp_path / "ucf.json", print_table=False)
    assert rep["frames"] == total and 0.0 <= rep["auc"] <= 1.0


# -------------------------------------------------------------------------------------------- CLI --


def _parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    add_train(sub)
    add_eval(sub)
    return p


@pytest.mark.skipif(not UCF.exists(), reason=f"{UCF} not available (../shared missing)")
def test_cli_train_and_eval(tmp_path, capsys):
    p = _parser()
    args = p.parse_args(
        [
            "train",
            "--data",
            str(UCF),
            "--out",
            str(tmp_path / "m.pt"),
            "--fusion",
            "concat",
            "--epochs",
            "2",
            "--seed",
            "3",
            "--no-progress",
        ]
    )
    assert args.handler(args, Config()) == 0
    assert "saved" in capsys.readouterr().out
    args = p.parse_args(
        [
            "eval",
            "--model",
            str(tmp_path / "m.pt"),
            "--data",
            str(UCF),
            "--json",
            str(tmp_path / "r.json"),
            "--plots",
            str(tmp_path / "plots"),
            "--max-timelines",
            "2",
        ]
    )
    assert args.handler(args, Config()) == 0
    j = json.loads((tmp_path / "r.json").read_text())
    assert j["frames"] == 12459 and j["model"]["fusion"] == "concat"
    for bad, exc in (
        (["train", "--data", str(tmp_path / "none"), "--out", "x.pt"], FileNotFoundError),
        (["train", "--data", str(UCF), "--out", "x.pt", "--representations", "i3d"], ValueError),
        (["eval", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "none")], FileNotFoundError),
        (["eval", "--model", str(tmp_path / "m.pt")], ValueError),
    ):
        a = p.parse_args(bad)
        with pytest.raises(exc) as ei:
            a.handler(a, Config())
        assert "\n" not in str(ei.value)


def test_score_video_absent_representation():
    torch.manual_seed(0)
    N, T = 8, 11
    model = build_model(ModelConfig(window=N, representations=["a", "b"]), {"a": 6, "b": 3}).eval()
    a = np.random.default_rng(2).normal(size=(T, 6)).astype(np.float32)
    fast = score_video(model, {"a": a})  # "b" missing → zeros + present 0
    with torch.no_grad():
        t = T - 1
        w = {"a": torch.from_numpy(a[t - N + 1 : t + 1])[None], "b": torch.zeros(1, N, 3)}
        ref = model(w, torch.ones(1, N), torch.tensor([[1.0, 0.0]]))[0, -1]
    assert fast[-1] == pytest.approx(float(ref), abs=1e-6)
    with pytest.raises(ValueError, match="none of the model's representations"):
        score_video(model, {"c": a})


def _write_fusewatch_layout(ds: FeatureDataset, root: Path) -> None:
    """What ``fusewatch extract`` writes: meta.json, <rep>/<video>.npy, labels.json."""
    meta = {
        "clip_len": CLIP_LEN,
        "clip_stride": CLIP_LEN,
        "sample_fps": 10.0,
        "representations": {r: {"dim": d, "version": "test"} for r, d in ds.dims.items()},
        "videos": {},
    }
    labels = {}
    for v in ds:
        for r, x in v.feats.items():
            (root / r).mkdir(parents=True, exist_ok=True)
            np.save(root / r / f"{v.name}.npy", x)
        meta["videos"][v.name] = {
            "clips": v.num_clips,
            "frames": v.frames(),
            "fps": 10.0,
            "clip_frames": [list(c) for c in v.clip_ranges()],
        }
        labels[v.name] = {
            "frames": v.frames(),
            "fps": 10,
            "abnormal_frames": int(v.frame_gt.sum()),
            "labels": "".join(map(str, v.frame_gt.tolist())),
        }
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "labels.json").write_text(json.dumps(labels))


def test_train_and_eval_from_fusewatch_layout(data, tmp_path):
    root = tmp_path / "feats"
    _write_fusewatch_layout(data, root)
    cfg = small_cfg(epochs=3)
    cfg.model.representations = ["b", "a"]  # order is the model's, not the folder's
    s = train(root, cfg, tmp_path / "m.pt", progress=False)
    assert s.representations == ["b", "a"] and s.val_kind == "frame" and s.best_val_auc is not None
    rep = evaluate(tmp_path / "m.pt", root, print_table=False)
    assert rep["frames"] == sum(v.frames() for v in data) and rep["videos"] == len(data)
    assert rep["abnormal_frames"] == sum(int(v.frame_gt.sum()) for v in data)


def test_alert_thresholds_come_from_normal_videos_the_model_never_trained_on(data, tmp_path):
    """``train.calibration``: with a validation split its normal videos set the thresholds; without
    one, cross-fitted calibration models (each without one group of the normal videos) score every
    normal video out of sample (not the shipped model's own training clips, which it scores too low)."""
    import numpy as np

    from fusewatch.engines.evaluation.scoring import score_dataset
    from fusewatch.engines.training.checkpoint import load_model

    cfg = small_cfg(epochs=6)
    cfg.train.val_fraction = 0.0
    s = train(data, cfg, tmp_path / "h.pt", progress=False)
    th = s.alert_thresholds
    n_normal = sum(v.video_label == 0 for v in data.videos)
    assert th["source"] == "heldout" and th["videos"] == n_normal
    assert th["normal_clips"] == sum(len(v.feats["a"]) for v in data.videos if v.video_label == 0)
    cfg.train.calibration = "insample"
    s2 = train(data, cfg, tmp_path / "i.pt", progress=False)
    assert s2.alert_thresholds["source"] == "insample" and s2.alert_thresholds["videos"] == n_normal
    # same shipped model (same seed, same videos): only the calibration differs
    m, _ = load_model(tmp_path / "h.pt")
    normal = [v for v in data.videos if v.video_label == 0]
    own = np.concatenate(list(score_dataset(m, normal).values()))
    assert s2.alert_thresholds["on"] == round(float(np.quantile(own, 0.99)), 6)
    assert th["on"] != s2.alert_thresholds["on"]
    cfg.train.calibration = "none"
    assert train(data, cfg, tmp_path / "n.pt", progress=False).alert_thresholds is None
    cfg.train.calibration = "heldout"
    cfg.train.val_fraction = 0.25
    s3 = train(data, cfg, tmp_path / "v.pt", progress=False)
    assert s3.alert_thresholds["source"] == "validation"
    assert s3.alert_thresholds["videos"] == round(0.25 * n_normal)  # the validation split's normal videos


def test_training_stores_calibrated_alert_thresholds(trained, data):
    """Thresholds come from the normal training videos' clip scores and the engine adopts them."""
    from fusewatch.engines.serving.service import effective_alerts
    from fusewatch.engines.training.checkpoint import load_model
    from fusewatch.stream.config import load_config

    out, s = trained
    th = s.alert_thresholds
    assert th and 0 <= th["off"] < th["on"] <= 1 and th["normal_clips"] > 0
    _, meta = load_model(out)
    assert meta["alert_thresholds"] == th
    assert effective_alerts(load_config(env={}), meta).on == th["on"]
    assert effective_alerts(load_config(overrides={"alerts.thresholds": "config"}, env={}), meta).on == 0.6
