"""Ped2 through the real streaming path (replay → worker → in-process bus → engine) vs offline scoring.

Real UCSD Ped2 videos (``../shared/data/ped2``): features extracted with the worker's own pipeline,
a small model trained on weak video labels, then the same videos replayed as cameras; the engine's
per-clip scores must equal :func:`fusewatch.engines.evaluation.scoring.score_video` on the extracted features (1e-4), clip by
clip, with the same clips and frame ranges. Also the bench's multi-engine replay
(:func:`fusewatch.engines.bench.ped2.stream_models`) for LEGO and the baselines, and ``bench ped2`` end to end on a
tiny folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from fusewatch.cli.bench import parse_pq_grid
from fusewatch.engines.bench import ped2 as B
from fusewatch.engines.bench import ped2_selection as SEL
from fusewatch.engines.bench import ped2_stream as STR
from fusewatch.engines.data import load_dataset
from fusewatch.engines.serving.pipeline import stream_videos
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.training.loop import train
from fusewatch.stream.config import load_config
from fusewatch.stream.extract import extract_videos
from fusewatch.stream.paths import shared_data  # noqa: E402

PED2 = shared_data("ped2")
VIDEOS = ("test_02", "train_01")

pytestmark = pytest.mark.skipif(not PED2.is_dir(), reason=f"{PED2} not found: the shared data folder is absent")


def _cfg(extractors, **over):
    o = {"features.extractors": ",".join(extractors), "train.val_fraction": 0.0, "train.seed": 0}
    o.update(over)
    return load_config(env={}, overrides=o)


def _subset_dir(root: Path, stems) -> Path:
    """A folder laid out like ../shared/data/ped2 (symlinked videos + labels.json) with ``stems``."""
    root.mkdir(parents=True, exist_ok=True)
    labels = json.loads((PED2 / "labels.json").read_text())
    for s in stems:
        (root / f"{s}.mp4").symlink_to(PED2 / f"{s}.mp4")
    (root / "labels.json").write_text(json.dumps({s: labels[s] for s in stems}))
    return root


@pytest.fixture(scope="module")
def ped2_dir(tmp_path_factory) -> Path:
    return _subset_dir(tmp_path_factory.mktemp("ped2") / "videos", VIDEOS)


@pytest.fixture(scope="module")
def cnn_feats(tmp_path_factory, ped2_dir):
    """mobilenetv2 + flow features of two Ped2 videos (one abnormal, one normal)."""
    cfg = _cfg(["mobilenetv2", "flow"])
    out = extract_videos([ped2_dir], tmp_path_factory.mktemp("feats"), cfg, progress=False)
    return cfg, out


@pytest.fixture(scope="module")
def flow_feats(tmp_path_factory, ped2_dir):
    cfg = _cfg(["flow"])
    out = extract_videos([ped2_dir], tmp_path_factory.mktemp("flowfeats"), cfg, progress=False)
    return cfg, out


def _assert_agree(streamed: dict, offline: dict, ranges: dict, what: str) -> float:
    cmp = STR.compare_scores(streamed, offline, ranges)
    assert not cmp["missing"], f"{what}: cameras never scored by the engine: {cmp['missing']}"
    assert not cmp["count_mismatch"], f"{what}: clip count/index mismatch for {cmp['count_mismatch']}"
    assert not cmp["range_mismatch"], f"{what}: frame ranges differ for {cmp['range_mismatch']}"
    assert cmp["clips"] == sum(len(v) for v in offline.values())
    assert cmp["max_abs_diff"] <= B.AGREEMENT_TOL, f"{what}: streamed vs offline differ by {cmp['max_abs_diff']:.3g}"
    return cmp["max_abs_diff"]


def test_lego_streamed_scores_equal_offline(cnn_feats, ped2_dir, tmp_path):
    """The default LEGO (mobilenetv2 + flow) with a window shorter than the videos (N=8 < 11 clips:
    the engine's ring buffer wraps) through stream_videos on the bus == offline causal scores."""
    cfg, feats = cnn_feats
    cfg.model.window = 8
    cfg.model.order_p, cfg.model.order_q = 2, 1
    cfg.train.epochs = 4
    ds = load_dataset(feats)
    assert sorted(v.name for v in ds.videos) == sorted(VIDEOS)
    assert {v.name: v.video_label for v in ds.videos} == {"test_02": 1, "train_01": 0}
    model_path = tmp_path / "lego.pt"
    train(
        SEL.dataset_of(SEL.weak_videos(ds.videos), ds),
        cfg,
        model_path,
        fusion="lego",
        representations=["mobilenetv2", "flow"],
        progress=False,
    )
    offline = SEL.offline_scores(model_path, ds.videos)
    assert max(len(s) for s in offline.values()) > cfg.model.window
    serving = load_serving_model(cfg, model_path)
    # the model remembers which extractors made its training features (checked by the engine)
    assert serving.meta["extractor_versions"] == {r: ds.info["versions"][r] for r in ("mobilenetv2", "flow")}
    assert all(serving.meta["extractor_versions"].values())
    # train.normalize = zscore (default): the engine state normalises exactly as score_video does
    assert serving.meta.feature_norm and set(serving.meta.norm_stats()) == {"mobilenetv2", "flow"}
    res = stream_videos([ped2_dir / f"{v}.mp4" for v in VIDEOS], cfg, serving, camera_ids=list(VIDEOS))
    assert res.replay.clips_published == sum(len(s) for s in offline.values())
    ranges = {v.name: v.clip_ranges() for v in ds.videos}
    _assert_agree(res.clips, offline, ranges, f"lego ({serving.scorer.backend})")
    # streamed frame-level evaluation works on the engine's own clip ranges
    gt = B.read_labels(ped2_dir)
    st = {c: res.scores(c) for c in VIDEOS}
    rg = {c: [(r.frame_start, r.frame_end) for r in res.clips[c]] for c in VIDEOS}
    auc_s = STR.frame_aucs(STR.scored_videos(st, rg, gt))["all"]
    auc_o = STR.frame_aucs(STR.scored_videos(offline, ranges, gt))["all"]
    assert auc_s is not None and abs(auc_s - auc_o) < 1e-6
    # the command contract: `eval --data` (offline) and `eval --videos --stream` give the same report
    from fusewatch.cli import main

    off_json, st_json = tmp_path / "eval.json", tmp_path / "eval-stream.json"
    assert main(["eval", "--model", str(model_path), "--data", str(feats), "--json", str(off_json)]) == 0
    assert (
        main(
            [
                "eval",
                "--model",
                str(model_path),
                "--videos",
                str(ped2_dir),
                "--stream",
                "--json",
                str(st_json),
                "--set",
                "features.extractors=mobilenetv2,flow",
            ]
        )
        == 0
    )
    off_rep, st_rep = json.loads(off_json.read_text()), json.loads(st_json.read_text())
    for k in ("frames", "videos"):
        assert off_rep[k] == st_rep[k]
    assert abs(off_rep["auc"] - st_rep["auc"]) < 1e-6 and abs(off_rep["ap"] - st_rep["ap"]) < 1e-6


def test_stream_models_one_replay_all_fusions(flow_feats, ped2_dir, tmp_path):
    """The bench's one-replay, one-engine-per-model streaming: LEGO (hadamard, features window
    N=4) and the concat/add baselines (features-in form) all agree with offline scoring."""
    cfg, feats = flow_feats
    cfg.model.window = 4
    cfg.train.epochs = 3
    ds = load_dataset(feats)
    paths, offline = {}, {}
    for key, fusion, exp in (("lego-hadamard", "lego", "hadamard"), ("concat", "concat", None), ("add", "add", None)):
        mc = SEL.model_cfg(cfg, fusion, exp, (1, 1))
        mc.model.representations = ["flow"]
        paths[key] = tmp_path / f"{key}.pt"
        SEL.train_one(ds, ds.videos, mc, paths[key])
        offline[key] = SEL.offline_scores(paths[key], ds.videos)
    serving = {k: load_serving_model(cfg, p) for k, p in paths.items()}
    res = STR.stream_models([ped2_dir / f"{v}.mp4" for v in VIDEOS], cfg, serving, camera_ids=list(VIDEOS))
    ranges = {v.name: v.clip_ranges() for v in ds.videos}
    for k in paths:
        _assert_agree(res["clips"][k], offline[k], ranges, k)
        assert res["engines"][k]["scored"] == sum(len(s) for s in offline[k].values())


def test_bench_ped2_command_end_to_end(tmp_path, monkeypatch):
    """``bench ped2`` on a tiny Ped2-like folder (2 abnormal + 2 normal videos, flow only): selection
    by 2-fold CV on weak labels, models written, streamed == offline, AUCs reported, JSON written."""
    from fusewatch.cli.bench import add_commands

    vdir = _subset_dir(tmp_path / "videos", ("test_02", "test_12", "train_01", "train_08"))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    out_model, out_json = tmp_path / "model" / "lego.pt", tmp_path / "report.json"
    args = parser.parse_args(
        [
            "bench",
            "ped2",
            "--protocol",
            "transductive",
            "--videos",
            str(vdir),
            "--out-model",
            str(out_model),
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out_json),
            "--folds",
            "2",
            "--pq-grid",
            "1,1 2,1",
            "--expansions",
            "matrix",
            "--quiet",
        ]
    )
    cfg = _cfg(["flow"], **{"model.representations": "flow", "model.window": "8", "train.epochs": "3"})
    assert args.handler(args, cfg) == 0
    rep = json.loads(out_json.read_text())
    assert out_model.is_file() and rep["primary"] == "lego-matrix" and rep["out_model"] == str(out_model)
    assert set(rep["results"]) == {"lego-matrix", "concat", "add"}
    assert rep["agreement_ok"] is True
    assert rep["stream"]["videos"] == 4
    for k, r in rep["results"].items():
        assert r["offline"]["all"] is not None and abs(r["offline"]["all"] - r["streamed"]["all"]) < 1e-6, k
        assert rep["agreement"][k]["max_abs_diff"] <= B.AGREEMENT_TOL
    # selection saw weak labels of held-out videos only: every video scored once out of fold
    assert all(c["videos"] == 4 for c in rep["selection"]["candidates"])
    assert rep["config"]["window"] == 8 and rep["config"]["representations"] == ["flow"]


