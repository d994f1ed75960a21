"""ONNX export (both forms) + backends: ONNX Runtime == torch, metadata, static shapes, factory."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from fusewatch.engines.export.onnx import (
    example_inputs,
    export_onnx,
    onnx_node_encoders,
    onnx_projectors,
    read_onnx_meta,
)
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.backends import BackendError, gpu_available, select_backend
from fusewatch.engines.serving.backends.onnxruntime import OrtScorer
from fusewatch.engines.serving.backends.torch import TorchScorer
from fusewatch.engines.serving.state import CameraGraphState
from fusewatch.engines.training.checkpoint import model_meta, save_checkpoint
from fusewatch.stream.config import ModelConfig

DIMS = {"rgb": 40, "flow": 24, "audio": 8}
N = 12
VARIANTS = {  # node branch: default node_dim (16), off (0), small (3)
    "matrix3": dict(representations=["rgb", "flow", "audio"], expansion="matrix"),
    "hadamard2proj": dict(
        representations=["rgb", "flow"],
        expansion="hadamard",
        proj_dim=6,
        softplus=True,
        order_p=3,
        order_q=1,
        node_dim=0,
    ),
    "matrix1": dict(representations=["flow"], expansion="matrix", order_p=1, order_q=2, node_dim=3),
    "matrix2plain": dict(representations=["rgb", "flow"], expansion="matrix", node_dim=0),
    "hadamard2node": dict(representations=["rgb", "audio"], expansion="hadamard", proj_dim=5, node_dim=4),
}


def _graph_args(g):
    return (g["R"], g["mask"], g["present"], g.get("U"))


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
    assert ort_s.node_dim == ref.node_dim == m.node_dim == VARIANTS[variant].get("node_dim", 16)
    for b in (1, 3, 17):
        g = example_inputs(m, "graphs", batch=b, seed=b)
        assert ("U" in g) == bool(m.node_dim)
        s_graphs = ort_s.score_graphs(*_graph_args(g))
        np.testing.assert_allclose(s_graphs, ref.score_graphs(*_graph_args(g)), atol=1e-4, rtol=0)
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
        assert md["node_dim"] == m.node_dim
        assert ("node_encoders" in md) == bool(m.node_dim)
        if form == "graphs":
            assert names == ["R", "mask", "present"] + (["U"] if m.node_dim else [])
            assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [m.num_reps, N, N]
            if m.node_dim:
                assert [d.dim_value for d in proto.graph.input[3].type.tensor_type.shape.dim[1:]] == [
                    m.num_reps,
                    N,
                    m.node_dim,
                ]


@pytest.mark.parametrize("variant", ["hadamard2proj", "hadamard2node", "matrix3"])
def test_state_from_onnx_metadata_alone(exported, variant):
    """Projection and node-encoder weights travel in the metadata: a CameraGraphState built from
    the ONNX file alone equals the model's, and its windows scored by ORT (graphs-in) equal the
    torch features-in scores."""
    m, _, paths = exported[variant]
    md = read_onnx_meta(paths["graphs"])
    projs, encs = onnx_projectors(md), onnx_node_encoders(md)
    names = md["representations"]
    assert set(projs) == (set(names) if m.proj_dim else set())
    assert set(encs) == (set(names) if m.node_dim else set())
    x = np.random.default_rng(0).standard_normal((3, DIMS[names[0]])).astype(np.float32)
    if projs:
        np.testing.assert_allclose(projs[names[0]](x), m.projectors()[names[0]](x), atol=1e-5)
    if encs:
        np.testing.assert_allclose(encs[names[0]](x), m.node_encoders()[names[0]](x), atol=1e-5)
    a = CameraGraphState(names, md["N"], md["dims"], projs, node_encoders=encs)
    b = CameraGraphState.from_model(m)
    assert a.node_dim == b.node_dim == md["node_dim"]
    ort_s = OrtScorer(paths, threads=1)
    rng = np.random.default_rng(1)
    clips = []
    for t in range(N + 5):
        clip = {k: rng.standard_normal(DIMS[k]).astype(np.float32) for k in names}
        if t % 4 == 1:
            clip.pop(names[-1])  # one representation missing
        clips.append(clip)
        a.push(clip)
        b.push(clip)
        wa, wb = a.window(), b.window()
        assert len(wa) == len(wb) == 3 + bool(m.node_dim)
        for xa, xb in zip(wa, wb):
            np.testing.assert_allclose(xa, xb, atol=1e-5)
    # graphs-in (ORT, state from the ONNX file) == features-in (torch) on the last window
    feats = {k: np.zeros((1, N, DIMS[k]), np.float32) for k in names}
    for i, c in enumerate(clips[-N:]):
        for k, v in c.items():
            feats[k][0, i] = v
    with torch.no_grad():
        ref = m(
            {k: torch.from_numpy(v) for k, v in feats.items()},
            torch.from_numpy(wa[1][None]),
            torch.from_numpy(wa[2][None]),
        )
    np.testing.assert_allclose(ort_s.score_graphs(*[w[None] for w in wa]), ref.numpy(), atol=1e-4)


@pytest.mark.parametrize("variant", ["matrix3", "matrix1", "matrix2plain"])
def test_graphs_form_ignores_padded_entries_and_absent_representations(exported, variant):
    m, meta, paths = exported[variant]
    ort_s = OrtScorer(paths["graphs"], threads=1)
    g = example_inputs(m, "graphs", batch=4, seed=5)
    ref = ort_s.score_graphs(*_graph_args(g))
    rng = np.random.default_rng(9)
    mask = g["mask"]
    mm = (mask[:, :, None] * mask[:, None, :])[:, None] > 0.5
    g2 = dict(g, R=np.where(mm, g["R"], rng.standard_normal(g["R"].shape) * 5).astype(np.float32))
    if m.node_dim:
        pad = mask[:, None, :, None] > 0.5
        g2["U"] = np.where(pad, g["U"], rng.standard_normal(g["U"].shape) * 100).astype(np.float32)
        if m.num_reps > 1:  # row 1 has the last representation absent: its U does not matter
            g2["U"][1, -1] = rng.standard_normal(g2["U"][1, -1].shape)
    np.testing.assert_allclose(ort_s.score_graphs(*_graph_args(g2)), ref, atol=1e-5)
    assert (ref[mask == 0] == 0).all()
    if m.node_dim:
        with pytest.raises(BackendError, match="U .*required"):
            ort_s.score_graphs(g["R"], g["mask"], g["present"])
        with pytest.raises(BackendError, match="U: expected"):
            ort_s.score_graphs(g["R"], g["mask"], g["present"], g["U"][:, :, :, :1])
    else:
        with pytest.raises(BackendError, match="no node branch"):
            ort_s.score_graphs(g["R"], g["mask"], g["present"], np.zeros((4, m.num_reps, N, 2), np.float32))


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
        np.testing.assert_allclose(
            s.score_features(feats, f["mask"], f["present"]),
            ref.score_features(feats, f["mask"], f["present"]),
            atol=1e-4,
        )
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
    select_backend("onnxruntime", ck, cache_dir=tmp_path / "cache")  # cached exports reused
    assert [p.stat().st_mtime_ns for p in exported] == mtimes
    # dict features with a missing representation == present 0
    f = example_inputs(m, "features", batch=4, seed=2)
    feats = {"rgb": f["feat_0"], "flow": f["feat_1"]}
    pres = np.ones((4, 3), np.float32)
    pres[:, 2] = 0
    np.testing.assert_allclose(
        ort_s.score_features(feats, f["mask"]),
        torch_s.score_features(dict(feats, audio=f["feat_2"]), f["mask"], pres),
        atol=1e-4,
    )
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


@pytest.mark.parametrize("form", ["graphs", "features"])
def test_dynamo_exporter_matches_torch(tmp_path, form):
    """The dynamo exporter path too (its optimiser drops ``x + tiny`` — the standardisation floors
    are Clips); row 1 has a representation absent, so G is diagonal there (zero off-diagonal
    variance)."""
    pytest.importorskip("onnxscript")
    m = _build(**VARIANTS["hadamard2node"])
    try:
        p = export_onnx(m, None, tmp_path / f"{form}.onnx", form=form, exporter="dynamo")
    except RuntimeError as e:  # exporter unavailable in this torch build
        pytest.skip(str(e)[:200])
    s, ref = OrtScorer(p, threads=1), TorchScorer(m)
    ex = example_inputs(m, form, batch=4, seed=3)
    if form == "graphs":
        got, want = s.score_graphs(*_graph_args(ex)), ref.score_graphs(*_graph_args(ex))
    else:
        feats = [ex["feat_0"], ex["feat_1"]]
        got, want = (
            s.score_features(feats, ex["mask"], ex["present"]),
            ref.score_features(feats, ex["mask"], ex["present"]),
        )
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=1e-4)
