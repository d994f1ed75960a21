"""Graph construction, expansion modes and fusion algebra (fusewatch.engines.fusion.graphs + LegoModel.fuse)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusewatch.engines.fusion.graphs import (
    cosine_graph,
    degree_normalize,
    degree_variance,
    expand_graphs,
    fuse_pair,
    np_cosine_graph,
    np_expand,
    pair_list,
    standardize_graph,
    sym_normalize,
)
from fusewatch.engines.fusion.lego import LegoModel

torch.set_default_dtype(torch.float32)


def _rand_graphs(b=3, m=2, n=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, n, m, d, generator=g, dtype=dtype)
    mask = torch.ones(b, n, dtype=dtype)
    mask[1, :2] = 0
    mask[2, :5] = 0
    r = torch.stack([cosine_graph(z[:, :, i], mask) for i in range(m)], dim=1)
    return r, mask


@pytest.mark.parametrize("mode", ["matrix", "hadamard"])
def test_order_zero_is_identity_on_real_nodes(mode):
    r, mask = _rand_graphs()
    e = expand_graphs(r, mask, torch.ones(3, 2, dtype=r.dtype), 2, mode)
    assert e.shape == (3, 2, 3, 6, 6)
    for b in range(3):
        for m in range(2):
            assert torch.equal(e[b, m, 0], torch.diag(mask[b]))
    assert torch.equal(e[0, 0, 0], torch.eye(6, dtype=r.dtype))


def test_matrix_mode_equals_matrix_power_of_sym_normalised_graph():
    r, mask = _rand_graphs()
    e = expand_graphs(r, mask, torch.ones(3, 2, dtype=r.dtype), 4, "matrix")
    for b in range(3):
        for m in range(2):
            rb = r[b, m].numpy()
            rp = np.maximum(rb, 0)
            deg = rp.sum(1)
            with np.errstate(divide="ignore"):
                dinv = np.where(deg > 0, deg**-0.5, 0.0)
            t = dinv[:, None] * rp * dinv[None, :]
            for p in range(1, 5):
                np.testing.assert_allclose(e[b, m, p].numpy(), np.linalg.matrix_power(t, p), atol=1e-12)
            np.testing.assert_allclose(e[b, m].numpy(), np_expand(rb, mask[b].numpy(), 1.0, 4, "matrix"), atol=1e-12)
    # T is symmetric with spectral radius <= 1
    t = sym_normalize(r)
    assert torch.allclose(t, t.transpose(-1, -2))
    assert torch.linalg.eigvalsh(t).abs().max() <= 1 + 1e-9


def test_hadamard_mode_equals_elementwise_powers():
    r, mask = _rand_graphs()
    e = expand_graphs(r, mask, torch.ones(3, 2, dtype=r.dtype), 3, "hadamard")
    for b in range(3):
        mm = torch.outer(mask[b], mask[b])
        for m in range(2):
            h = (r[b, m] + 1) / 2 * mm
            for p in range(1, 4):
                assert torch.allclose(e[b, m, p], h**p, atol=1e-14)
            np.testing.assert_allclose(
                e[b, m].numpy(), np_expand(r[b, m].numpy(), mask[b].numpy(), 1.0, 3, "hadamard"), atol=1e-14
            )


@pytest.mark.parametrize("mode", ["matrix", "hadamard"])
def test_missing_representation_keeps_only_identity(mode):
    r, mask = _rand_graphs()
    present = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=r.dtype)
    e = expand_graphs(r, mask, present, 2, mode)
    assert torch.count_nonzero(e[0, 1, 1:]) == 0 and torch.count_nonzero(e[1, 0, 1:]) == 0
    assert torch.equal(e[0, 1, 0], torch.diag(mask[0]))
    assert torch.count_nonzero(e[0, 0, 1:]) > 0


def test_padded_and_zero_rows_are_zero_and_finite():
    z = torch.randn(1, 5, 4, dtype=torch.float64)
    z[0, 3] = 0  # all-zero feature -> zero degree node
    mask = torch.tensor([[0, 1, 1, 1, 1]], dtype=torch.float64)
    r = cosine_graph(z, mask)
    assert torch.count_nonzero(r[0, 0]) == 0 and torch.count_nonzero(r[0, :, 0]) == 0
    assert torch.count_nonzero(r[0, 3]) == 0
    for mode in ("matrix", "hadamard"):
        e = expand_graphs(r[:, None], mask, torch.ones(1, 1, dtype=r.dtype), 3, mode)
        assert torch.isfinite(e).all()
        assert torch.count_nonzero(e[0, 0, :, 0, :]) == 0 and torch.count_nonzero(e[0, 0, :, :, 0]) == 0
    np.testing.assert_allclose(np_cosine_graph(z[0].numpy(), mask[0].numpy()), r[0].numpy(), atol=1e-14)


def test_pair_list():
    assert pair_list(1) == [(0, 0)]
    assert pair_list(2) == [(0, 1)]
    assert pair_list(3) == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError):
        pair_list(0)


@pytest.mark.parametrize("mode", ["matrix", "hadamard"])
@pytest.mark.parametrize("pq", [(2, 2), (1, 3), (3, 0)])
def test_fusion_outer_product_factorises(mode, pq):
    p_, q_ = pq
    dims = {"a": 7, "b": 4}
    model = LegoModel(list(dims), dims, 6, p_, q_, mode).double()
    a = torch.randn(p_ + 1, dtype=torch.float64)
    b = torch.randn(q_ + 1, dtype=torch.float64)
    with torch.no_grad():
        model.A.copy_(torch.outer(a, b)[None])
    r, mask = _rand_graphs(dtype=torch.float64)
    e = model.expansions(r, mask, torch.ones(3, 2, dtype=r.dtype))
    g = model.fuse(e)
    ea = (a[None, :, None, None] * e[:, 0, : p_ + 1]).sum(1)
    eb = (b[None, :, None, None] * e[:, 1, : q_ + 1]).sum(1)
    assert torch.allclose(g, ea * eb, atol=1e-12)
    assert torch.allclose(g, fuse_pair(e[:, 0, : p_ + 1], e[:, 1, : q_ + 1], model.A[0]), atol=1e-12)


def test_multi_pair_average_and_single_rep_self_fusion():
    dims = {"a": 5, "b": 6, "c": 3}
    model = LegoModel(list(dims), dims, 6, 2, 1, "matrix").double()
    with torch.no_grad():
        model.A.normal_()
    r, mask = _rand_graphs(m=3, dtype=torch.float64)
    e = model.expansions(r, mask, torch.ones(3, 3, dtype=r.dtype))
    ref = sum(fuse_pair(e[:, a, :3], e[:, b, :2], model.A[k]) for k, (a, b) in enumerate(model.pairs)) / 3
    assert torch.allclose(model.fuse(e), ref, atol=1e-12)
    for k, (a, b) in enumerate(model.pairs):
        assert torch.allclose(model.fuse(e, pair=k), fuse_pair(e[:, a, :3], e[:, b, :2], model.A[k]), atol=1e-12)
        assert torch.allclose(model.fuse(e, pair=(a, b)), model.fuse(e, pair=k))
    one = LegoModel(["a"], dims, 6, 2, 2, "hadamard").double()
    e1 = one.expansions(r[:, :1], mask, torch.ones(3, 1, dtype=r.dtype))
    assert one.pairs == [(0, 0)]
    assert torch.allclose(one.fuse(e1), fuse_pair(e1[:, 0], e1[:, 0], one.A[0]), atol=1e-12)


def test_softplus_coefficients_positive_and_initialised_equal():
    dims = {"a": 5, "b": 6}
    m = LegoModel(list(dims), dims, 6, 2, 2, softplus=True)
    c = m.coefficients()
    assert (c > 0).all()
    assert torch.allclose(c, torch.full_like(c, 1 / 9), atol=1e-6)


def test_degree_variance():
    g = torch.zeros(1, 4, 4)
    g[0, 2, :] = 1.0
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    # degrees of real nodes: 0, 4, 0 -> mean 4/3, var = ((16/9)*2 + (64/9)) / 3
    assert torch.allclose(degree_variance(g, mask), torch.tensor([(32 / 9 + 64 / 9) / 3]))


def test_standardize_graph_masking_and_degenerate_windows():
    r, mask = _rand_graphs(b=3, m=1, n=6)
    g = r[:, 0] + 0.5
    out = standardize_graph(g, mask)
    mm = (mask.unsqueeze(-1) * mask.unsqueeze(-2)).bool()
    assert torch.count_nonzero(out[~mm]) == 0
    # entries of padded nodes do not change the real entries
    junk = torch.where(mm, g, torch.randn(g.shape, dtype=g.dtype) * 100)
    assert torch.equal(standardize_graph(junk * mm, mask), out)
    # one real node (row 2) / a constant window: finite, no float-noise blow-up
    assert torch.isfinite(out).all() and out[2].abs().max() == 0
    const = torch.full((1, 6, 6), 0.3, dtype=torch.float32) + torch.randn(1, 6, 6) * 1e-8
    assert standardize_graph(const, torch.ones(1, 6)).abs().max() < 1e-2
    # invariant to the scale and offset of G (off-diagonal and diagonal separately)
    eye = torch.eye(6, dtype=g.dtype)
    g2 = 7.0 * g + 3.0 + 2.0 * eye
    torch.testing.assert_close(standardize_graph(g2 * mm, mask), out)


def test_degree_normalize_rows():
    r, mask = _rand_graphs(b=3, m=1, n=6)
    t = sym_normalize(r[:, 0])
    p = degree_normalize(t)
    rows = p.sum(dim=-1)
    torch.testing.assert_close(rows[mask > 0], torch.ones_like(rows[mask > 0]))
    assert torch.count_nonzero(rows[mask == 0]) == 0
    signed = torch.randn(2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(degree_normalize(signed).abs().sum(-1), torch.ones(2, 5, dtype=torch.float64))
