"""ONNX export (both forms) + backends: ONNX Runtime == torch, metadata, static shapes, factory."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from engines.backends import BackendError, gpu_available, select_backend
from engines.backends.ort_backend import OrtScorer
from engines.backends.torch_backend import TorchScorer
from engines.checkpoint import model_meta, save_checkpoint
from engines.export import example_inputs, export_onnx, onnx_projectors, read_onnx_meta
from engines.incremental import CameraGraphState
from engines.model import build_model
from stream.config import ModelConfig

DIMS = {"rgb": 40, "flow": 24, "audio": 8}
N = 12
VARIANTS = {
    "matrix3": dict(representations=["rgb", "flow", "audio"], expansion="matrix"),
    "hadamard2proj": dict(representations=["rgb", "flow"], expansion="hadamard", proj_dim=6, softplus=True,
                          order_p=3, order_q=1),
    "matrix1": dict(representations=["flow"], expansion="matrix", order_p=1, order_q=2),
}


def _build(**kw):
    torch.manual_seed(0)
    m = build_model(ModelConfig(window=N, **kw), DIMS).eval()
    with torch.no_grad():
        if hasattr(m, "A"):
            m.A.normal_(0.3, 0.5)
    return m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    d = tmp_path_factory.mktemp("onnx")
    for name, kw in VARIANTS.items():
        m = _build(**kw)
        meta = model_meta(m)
        paths = {f: export_onnx(m, meta, d / f"{name}-{f}.onnx", form=f) for f in ("graphs", "features")}
        out[name] = (m, meta, paths)
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ort_matches_torch_both_forms(exported, variant):
    m, meta, paths = exported[variant]
    ort_s = OrtScorer(paths, threads=1)
    ref = TorchScorer(m, meta)
    assert set(ort_s.forms) == {"graphs", "features"}
    for b in (1, 3, 17):
        g = example_inputs(m, "graphs", batch=b, seed=b)
        np.testing.assert_allclose(ort_s.score_graphs(g["R"], g["mask"], g["present"]),
                                   ref.score_graphs(g["R"], g["mask"], g["present"]), atol=1e-4, rtol=0)
        f = example_inputs(m, "features", batch=b, seed=b)
        feats = [f[f"feat_{i}"] for i in range(m.num_reps)]
        s_ort = ort_s.score_features(feats, f["mask"], f["present"])
        np.testing.assert_allclose(s_ort, ref.score_features(feats, f["mask"], f["present"]), atol=1e-4, rtol=0)
        assert s_ort.shape == (b, N) and s_ort.dtype == np.float32


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_static_graph_and_metadata(exported, variant):
    m, meta, paths = exported[variant]
    for form, p in paths.items():
        proto = onnx.load(str(p))
        ops = {n.op_type for n in proto.graph.node}
        assert not ops & {"Shape", "Size", "ConstantOfShape", "Expand", "If", "Loop"}, ops
        for vi in list(proto.graph.input) + list(proto.graph.output):
            dims = vi.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch"
            assert all(d.HasField("dim_value") for d in dims[1:]), vi.name
        md = read_onnx_meta(p)
        cfg = VARIANTS[variant]
        assert md["form"] == form and md["fusion"] == "lego" and md["N"] == N
        assert md["P"] == cfg.get("order_p", 2) and md["Q"] == cfg.get("order_q", 2)
        assert md["expansion"] == cfg["expansion"] and md["representations"] == cfg["representations"]
        assert md["dims"] == {k: DIMS[k] for k in cfg["representations"]}
        assert md["model_version"] == meta["model_version"]
        names = [i.name for i in proto.graph.input]
        assert names == md["inputs"]
        if form == "graphs":
            assert names == ["R", "mask", "present"]
            assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == \
                [m.num_reps, N, N]


def test_projection_travels_in_metadata(exported):
    m, _, paths = exported["hadamard2proj"]
    md = read_onnx_meta(paths["graphs"])
    projs = onnx_projectors(md)
    assert set(projs) == {"rgb", "flow"}
    x = np.random.default_rng(0).standard_normal((3, DIMS["rgb"])).astype(np.float32)
    np.testing.assert_allclose(projs["rgb"](x), m.projectors()["rgb"](x), atol=1e-5)
    a = CameraGraphState(md["representations"], md["N"], md["dims"], projs)
    b = CameraGraphState.from_model(m)
    rng = np.random.default_rng(1)
    for _ in range(N + 3):
        clip = {k: rng.standard_normal(DIMS[k]).astype(np.float32) for k in ("rgb", "flow")}
        a.push(clip)
        b.push(clip)
    np.testing.assert_allclose(a.window()[0], b.window()[0], atol=1e-5)
    assert "projection" not in read_onnx_meta(exported["matrix3"][2]["graphs"])


@pytest.mark.parametrize("fusion", ["concat", "add", "mtn"])
def test_baselines_features_form(tmp_path, fusion):
    m = _build(fusion=fusion, representations=["rgb", "audio"])
    p = export_onnx(m, None, tmp_path / "b.onnx", form="features")
    s = OrtScorer(p)
    assert s.forms == ("features",)
    ref = TorchScorer(m)
    for b in (1, 5):
        f = example_inputs(m, "features", batch=b, seed=b)
        feats = {"rgb": f["feat_0"], "audio": f["feat_1"]}
        np.testing.assert_allclose(s.score_features(feats, f["mask"], f["present"]),
                                   ref.score_features(feats, f["mask"], f["present"]), atol=1e-4)
    with pytest.raises(BackendError, match="graphs-in"):
        s.score_graphs(np.zeros((1, 2, N, N)), np.ones((1, N)))
    with pytest.raises(ValueError, match="LEGO"):
        export_onnx(m, None, tmp_path / "g.onnx", form="graphs")


def test_select_backend_from_checkpoint(tmp_path):
    m = _build(**VARIANTS["matrix3"])
    ck = tmp_path / "m.pt"
    save_checkpoint(m, ck)
    ort_s = select_backend("onnxruntime", ck, cache_dir=tmp_path / "cache", threads=1)
    torch_s = select_backend("torch", ck)
    assert isinstance(ort_s, OrtScorer) and isinstance(torch_s, TorchScorer)
    assert ort_s.meta["model_version"] == torch_s.meta["model_version"]
    exported = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == 2
    mtimes = [p.stat().st_mtime_ns for p in exported]
    select_backend("onnxruntime", ck, cache_dir=tmp_path / "cache")   # cached exports reused
    assert [p.stat().st_mtime_ns for p in exported] == mtimes
    # dict features with a missing representation == present 0
    f = example_inputs(m, "features", batch=4, seed=2)
    feats = {"rgb": f["feat_0"], "flow": f["feat_1"]}
    pres = np.ones((4, 3), np.float32)
    pres[:, 2] = 0
    np.testing.assert_allclose(ort_s.score_features(feats, f["mask"]),
                               torch_s.score_features(dict(feats, audio=f["feat_2"]), f["mask"], pres), atol=1e-4)
    # single ONNX file: only its form
    one = select_backend("onnxruntime", exported[0])
    assert len(one.forms) == 1
    with pytest.raises(BackendError, match="torch"):
        select_backend("torch", exported[0])
    with pytest.raises(BackendError, match="R: expected"):
        ort_s.score_graphs(np.zeros((2, 3, N, N + 1)), np.ones((2, N)))
    if not gpu_available():
        assert isinstance(select_backend("auto", ck, cache_dir=tmp_path / "cache"), OrtScorer)
        with pytest.raises(BackendError, match="tensorrt.*unavailable"):
            select_backend("tensorrt", ck, cache_dir=tmp_path / "cache")
    with pytest.raises(BackendError, match="unknown backend"):
        select_backend("tvm", ck)
