"""Fusion models (shapes, masking invariance, missing representations, training hooks) and
checkpoints."""
from __future__ import annotations

import math
import pickle

import pytest
import torch

from engines.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from engines.model import LegoModel, build_model
from stream.config import ModelConfig

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


ALL = [("lego", {}), ("lego", {"expansion": "hadamard"}), ("lego", {"proj_dim": 5, "softplus": True}),
       ("lego", {"order_p": 0, "order_q": 3}), ("concat", {}), ("add", {}), ("mtn", {}),
       ("mtn", {"proj_dim": 16})]


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


def test_lego_graphs_entry_ignores_padded_graph_entries():
    m = _model()
    f, mask = _feats(("rgb", "flow")), _mask()
    r = m.base_graphs(f, mask)
    ref = m.forward_graphs(r, mask)
    torch.testing.assert_close(ref, m(f, mask), rtol=0, atol=1e-6)
    junk = torch.randn(r.shape) * 5
    mm = (mask.unsqueeze(-1) * mask.unsqueeze(-2)).unsqueeze(1).bool()
    assert torch.equal(m.forward_graphs(torch.where(mm, r, junk), mask), ref)


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

@pytest.mark.parametrize("fusion,kw", [("lego", {"proj_dim": 4, "softplus": True}), ("mtn", {}),
                                       ("concat", {}), ("add", {})])
def test_checkpoint_roundtrip(tmp_path, fusion, kw):
    m = _model(fusion, ("rgb", "audio"), **kw)
    p = tmp_path / "m.pt"
    written = save_checkpoint(m, p, {"epoch": 3, "auc": 0.91, "notes": ["x", None]})
    raw = torch.load(p, weights_only=True)
    assert set(raw) == {"format", "format_version", "config", "build_kwargs", "dims", "representations",
                        "state_dict", "meta"}
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