def test_stratified_folds_and_weak_copies():
    class V:
        def __init__(self, name, lab):
            self.name, self.video_label = name, lab

    vids = [V(f"a{i}", 1) for i in range(6)] + [V(f"n{i}", 0) for i in range(12)]
    folds = SEL.stratified_folds(vids, 3, seed=0)
    assert sorted(sum(folds, [])) == sorted(v.name for v in vids)
    for f in folds:
        assert sum(n.startswith("a") for n in f) == 2 and sum(n.startswith("n") for n in f) == 4
    assert folds == SEL.stratified_folds(vids, 3, seed=0)


def test_bench_defaults_yield_to_overrides():
    cfg, applied = B.apply_bench_defaults(load_config(env={}, overrides={"train.epochs": 7}))
    assert cfg.train.epochs == 7 and "train.epochs" not in applied
    for k, v in applied.items():
        assert B._get(cfg, k) == v
    cfg2, _ = B.apply_bench_defaults(load_config(env={}))
    for k, v in B.BENCH_DEFAULTS.items():
        assert B._get(cfg2, k) == v
    with pytest.raises(ValueError):
        parse_pq_grid("1;x")
    assert parse_pq_grid("1,1 2,1") == [(1, 1), (2, 1)]
    assert np.isfinite(SEL.bag_bce(np.array([0.2, 0.9]), 1, 1))
