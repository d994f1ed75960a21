"""Feature normalisation as part of the model (``train.normalize``): fitted on the training clips,
stored in the checkpoint and the ONNX metadata, applied identically offline (score_video) and by the
engine state (torch / ONNX Runtime, graphs-in and features-in); models without statistics still load."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fusewatch.engines.evaluation.scoring import score_video
from fusewatch.engines.export.onnx import export_onnx, read_onnx_meta
from fusewatch.engines.fusion.normalize import (
    decode_feature_norm,
    encode_feature_norm,
    fit_feature_norm,
    normalize_rows,
)
from fusewatch.engines.serving.runtime import NormalizedState, load_serving_model
from fusewatch.engines.training.checkpoint import load_model, read_checkpoint
from fusewatch.engines.training.loop import train
from tests.test_train_eval import small_cfg, synthetic

TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    """The synthetic set with an offset and scale far from zero-mean/unit-variance (as raw flow is)."""
    ds = synthetic(8, 8, seed=1)
    vids = [
        dataclasses.replace(v, feats={k: (a * 7.0 + 40.0).astype(np.float32) for k, a in v.feats.items()})
        for v in ds.videos
    ]
    return dataclasses.replace(ds, videos=vids)


def _cfg(normalize="zscore", fusion="lego"):
    cfg = small_cfg(epochs=3)
    cfg.model.window = 8
    cfg.model.fusion = fusion
    cfg.train.val_fraction = 0.0
    cfg.train.normalize = normalize
    return cfg


@pytest.fixture(scope="module")
def models(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("norm")
    out = {}
    for name, (norm, fusion) in {
        "lego": ("zscore", "lego"),
        "concat": ("zscore", "concat"),
        "plain": ("none", "lego"),
    }.items():
        p = d / f"{name}.pt"
        train(data, _cfg(norm, fusion), p, progress=False)
        out[name] = p
    return out


def test_statistics_fitted_on_training_clips_and_stored(models, data):
    ckpt = read_checkpoint(models["lego"])
    assert set(ckpt["meta"]["feature_norm"]) == {"a", "b"}
    model, meta = load_model(models["lego"])
    want = fit_feature_norm([v.feats for v in data.videos], ["a", "b"])  # val_fraction 0: all videos
    for k in ("a", "b"):
        np.testing.assert_allclose(model.feature_norm[k][0], want[k][0], rtol=1e-6)
        np.testing.assert_allclose(model.feature_norm[k][1], want[k][1], rtol=1e-6)
        np.testing.assert_array_equal(meta.norm_stats()[k][0], model.feature_norm[k][0])
        assert abs(float(want[k][0].mean()) - 40.0) < 3.0  # the offset is what gets removed
    # round trip of the on-disk form is exact (float32 bytes)
    rt = decode_feature_norm(encode_feature_norm(model.feature_norm))
    assert all(np.array_equal(rt[k][i], model.feature_norm[k][i]) for k in rt for i in (0, 1))


def test_score_video_applies_the_model_statistics(models, data):
    model, _ = load_model(models["lego"])
    v = data.videos[-1]
    s = score_video(model, v.feats)
    norm = model.feature_norm
    model.feature_norm = {}
    s_manual = score_video(model, {k: normalize_rows(a, norm[k]) for k, a in v.feats.items()})
    s_raw = score_video(model, v.feats)
    np.testing.assert_allclose(s, s_manual, atol=1e-6)
    assert np.max(np.abs(s - s_raw)) > 1e-3  # the statistics matter (the test can fail)


def test_missing_rows_stay_missing():
    stats = (np.full(3, 2.0, np.float32), np.full(3, 0.5, np.float32))
    y = normalize_rows(np.array([[0, 0, 0], [2, 3, 4]], np.float32), stats)
    np.testing.assert_array_equal(y, [[0, 0, 0], [0, 2, 4]])


def _stream(serving, feats):
    """Per-clip newest-node scores of the engine path: new_state → push raw → window → score."""
    st = serving.new_state()
    T = next(iter(feats.values())).shape[0]
    out = []
    for t in range(T):
        st.push({k: a[t] for k, a in feats.items()})
        out.append(float(serving.score([st.window()])[0]))
    return np.asarray(out)


@pytest.mark.parametrize(
    "name,backend", [("lego", "torch"), ("lego", "onnxruntime"), ("concat", "torch"), ("concat", "onnxruntime")]
)
def test_engine_state_scores_equal_offline(models, data, name, backend):
    from fusewatch.stream.config import Config

    model, _ = load_model(models[name])
    cfg = Config()
    serving = load_serving_model(cfg, models[name], backend=backend)
    assert serving.meta.feature_norm and isinstance(serving.new_state(), NormalizedState)
    for v in (data.videos[0], data.videos[-1]):
        np.testing.assert_allclose(_stream(serving, v.feats), score_video(model, v.feats), atol=TOL)


def test_onnx_export_carries_statistics_and_serves_identically(models, data, tmp_path):
    from fusewatch.stream.config import Config

    model, meta = load_model(models["lego"])
    p = export_onnx(model, meta, tmp_path / "lego-graphs.onnx", form="graphs")
    om = read_onnx_meta(p)
    assert om.model_version == meta.model_version
    for k, (m, s) in model.feature_norm.items():
        np.testing.assert_array_equal(om.norm_stats()[k][0], m)
        np.testing.assert_array_equal(om.norm_stats()[k][1], s)
    serving = load_serving_model(Config(), p, backend="onnxruntime")
    v = data.videos[-1]
    np.testing.assert_allclose(_stream(serving, v.feats), score_video(model, v.feats), atol=TOL)


def test_model_without_statistics_loads_and_scores(models, data, tmp_path):
    """``normalize = "none"`` writes the pre-normalisation checkpoint format: no ``feature_norm``;
    it loads, scores raw features, and serves with a plain state."""
    from fusewatch.stream.config import Config

    ckpt = read_checkpoint(models["plain"])
    assert "feature_norm" not in ckpt["meta"]
    model, meta = load_model(models["plain"])
    assert model.feature_norm == {} and meta.feature_norm is None and "feature_norm" not in meta.to_dict()
    v = data.videos[-1]
    serving = load_serving_model(Config(), models["plain"], backend="torch")
    assert not isinstance(serving.new_state(), NormalizedState)
    np.testing.assert_allclose(_stream(serving, v.feats), score_video(model, v.feats), atol=TOL)
    p = export_onnx(model, meta, tmp_path / "plain.onnx", form="graphs")
    assert read_onnx_meta(p).feature_norm is None


def test_statistics_are_part_of_model_version(models):
    model, meta = load_model(models["lego"])
    from fusewatch.engines.training.checkpoint import weights_hash

    norm = model.feature_norm
    model.feature_norm = {k: (m + 1.0, s) for k, (m, s) in norm.items()}
    assert weights_hash(model) != meta.model_version
    model.feature_norm = norm
    assert weights_hash(model) == meta.model_version
