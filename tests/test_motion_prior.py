"""The local-motion prior (``train.motion_prior``): fitted on the training clips, stored with the model
(checkpoint, ONNX metadata, model_version), applied identically offline (score_video) and by the
engine, and it moves scores towards the clips where something moves fast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fusewatch.engines.evaluation.scoring import score_video
from fusewatch.engines.export.onnx import export_onnx, read_onnx_meta
from fusewatch.engines.fusion import motion_prior as MP
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.training.checkpoint import load_model, read_checkpoint
from fusewatch.engines.training.loop import train
from tests.test_feature_norm import _one_thread, _stream  # noqa: F401 - _one_thread: autouse fixture
from tests.test_train_eval import small_cfg, synthetic

TOL = 1e-4


def _flow_rows(rng, T: int, fast: np.ndarray) -> np.ndarray:
    """(T, 80) raw ``flow``-like rows: log1p magnitudes; cell 5 of the 4×4 clip-mean grid moves
    ``fast[t]`` px, the rest ~0.3 px."""
    x = np.log1p(np.abs(rng.normal(0.3, 0.05, size=(T, 80)))).astype(np.float32)
    x[:, 28 + 5] = np.log1p(fast)
    return x


@pytest.fixture(scope="module")
def data():
    """The synthetic set with ``b`` replaced by a ``flow`` representation whose fastest cell moves
    fast exactly during the abnormal burst (frame ground truth) and slowly elsewhere."""
    ds = synthetic(8, 8, seed=2)
    rng = np.random.default_rng(5)
    vids = []
    for v in ds.videos:
        T = v.feats["a"].shape[0]
        gt = np.asarray(v.frame_gt).reshape(T, -1).max(1) if v.frame_gt is not None else np.zeros(T)
        fast = np.where(gt > 0, 3.0, 0.6) + rng.uniform(0, 0.2, T)
        vids.append(dataclasses.replace(v, feats={"a": v.feats["a"], "flow": _flow_rows(rng, T, fast)}))
    return dataclasses.replace(ds, videos=vids, dims={"a": 16, "flow": 80})


def _cfg(prior: str):
    cfg = small_cfg(epochs=3)
    cfg.model.window = 8
    cfg.model.representations = ["a", "flow"]
    cfg.train.val_fraction = 0.0
    cfg.train.motion_prior = prior
    return cfg


@pytest.fixture(scope="module")
def models(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("prior")
    out = {}
    for prior in ("context", "product", "none"):
        torch.manual_seed(0)
        p = d / f"{prior}.pt"
        train(data, _cfg(prior), p, progress=False)
        out[prior] = p
    return out


def test_local_motion_and_factor():
    x = np.zeros((3, 80), np.float32)
    x[1, 28:44] = np.log1p(np.arange(16, dtype=np.float32))  # fastest cell: 15 px
    x[2, 28:44] = np.log1p(2.0)
    m = MP.local_motion(x, "flow")
    assert np.isnan(m[0]) and m[1] == pytest.approx(15.0, rel=1e-5) and m[2] == pytest.approx(2.0, rel=1e-5)
    prior = {"mode": "product", "source": "flow", "ref": 10.0}
    np.testing.assert_allclose(MP.factor(prior, {"flow": x}), [1.0, 1.0, 0.2], rtol=1e-5)  # absent → 1, clipped
    assert MP.factor(prior, {"flow": x[2]}) == pytest.approx(0.2, rel=1e-5)
    assert MP.factor(None, {"flow": x}) == 1.0 and MP.factor(prior, {"a": x}) == 1.0
    assert MP.source_for(["mobilenetv2", "flow", "flow_grid"]) == "flow_grid"
    assert MP.fit_motion_prior([{"mobilenetv2": x}], ["mobilenetv2"]) is None  # no motion representation
    fit = MP.fit_motion_prior([{"flow": x}], ["flow"])
    assert fit == {"mode": "context", "source": "flow", "ref": pytest.approx(15.0, rel=1e-5)}
    for bad in ({"mode": "sum", "source": "flow", "ref": 1.0}, {"mode": "product", "source": "flow", "ref": -1}):
        with pytest.raises(ValueError):
            MP.check_prior(bad, {"flow": 80})
    with pytest.raises(ValueError):
        MP.check_prior({"mode": "product", "source": "flow", "ref": 1.0}, {"flow": 12})


def test_window_score():
    y = np.array([[0.9, 0.2, 0.5], [0.1, 0.7, 0.3]], np.float32)
    mask = np.array([[0, 1, 1], [1, 1, 1]], np.float32)  # the first window's oldest node is padding
    np.testing.assert_allclose(MP.window_score(y, mask, None), [0.5, 0.3])
    np.testing.assert_allclose(MP.window_score(y, mask, {"mode": "product"}), [0.5, 0.3])
    np.testing.assert_allclose(MP.window_score(y, mask, {"mode": "context"}), [0.5, 0.7])


@pytest.mark.parametrize("mode", ["context", "product"])
def test_prior_stored_applied_offline_and_streamed(models, data, tmp_path, mode):
    from fusewatch.stream.config import Config

    ck = read_checkpoint(models[mode])
    assert ck["meta"]["motion_prior"]["source"] == "flow" and ck["meta"]["motion_prior"]["mode"] == mode
    assert "motion_prior" not in read_checkpoint(models["none"])["meta"]
    model, meta = load_model(models[mode])
    want = max(float(np.nanmax(MP.local_motion(v.feats["flow"], "flow"))) for v in data.videos)
    assert meta.prior()["ref"] == pytest.approx(want, rel=1e-6)

    v = next(v for v in data.videos if v.video_label == 1)
    s = score_video(model, v.feats)
    prior = model.motion_prior
    model.motion_prior = None
    bare = score_video(model, v.feats)
    model.motion_prior = prior
    if mode == "product":
        np.testing.assert_allclose(s, bare * MP.factor(prior, v.feats), atol=1e-6)
    else:  # context: at least the clip's own score, gated by its motion
        assert np.all(s >= bare * MP.factor(prior, v.feats) - 1e-6)
        assert np.any(s > bare * MP.factor(prior, v.feats) + 1e-3)
    assert np.max(np.abs(s - bare)) > 1e-3  # the prior changes scores (the test can fail)

    for backend in ("torch", "onnxruntime"):  # streamed == offline, prior included
        serving = load_serving_model(Config(), models[mode], backend=backend)
        assert serving.prior and serving.prior["ref"] == pytest.approx(want, rel=1e-6)
        st = _stream(serving, v.feats) * np.asarray([serving.motion_factor({"flow": r}) for r in v.feats["flow"]])
        np.testing.assert_allclose(st, s, atol=TOL)

    p = export_onnx(model, meta, tmp_path / "prior.onnx", form="graphs")
    assert read_onnx_meta(p).prior() == meta.prior()
    served = load_serving_model(Config(), p, backend="onnxruntime")
    assert served.prior == meta.prior()


@pytest.mark.parametrize("mode", ["context", "product"])
def test_prior_is_part_of_model_version_and_sharpens_localisation(models, data, mode):
    from fusewatch.engines.evaluation.metrics import roc_auc

    m1, meta1 = load_model(models[mode])
    m1.motion_prior = None
    from fusewatch.engines.training.checkpoint import weights_hash

    assert weights_hash(m1) != meta1.model_version  # the prior is part of the version
    ab = [v for v in data.videos if v.video_label == 1]
    y = np.concatenate([np.asarray(v.frame_gt).reshape(v.feats["a"].shape[0], -1).max(1) for v in ab])
    mp, _ = load_model(models[mode])
    s_prior = np.concatenate([score_video(mp, v.feats) for v in ab])
    s_bare = np.concatenate([score_video(m1, v.feats) for v in ab])
    assert roc_auc(y, s_prior) > roc_auc(y, s_bare)  # within anomalous videos: the fast clips rise
