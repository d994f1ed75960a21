"""Incremental per-camera graphs == batch recompute (ring wrap-around, missing representations,
learned projection, Hadamard cache) and end-to-end graphs-in scores == features-in scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.fusion.graphs import expand_graphs, np_cosine_graph
from fusewatch.engines.fusion.numpy_ops import numpy_linear
from fusewatch.engines.serving.state import CameraGraphState, GraphStateStore, IncrementalGraph
from fusewatch.stream.config import ModelConfig

DIMS = {"rgb": 20, "flow": 12, "audio": 5}


def _stream(rng, steps, names, p_missing=0.0, absent=(), dtype=np.float64):
    out = []
    for _ in range(steps):
        clip = {}
        for n in names:
            if n in absent or rng.random() < p_missing:
                continue
            clip[n] = rng.standard_normal(DIMS[n]).astype(dtype)
        out.append(clip)
    return out


def _encoders(k, seed=0, names=tuple(DIMS)):
    """Random numpy node encoders (affine maps d_m → k) like LegoModel.node_encoders()."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for nm in names:
        lin = torch.nn.Linear(DIMS[nm], k)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g))
        out[nm] = numpy_linear(lin)
    return out


def _batch_window(clips, names, n, dtype, projectors=None, encoders=None):
    """Reference: recompute the whole window from the raw features of the last n clips
    (+ node signals U M×N×k when ``encoders`` are given: 0 for padded/missing clips)."""
    tail = clips[-n:]
    pad = n - len(tail)
    mask = np.zeros(n, dtype)
    mask[pad:] = 1
    rs, present, us = [], [], []
    for nm in names:
        f = np.zeros((n, DIMS[nm]), dtype)
        for i, c in enumerate(tail):
            if nm in c:
                f[pad + i] = c[nm]
        proj = (projectors or {}).get(nm)
        rs.append(np_cosine_graph(f, mask, proj))
        present.append(float(any(nm in c for c in tail)))
        if encoders:
            has = np.any(f != 0, axis=-1, keepdims=True)
            us.append(np.where(has, encoders[nm](f), 0.0))
    out = (np.stack(rs), mask, np.array(present))
    return out + (np.stack(us),) if encoders else out


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-6), (np.float32, 1e-5)])
@pytest.mark.parametrize("n", [1, 5, 8])
@pytest.mark.parametrize("k", [0, 3])
def test_incremental_equals_recompute_with_wraparound(dtype, tol, n, k):
    rng = np.random.default_rng(n)
    names = list(DIMS)
    clips = _stream(rng, 4 * n + 3, names, p_missing=0.2, absent=("audio",) if n == 5 else (), dtype=dtype)
    enc = _encoders(k) if k else None
    st = CameraGraphState(names, n, DIMS, dtype=dtype, node_encoders=enc)
    assert st.node_dim == k and len(st.window()) == (4 if k else 3)
    for t, clip in enumerate(clips, 1):
        st.push(clip)
        win = st.window()
        r, mask, present = win[:3]
        assert r.dtype == np.float32 and r.shape == (3, n, n) and mask.shape == (n,) and present.shape == (3,)
        ref = _batch_window(clips[:t], names, n, dtype, encoders=enc)
        rr, rm, rp = ref[:3]
        np.testing.assert_allclose(r, rr, atol=tol, rtol=0)
        np.testing.assert_array_equal(mask, rm)
        np.testing.assert_array_equal(present, rp)
        if k:
            assert len(win) == 4 and win[3].dtype == np.float32 and win[3].shape == (3, n, k)
            np.testing.assert_allclose(win[3], ref[3], atol=tol * 10, rtol=tol)
            assert not win[3][:, : n - min(t, n)].any()  # front padding: no node signal
        assert len(st) == min(t, n) and st.count == t
        for g in st.graphs:  # the ring-order internal state too (float64 exactness)
            if dtype == np.float64:
                np.testing.assert_allclose(g.graph(), rr[st.graphs.index(g)], atol=1e-12)
    if n == 5:
        assert present[2] == 0 and not r[2].any()


