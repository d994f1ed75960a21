"""Fusion models (shapes, masking invariance, missing representations, training hooks) and
checkpoints."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from fusewatch.engines.fusion.factory import build_model, config_dict
from fusewatch.engines.fusion.graphs import standardize_graph
from fusewatch.engines.fusion.lego import LegoModel
from fusewatch.engines.training.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from fusewatch.stream.config import ModelConfig

DIMS = {"rgb": 24, "flow": 16, "audio": 6}
N = 8


def _model(fusion="lego", reps=("rgb", "flow"), **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(fusion=fusion, window=N, representations=list(reps), **kw)
    return build_model(cfg, DIMS).eval()


def _feats(reps, b=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {r: torch.randn(b, N, DIMS[r], generator=g) for r in reps}


def _mask(b=4):
    mask = torch.ones(b, N)
    mask[1, :3] = 0
    mask[2, : N - 1] = 0
    mask[3, :1] = 0
    return mask


ALL = [
    ("lego", {}),
    ("lego", {"expansion": "hadamard"}),
    ("lego", {"proj_dim": 5, "softplus": True}),
    ("lego", {"order_p": 0, "order_q": 3}),
    ("lego", {"node_dim": 0}),
    ("lego", {"node_dim": 3, "expansion": "hadamard", "proj_dim": 4}),
    ("concat", {}),
    ("add", {}),
    ("mtn", {}),
    ("mtn", {"proj_dim": 16}),
]


@pytest.mark.parametrize("fusion,kw", ALL)
@pytest.mark.parametrize("reps", [("rgb",), ("rgb", "flow"), ("rgb", "flow", "audio")])
def test_shapes_and_range(fusion, kw, reps):
    m = _model(fusion, reps, **kw)
    f, mask = _feats(reps), _mask()
    s = m(f, mask)
    assert s.shape == (4, N) and s.dtype == torch.float32
    assert ((s >= 0) & (s <= 1)).all()
    assert (s[mask == 0] == 0).all() and (s[mask == 1] > 0).all()
    # list input in representation order == dict input
    assert torch.equal(m([f[r] for r in reps], mask), s)
    # bool mask accepted
    assert torch.equal(m(f, mask.bool()), s)


@pytest.mark.parametrize("fusion,kw", ALL)
def test_padded_nodes_do_not_change_real_scores(fusion, kw):
    reps = ("rgb", "flow", "audio")
    m = _model(fusion, reps, **kw)
    f, mask = _feats(reps), _mask()
    ref = m(f, mask)
    g = torch.Generator().manual_seed(7)
    for trial in range(3):
        f2 = {}
        for r, v in f.items():
            junk = torch.randn(v.shape, generator=g) * 10 ** (trial * 3)
            if trial == 2:
                junk[0::2] = float("nan")
                junk[1::2] = float("inf")
            f2[r] = torch.where(mask.bool().unsqueeze(-1), v, junk)
        out = m(f2, mask)
        assert torch.isfinite(out).all()
        assert torch.equal(out, ref)


@pytest.mark.parametrize("node_dim", [0, 16])
def test_lego_graphs_entry_ignores_padded_graph_entries(node_dim):
    m = _model(node_dim=node_dim)
    f, mask = _feats(("rgb", "flow")), _mask()
    r = m.base_graphs(f, mask)
    u = m.node_signals(f, mask) if node_dim else None
    ref = m.forward_graphs(r, mask, None, u)
    torch.testing.assert_close(ref, m(f, mask), rtol=0, atol=1e-6)
    junk = torch.randn(r.shape) * 5
    mm = (mask.unsqueeze(-1) * mask.unsqueeze(-2)).unsqueeze(1).bool()
    if node_dim:
        assert u.shape == (4, 2, N, node_dim)
        assert torch.count_nonzero(u[2, :, :-1]) == 0  # padded nodes: no node signal
        ujunk = torch.full(u.shape, float("nan"))
        u = torch.where(mask.bool().reshape(4, 1, N, 1), u, ujunk)
        with pytest.raises(ValueError, match="needs u"):
            m.forward_graphs(r, mask)
        with pytest.raises(ValueError, match="u: expected shape"):
            m.forward_graphs(r, mask, None, u[:, :, :, :2])
    assert torch.equal(m.forward_graphs(torch.where(mm, r, junk), mask, None, u), ref)
    # present is applied to the node signals too: a missing representation's U does not matter
    present = torch.tensor([[1.0, 0.0]] * 4)
    ref2 = m(f, mask, present)
    if node_dim:
        u2 = u.clone()
        u2[:, 1] = torch.randn(4, N, node_dim)
        torch.testing.assert_close(m.forward_graphs(r, mask, present, u2), ref2, rtol=0, atol=1e-6)


def test_head_input_is_well_conditioned():
    """The head sees G standardised over the real nodes (not O(1/N²) off-diagonal entries next to
    an O(1) diagonal): real off-diagonal and diagonal entries each have mean 0 and std 1/√n
    (rows of about unit norm) whatever N, the mode and the window fill; a constant part (the
    Hadamard diagonal) stays ~0 instead of blowing float noise up."""
    big = 32
    for exp in ("matrix", "hadamard"):
        torch.manual_seed(0)
        cfg = ModelConfig(window=big, representations=["rgb", "flow"], expansion=exp, node_dim=0)
        new = build_model(cfg, DIMS).eval()
        old = build_model(cfg, DIMS, graph_norm="none").eval()
        old.load_state_dict(new.state_dict())
        g = torch.Generator().manual_seed(3)
        f = {
            r: torch.randn(16, big, DIMS[r], generator=g) + torch.randn(16, 1, DIMS[r], generator=g)
            for r in ("rgb", "flow")
        }
        mask = torch.ones(16, big)
        mask[8:, :20] = 0
        with torch.no_grad():
            gf = new.fused_graph(f, mask)
            gh = new.head_graph(gf, mask)
            assert torch.equal(old.head_graph(gf, mask), gf)
        for b, n in ((0, big), (8, big - 20)):
            real = mask[b].bool()
            sub = gh[b][real][:, real]
            eye = torch.eye(n, dtype=torch.bool)
            off, diag = sub[~eye], sub[eye]
            assert abs(float(off.mean())) < 1e-5
            assert float(off.std(unbiased=False)) == pytest.approx(n**-0.5, rel=1e-3)
            if exp == "matrix":
                assert abs(float(diag.mean())) < 1e-5
                assert float(diag.std(unbiased=False)) == pytest.approx(n**-0.5, rel=1e-2)
            else:  # (R+1)/2 has a constant diagonal: nothing to amplify but float noise
                assert float(diag.abs().max()) < 1e-3
            assert torch.count_nonzero(gh[b][~real]) == 0 and torch.count_nonzero(gh[b][:, ~real]) == 0
            if exp == "matrix":  # the original head's input: off-diagonal ~1/N², invisible next to the diagonal
                raw = gf[b][real][:, real]
                assert float(raw[~eye].abs().max()) < 0.05 * float(raw[eye].abs().min())


def test_standardize_graph_matches_definition():
    g = torch.rand(2, 5, 5, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.float64)
    out = standardize_graph(g, mask, rel=0.0, eps=0.0)
    for b in range(2):
        idx = mask[b].bool()
        sub = g[b][idx][:, idx]
        eye = torch.eye(sub.shape[0], dtype=torch.bool)
        off, dg = sub[~eye], sub[eye]
        ref = torch.zeros_like(sub)
        ref[~eye] = (off - off.mean()) / off.std(unbiased=False)
        ref[eye] = (dg - dg.mean()) / dg.std(unbiased=False)
        torch.testing.assert_close(out[b][idx][:, idx], ref)


def test_node_branch_sees_absolute_content():
    """Scaling every clip's features leaves every cosine graph (hence G) unchanged: a head on the
    rows of G alone cannot tell the two windows apart, the node branch can (a video abnormal
    throughout looks like a normal one in relation space)."""
    f, mask = _feats(("rgb", "flow")), _mask()
    f2 = {k: 3.0 * v + 0.0 for k, v in f.items()}
    rel = _model(node_dim=0)
    node = _model(node_dim=8)
    torch.testing.assert_close(rel.fused_graph(f, mask), rel.fused_graph(f2, mask))
    torch.testing.assert_close(rel(f, mask), rel(f2, mask))
    with torch.no_grad():
        d = (node(f, mask) - node(f2, mask)).abs()
    assert float(d[mask.bool()].min()) > 1e-4
    assert node.node_enc is not None and rel.node_enc is None
    assert node.fc1.in_features == N + 2 * 8 and rel.fc1.in_features == N
    assert set(node.node_encoders()) == {"rgb", "flow"} and rel.node_encoders() == {}
    x = torch.randn(3, DIMS["rgb"])
    np.testing.assert_allclose(node.node_encoders()["rgb"](x.numpy()), node.node_enc[0](x).detach().numpy(), atol=1e-5)


def test_node_dim_config():
    assert config_dict(ModelConfig())["node_dim"] == 16
    assert config_dict({"window": 8, "representations": ["rgb"]})["node_dim"] == 16
    assert config_dict({"window": 8, "representations": ["rgb"], "node_dim": 0})["node_dim"] == 0
    with pytest.raises(ValueError):
        config_dict({"window": 8, "representations": ["rgb"], "node_dim": -1})
    m = _model()
    assert m.node_dim == 16 and m.config["node_dim"] == 16 and m.build_kwargs["graph_norm"] == "standardize"


@pytest.mark.parametrize("fusion,kw", ALL)
def test_missing_representation(fusion, kw):
    reps = ("rgb", "flow", "audio")
    m = _model(fusion, reps, **kw)
    f, mask = _feats(reps), _mask()
    present = torch.ones(4, 3)
    present[:, 2] = 0
    ref = m(f, mask, present)
    # absent key == present 0; the absent representation's values do not matter
    assert torch.equal(m({k: v for k, v in f.items() if k != "audio"}, mask), ref)
    f2 = dict(f, audio=torch.randn(4, N, DIMS["audio"]))
    assert torch.equal(m(f2, mask, present), ref)
    assert not torch.allclose(m(f, mask), ref)


def test_lego_missing_representation_falls_back_to_identity():
    m = LegoModel(["rgb", "flow"], DIMS, N, 2, 2, "matrix").double()
    with torch.no_grad():
        m.A.normal_()
    f = {k: v.double() for k, v in _feats(("rgb", "flow")).items()}
    mask = _mask().double()
    present = torch.tensor([[1.0, 0.0]] * 4, dtype=torch.float64)
    g = m.fused_graph(f, mask, present)
    e = m.expansions(m.base_graphs(f, mask), mask, torch.ones(4, 2, dtype=torch.float64))
    eye = torch.diag_embed(mask)
    # E_b^q = 0 for q >= 1 -> G = Σ_p A_p0 E_a^p ⊙ I
    ref = sum(m.A[0, p, 0] * e[:, 0, p] for p in range(3)) * eye
    assert torch.allclose(g, ref, atol=1e-12)


def test_one_real_node_and_empty_window_are_finite():
    for kw in ({}, {"expansion": "hadamard"}, {"proj_dim": 4}):
        m = _model(**kw)
        f = _feats(("rgb", "flow"), b=2)
        mask = torch.zeros(2, N)
        mask[0, -1] = 1
        s = m(f, mask)
        assert torch.isfinite(s).all() and s[1].eq(0).all() and s[0, -1] > 0


def test_fused_graph_training_hooks_and_gradients():
    m = _model(reps=("rgb", "flow", "audio"), proj_dim=4, softplus=True).train()
    f, mask = _feats(("rgb", "flow", "audio")), _mask()
    s, g = m.forward_with_graph(f, mask)
    assert g.shape == (4, N, N)
    assert torch.allclose(g, m.fused_graph(f, mask))
    assert torch.count_nonzero(g[2, :-1]) == 0  # padded rows are empty
    (s.sum() + g.sum()).backward()
    assert m.A.grad is not None and m.A.grad.abs().sum() > 0
    assert m.proj[0].weight.grad is not None
    assert all(e.weight.grad is not None and e.weight.grad.abs().sum() > 0 for e in m.node_enc)
    # random pair per step while training
    m.random_pair = True
    per_pair = [m(f, mask, pair=k) for k in range(3)]
    for _ in range(5):
        out = m(f, mask)
        assert any(torch.equal(out, p) for p in per_pair)
    m.eval()
    assert not any(torch.equal(m(f, mask), p) for p in per_pair)


def test_input_validation():
    m = _model()
    f, mask = _feats(("rgb", "flow")), _mask()
    with pytest.raises(ValueError, match="feats\\['rgb'\\]"):
        m(dict(f, rgb=torch.randn(4, N, 3)), mask)
    with pytest.raises(ValueError, match="mask"):
        m(f, torch.ones(4, N + 1))
    with pytest.raises(ValueError, match="expected 2"):
        m([f["rgb"]], mask)
    with pytest.raises(ValueError, match="no dimension"):
        build_model(ModelConfig(representations=["rgb", "nope"]), DIMS)
    with pytest.raises(ValueError, match="pair"):
        m(f, mask, pair=(0, 0))


# --------------------------------------------------------------------------------- checkpoints ----


@pytest.mark.parametrize(
    "fusion,kw",
    [("lego", {"proj_dim": 4, "softplus": True}), ("lego", {"node_dim": 0}), ("mtn", {}), ("concat", {}), ("add", {})],
)
def test_checkpoint_roundtrip(tmp_path, fusion, kw):
    m = _model(fusion, ("rgb", "audio"), **kw)
    p = tmp_path / "m.pt"
    written = save_checkpoint(m, p, {"epoch": 3, "auc": 0.91, "notes": ["x", None]})
    raw = torch.load(p, weights_only=True)
    assert set(raw) == {
        "format",
        "format_version",
        "config",
        "build_kwargs",
        "dims",
        "representations",
        "state_dict",
        "meta",
    }
    assert raw["representations"] == ["rgb", "audio"]
    m2, meta = load_model(p)
    assert meta["model_version"] == written["model_version"] and len(meta["model_version"]) == 16
    assert meta["epoch"] == 3 and meta["fusion"] == fusion and meta["window"] == N
    assert meta["dims"] == {"rgb": 24, "audio": 6}
    f, mask = _feats(("rgb", "audio")), _mask()
    assert torch.equal(m2(f, mask), m(f, mask))
    assert not m2.training


def test_model_version_changes_with_weights(tmp_path):
    m = _model()
    v1 = save_checkpoint(m, tmp_path / "a.pt")["model_version"]
    with torch.no_grad():
        m.A.add_(1.0)
    assert save_checkpoint(m, tmp_path / "b.pt")["model_version"] != v1


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_checkpoint_rejects_pickles_and_garbage(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "fusewatch-checkpoint", "x": _Evil()}, p)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(p)
    q = tmp_path / "junk.pt"
    q.write_bytes(pickle.dumps({"a": 1}) + b"garbage")
    with pytest.raises(CheckpointError):
        load_model(q)
    r = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, r)
    with pytest.raises(CheckpointError, match="not a fusewatch checkpoint"):
        read_checkpoint(r)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(TypeError):
        save_checkpoint(_model(), tmp_path / "bad.pt", {"obj": object()})


def test_checkpoint_tamper_detected(tmp_path):
    p = tmp_path / "m.pt"
    save_checkpoint(_model(), p)
    raw = torch.load(p, weights_only=True)
    raw["state_dict"]["A"] = raw["state_dict"]["A"] + 1
    torch.save(raw, p)
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(p)
    m, meta = load_model(p, verify=False)
    assert isinstance(m, LegoModel) and math.isfinite(float(m.A.detach().sum()))


@pytest.mark.parametrize("fusion", ["lego", "concat"])
def test_checkpoint_from_before_the_node_branch_loads_unchanged(tmp_path, fusion):
    """A checkpoint whose config has no ``node_dim`` (saved before the node branch) loads as it was
    trained — no node branch and, for LEGO, the raw-G head — with the same model_version."""
    torch.manual_seed(0)
    cfg = ModelConfig(fusion=fusion, window=N, representations=["rgb", "flow"], node_dim=0)
    kw = {"graph_norm": "none"} if fusion == "lego" else {}
    old = build_model(cfg, DIMS, **kw).eval()
    old.config.pop("node_dim")
    old.build_kwargs.pop("graph_norm", None)
    p = tmp_path / "old.pt"
    written = save_checkpoint(old, p)
    raw = torch.load(p, weights_only=True)
    assert "node_dim" not in raw["config"] and "graph_norm" not in raw["build_kwargs"]
    m, meta = load_model(p)
    assert meta["model_version"] == written["model_version"] and meta["node_dim"] == 0
    f, mask = _feats(("rgb", "flow")), _mask()
    assert torch.equal(m(f, mask), old(f, mask))
    if fusion == "lego":
        assert m.graph_norm == "none" and m.node_enc is None
        # re-saving keeps it a legacy checkpoint
        save_checkpoint(m, tmp_path / "again.pt")
        m2, meta2 = load_model(tmp_path / "again.pt")
        assert m2.graph_norm == "none" and meta2["model_version"] == written["model_version"]