def test_missing_whole_window_then_back():
    names = ["rgb", "audio"]
    st = CameraGraphState(names, 4, DIMS, dtype=np.float64)
    rng = np.random.default_rng(0)
    clips = [{"rgb": rng.standard_normal(20), "audio": rng.standard_normal(5)} for _ in range(3)]
    clips += [{"rgb": rng.standard_normal(20)} for _ in range(5)]
    clips += [{"rgb": rng.standard_normal(20), "audio": rng.standard_normal(5)}]
    for t, c in enumerate(clips, 1):
        st.push(c)
        r, mask, present = st.window()
        rr, _, rp = _batch_window(clips[:t], names, 4, np.float64)
        np.testing.assert_allclose(r, rr, atol=1e-12)
        np.testing.assert_array_equal(present, rp)
        if 7 <= t <= 8:
            assert present[1] == 0
    assert present[1] == 1 and np.count_nonzero(r[1]) == 1  # only the newest clip's self-loop


@pytest.mark.parametrize("expansion,node_dim", [("matrix", 0), ("matrix", 5), ("hadamard", 16)])
def test_projection_state_matches_model_and_scores(expansion, node_dim):
    torch.manual_seed(0)
    names = ["rgb", "flow", "audio"]
    n = 6
    model = build_model(
        ModelConfig(window=n, representations=names, proj_dim=4, expansion=expansion, node_dim=node_dim), DIMS
    ).eval()
    st32 = CameraGraphState.from_model(model)
    st64 = CameraGraphState.from_model(model, dtype=np.float64)
    assert st32.node_dim == node_dim
    rng = np.random.default_rng(3)
    clips = _stream(rng, 3 * n + 2, names, p_missing=0.25, dtype=np.float32)
    for t, c in enumerate(clips, 1):
        st32.push(c)
        st64.push({k: v.astype(np.float64) for k, v in c.items()})
        w32, w64 = st32.window(), st64.window()
        r32, mask, present = w32[:3]
        r64 = w64[0]
        u32 = torch.from_numpy(w32[3][None]) if node_dim else None
        # float64 state == numpy batch recompute through the same projectors / node encoders
        ref = _batch_window(
            [{k: v.astype(np.float64) for k, v in cc.items()} for cc in clips[:t]],
            names,
            n,
            np.float64,
            model.projectors(),
            model.node_encoders(),
        )
        np.testing.assert_allclose(r64, ref[0], atol=1e-6)
        if node_dim:
            np.testing.assert_allclose(w64[3], ref[3], atol=1e-6)
        # float32 state == the torch model's own batch graph construction
        feats = {}
        tail = clips[:t][-n:]
        for nm in names:
            f = np.zeros((1, n, DIMS[nm]), np.float32)
            for i, cc in enumerate(tail):
                if nm in cc:
                    f[0, n - len(tail) + i] = cc[nm]
            feats[nm] = torch.from_numpy(f)
        tm = torch.from_numpy(mask[None])
        tp = torch.from_numpy(present[None])
        with torch.no_grad():
            rb = model.base_graphs(feats, tm)[0].numpy()
            np.testing.assert_allclose(r32, rb, atol=1e-5)
            if node_dim:
                np.testing.assert_allclose(w32[3], model.node_signals(feats, tm)[0].numpy(), atol=1e-5)
            s_graphs = model.forward_graphs(torch.from_numpy(r32[None]), tm, tp, u32)
            s_feats = model(feats, tm, tp)
        np.testing.assert_allclose(s_graphs.numpy(), s_feats.numpy(), atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_hadamard_cache_equals_elementwise_powers(dtype, tol):
    names = ["rgb", "flow"]
    n, order = 5, 3
    st = CameraGraphState(names, n, DIMS, dtype=dtype, hadamard_order=order)
    rng = np.random.default_rng(5)
    for _t, c in enumerate(_stream(rng, 3 * n + 1, names, p_missing=0.2, dtype=dtype), 1):
        st.push(c)
        r, mask, _ = st.window()
        h = st.hadamard_window()
        assert h.shape == (2, order, n, n)
        e = expand_graphs(
            torch.from_numpy(r[None]).double(),
            torch.from_numpy(mask[None]).double(),
            torch.ones(1, 2, dtype=torch.float64),
            order,
            "hadamard",
        )[0, :, 1:].numpy()
        np.testing.assert_allclose(h, e, atol=max(tol, 1e-6 if dtype == np.float32 else 0))


def test_single_graph_api_and_validation():
    g = IncrementalGraph(3, dim=4, name="x")
    with pytest.raises(ValueError, match="dim 4"):
        g.push(np.ones(5))
    with pytest.raises(ValueError, match="1-D"):
        g.push(np.ones((1, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        g.push(np.array([1, np.nan, 0, 0]))
    assert g.count == 0
    g.push(np.zeros(4))  # all-zero == missing
    g.push(None)
    g.push(np.array([1.0, 0, 0, 0]))
    assert not g.has[0] and not g.has[1] and g.has[2] and g.present()
    np.testing.assert_allclose(g.graph()[2, 2], 1.0, atol=1e-6)
    with pytest.raises(RuntimeError):
        g.hadamard_powers()
    st = CameraGraphState(["rgb", "flow"], 3, DIMS)
    with pytest.raises(ValueError):
        st.push({"rgb": np.ones(20), "flow": np.ones(3)})
    assert st.count == 0  # nothing committed on a bad clip
    st.push({"rgb": np.ones(20), "unknown": np.ones(2)})
    assert st.count == 1
    st.reset()
    assert st.count == 0 and not st.window()[0].any()


def test_store_batch_and_eviction():
    names = ["rgb", "flow"]
    store = GraphStateStore(names, 4, DIMS, max_cameras=2)
    rng = np.random.default_rng(1)
    for cam, k in (("a", 2), ("b", 5), ("c", 1)):
        for _ in range(k):
            store.push(cam, {nm: rng.standard_normal(DIMS[nm]) for nm in names})
    assert store.cameras() == ["b", "c"] and "a" not in store
    r, mask, present = store.batch(["c", "b"])
    assert r.shape == (2, 2, 4, 4) and mask.tolist() == [[0, 0, 0, 1], [1, 1, 1, 1]]
    np.testing.assert_array_equal(r[1], store.get("b").window()[0])
    assert present.tolist() == [[1, 1], [1, 1]]


def test_node_signals_api_and_store_batch():
    names = ["rgb", "flow"]
    enc = _encoders(4, names=names)
    with pytest.raises(ValueError, match="no encoder"):
        CameraGraphState(names, 3, DIMS, node_encoders={"rgb": enc["rgb"]})
    st = CameraGraphState(names, 3, DIMS, node_encoders=enc)
    with pytest.raises(ValueError):
        st.push({"rgb": np.ones(20), "flow": np.ones(3)})
    assert st.count == 0 and not st.window()[3].any()  # nothing committed on a bad clip
    with pytest.raises(ValueError, match="expected 4 arrays"):
        st.window(out=CameraGraphState(names, 3, DIMS).empty_window())
    x = np.arange(20, dtype=np.float32) / 20
    st.push({"rgb": x})  # flow missing for this clip
    st.push({"rgb": np.zeros(20), "flow": np.ones(12)})  # all-zero rgb = missing
    u = st.window()[3]
    np.testing.assert_allclose(u[0, 1], enc["rgb"](x), atol=1e-5)
    assert not u[1, 1].any() and not u[0, 2].any() and not u[:, 0].any()
    np.testing.assert_allclose(u[1, 2], enc["flow"](np.ones(12, np.float32)), atol=1e-5)
    st.reset()
    assert st.count == 0 and not st.window()[3].any()
    store = GraphStateStore(names, 4, DIMS, node_encoders=enc)
    rng = np.random.default_rng(2)
    for cam, k in (("a", 2), ("b", 6)):
        for _ in range(k):
            store.push(cam, {nm: rng.standard_normal(DIMS[nm]) for nm in names})
    r, mask, present, ub = store.batch(["a", "b"])
    assert ub.shape == (2, 2, 4, 4) and store.node_dim == 4
    for i, cam in enumerate(("a", "b")):
        np.testing.assert_array_equal(ub[i], store.get(cam).window()[3])
        np.testing.assert_array_equal(r[i], store.get(cam).window()[0])
