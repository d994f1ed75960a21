"""Hostile or broken model files given to the user-facing loaders (adversarial review of model
files, /work/exp/s20/hostile2/FINDINGS.md): every one ends in one CheckpointError line naming the
file and the problem — nothing unpickled, nothing sized from an untrusted number before it is
checked, no traceback, no engine that starts and then dead-letters every record."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper

from fusewatch.cli import main
from fusewatch.engines.export.onnx import export_onnx
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.model_features import features_for_model, read_model_meta
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.training.checkpoint import load_model, save_checkpoint
from fusewatch.errors import CheckpointError
from fusewatch.stream.config import ModelConfig, load_config


class _Evil:
    def __init__(self, mark: Path):
        self.mark = mark

    def __reduce__(self):
        return (os.system, (f"touch {self.mark}",))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = build_model(ModelConfig(window=8, representations=["flow"], node_dim=4), {"flow": 80}).eval()
    save_checkpoint(m, d / "good.pt")
    model, meta = load_model(d / "good.pt")
    export_onnx(model, meta, d / "good.onnx", form="graphs")
    export_onnx(model, meta, d / "features.onnx", form="features")
    c = build_model(ModelConfig(window=8, fusion="concat", representations=["flow"]), {"flow": 80}).eval()
    save_checkpoint(c, d / "concat.pt")
    return d


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, overrides=[("engine.backend", "onnxruntime")])


def _one_line(e: BaseException, path: Path) -> str:
    s = str(e)
    assert "\n" not in s and len(s) < 600 and str(path) in s, s
    return s


def _ckpt(base: Path, name: str, f, src: str = "good.pt", drop_version: bool = True) -> Path:
    ck = torch.load(base / src, weights_only=True)
    ck = copy.deepcopy(ck)
    if drop_version:
        ck["meta"].pop("model_version", None)
    f(ck)
    p = base / name
    torch.save(ck, p)
    return p


def _sd(ck, fn):
    ck["state_dict"] = {k: fn(v) for k, v in ck["state_dict"].items()}


def _scale(ck, x):
    for v in ck["state_dict"].values():
        v.mul_(x)


def _fill_nan(ck):
    next(iter(ck["state_dict"].values())).fill_(float("nan"))


CHECKPOINTS = {  # name: (mutation, source checkpoint, expected message)
    "dims_huge": (lambda ck: ck["dims"].update(flow=10**10), "good.pt", r"dims\['flow'\] must be an integer in 1\.\."),
    "dims_negative": (lambda ck: ck["dims"].update(flow=-5), "good.pt", r"dims\['flow'\] must be an integer"),
    "dims_text": (lambda ck: ck["dims"].update(flow="eighty"), "good.pt", r"dims\['flow'\] must be an integer"),
    "dims_bool": (lambda ck: ck["dims"].update(flow=True), "good.pt", r"dims\['flow'\] must be an integer"),
    "window_huge": (lambda ck: ck["config"].update(window=10**9), "good.pt", r"model\.window: must be <= 4096"),
    "order_huge": (lambda ck: ck["config"].update(order_p=10**6), "good.pt", r"model\.order_p: must be <= 16"),
    "hidden_huge": (lambda ck: ck["build_kwargs"].update(hidden=10**7), "concat.pt", "weights do not match the config"),
    "hidden_negative": (lambda ck: ck["build_kwargs"].update(hidden=-4), "concat.pt", "invalid model config"),
    "build_kwargs_list": (lambda ck: ck.update(build_kwargs=[1]), "good.pt", "'build_kwargs' missing or not a dict"),
    "wrong_shape": (lambda ck: ck["state_dict"].update(A=torch.zeros(3, 3)), "good.pt", r"'A' is \(3, 3\)"),
    "missing_key": (lambda ck: ck["state_dict"].pop("A"), "good.pt", r"missing \['A'\]"),
    "extra_key": (lambda ck: ck["state_dict"].update(x=torch.zeros(2)), "good.pt", r"unexpected \['x'\]"),
    "not_a_tensor": (lambda ck: ck["state_dict"].update(A=[1.0]), "good.pt", "'A' is not a tensor"),
    "int_weights": (lambda ck: _sd(ck, lambda v: v.to(torch.int64)), "good.pt", "dtype torch.int64"),
    "complex_weights": (lambda ck: _sd(ck, lambda v: v.to(torch.complex64)), "good.pt", "dtype torch.complex64"),
    "nan_weights": (_fill_nan, "good.pt", "NaN or infinite values"),
    "overflowing_weights": (lambda ck: _scale(ck, 1e30), "good.pt", r"scores a test window as \[nan"),
    "thresholds_nan": (
        lambda ck: ck["meta"].update(alert_thresholds={"on": float("nan"), "off": 0.1}),
        "good.pt",
        r"alert_thresholds\.on must be a number in \[0, 1\]",
    ),
    "thresholds_text": (
        lambda ck: ck["meta"].update(alert_thresholds={"on": "high", "off": 0.1}),
        "good.pt",
        "alert_thresholds.on",
    ),
    "thresholds_reversed": (
        lambda ck: ck["meta"].update(alert_thresholds={"on": 0.2, "off": 0.9}),
        "good.pt",
        "need off <= on",
    ),
    "thresholds_list": (lambda ck: ck["meta"].update(alert_thresholds=[0.5, 0.2]), "good.pt", "must be a mapping"),
    "versions_list": (lambda ck: ck["meta"].update(extractor_versions=["a"]), "good.pt", "extractor_versions"),
    "giant_name": (
        lambda ck: ck.update(representations=["x" * 1_000_000]),
        "good.pt",
        "is not a string of 1..256 characters",
    ),
    "giant_version": (lambda ck: ck["meta"].update(model_version="a" * 1_000_000), "good.pt", "model_version"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_hostile_checkpoint_is_one_line_for_every_loader(base, cfg, case):
    mutate, src, match = CHECKPOINTS[case]
    p = _ckpt(base, f"{case}.pt", mutate, src, drop_version=case != "giant_version")
    for load in (load_model, lambda q: load_serving_model(cfg, q)):  # export/eval, engine/demo
        with pytest.raises(CheckpointError, match=match) as ei:
            load(p)
        _one_line(ei.value, p)


@pytest.mark.parametrize("case", ["dims_huge", "dims_text", "thresholds_nan", "versions_list", "giant_name"])
def test_worker_model_metadata_is_checked_too(base, cfg, case):
    """``worker/replay --model`` read only the metadata: the same checks, one line."""
    mutate, src, match = CHECKPOINTS[case]
    p = _ckpt(base, f"meta-{case}.pt", mutate, src)
    with pytest.raises(CheckpointError, match=match) as ei:
        features_for_model(cfg, p)
    _one_line(ei.value, p)


def test_pickles_with_code_are_refused_and_never_run(base, tmp_path):
    mark = tmp_path / "PWNED"
    zipped = tmp_path / "zip.pt"
    torch.save({"format": "fusewatch-checkpoint", "x": _Evil(mark)}, zipped)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil(mark)))
    inner = _ckpt(base, "inner.pt", lambda ck: ck["meta"].update(evil=_Evil(mark)))
    for p, match in (
        (zipped, "pickled code"),
        (raw, "pickle with content it does not accept"),
        (inner, "pickled code"),
    ):
        for load in (load_model, read_model_meta):
            with pytest.raises(CheckpointError, match=match) as ei:
                load(p)
            s = _one_line(ei.value, p)
            assert "will likely succeed" not in s and "set to `False`" not in s  # no advice to unpickle
    assert not mark.exists()


@pytest.mark.parametrize(
    "content, match",
    [(b"", "empty or truncated file"), (b"not a checkpoint\n" * 8, "not a torch.save file"), ("half", "zip archive")],
)
def test_empty_text_and_truncated_checkpoints(base, tmp_path, content, match):
    p = tmp_path / "m.pt"
    p.write_bytes((base / "good.pt").read_bytes()[:2000] if content == "half" else content)
    with pytest.raises(CheckpointError, match=match) as ei:
        load_model(p)
    _one_line(ei.value, p)


def _onnx(base: Path, name: str, f, src: str = "good.onnx") -> Path:
    m = onnx.load(base / src)
    f(m)
    p = base / name
    onnx.save(m, p)
    return p


def _props(**kv):
    def f(m):
        have = {p.key: p for p in m.metadata_props}
        for k, v in kv.items():
            have[k].value = v

    return f


def _npz(**arrays) -> str:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return base64.b64encode(buf.getvalue()).decode()


def _rename_inputs(m):
    for i in m.graph.input:
        old, i.name = i.name, "x_" + i.name
        for n in m.graph.node:
            for j, x in enumerate(n.input):
                if x == old:
                    n.input[j] = i.name


def _nan_initializers(m):
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size > 1:
            t.CopyFrom(numpy_helper.from_array(np.full_like(a, np.nan), t.name))


def _unknown_op(m):
    m.graph.node[0].op_type = "EvilOp"


def _external_data(m):
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "4")):
        e = t.external_data.add()
        e.key, e.value = k, v


ONNX_FILES = {  # name: (mutation, source, expected message, also refused by the metadata reader)
    "window_not_the_graphs": (_props(N="16"), "good.onnx", r"input 'R' has shape .* declares", True),
    "window_huge": (_props(N="100000"), "good.onnx", r"model\.window: must be <= 4096", True),
    "window_text": (_props(N="eight"), "good.onnx", "unreadable fusewatch metadata", True),
    "dims_not_the_graphs": (_props(dims=json.dumps({"flow": 81})), "features.onnx", "input 'feat_0' has shape", True),
    "dims_huge": (_props(dims=json.dumps({"flow": 10**9})), "good.onnx", "must be an integer in 1..", True),
    "node_dim_wrong": (_props(node_dim="7"), "good.onnx", "input 'U' has shape", True),
    "form_mislabelled": (_props(form="features"), "good.onnx", "are not the features-in form's", True),
    "renamed_inputs": (_rename_inputs, "good.onnx", "are not the graphs-in form's", True),
    "thresholds_nan": (_props(), "good.onnx", "alert_thresholds.on must be a number", True),
    "versions_list": (_props(extractor_versions="[1]"), "good.onnx", "extractor_versions must be a mapping", True),
    "blob_pickle": (
        _props(node_encoders=base64.b64encode(pickle.dumps({"W_0": 1})).decode()),
        "good.onnx",
        "holds pickled objects, which are never loaded",
        False,
    ),
    "blob_garbage": (_props(node_encoders="!!!notbase64"), "good.onnx", "not a readable .npz", False),
    "blob_wrong_shape": (
        _props(node_encoders=_npz(W_0=np.zeros((4, 10), np.float32), b_0=np.zeros(4, np.float32))),
        "good.onnx",
        r"shape \(4, 10\), expected float \(4, 80\)",
        False,
    ),
    "blob_nan": (
        _props(node_encoders=_npz(W_0=np.full((4, 80), np.nan, np.float32), b_0=np.zeros(4, np.float32))),
        "good.onnx",
        "NaN or infinite",
        False,
    ),
    "nan_initializers": (_nan_initializers, "good.onnx", r"scores a test window as \[nan", False),
    "unknown_operator": (_unknown_op, "good.onnx", "ONNX Runtime cannot load it", False),
    "external_data_outside": (_external_data, "good.onnx", "ONNX Runtime cannot load it", False),
}


@pytest.mark.parametrize("case", sorted(ONNX_FILES))
def test_hostile_onnx_is_one_line_for_engine_and_worker(base, cfg, case):
    mutate, src, match, meta_too = ONNX_FILES[case]
    if case == "thresholds_nan":

        def mutate(m):
            e = m.metadata_props.add()
            e.key, e.value = "alert_thresholds", '{"on": NaN, "off": 0.2}'

    p = _onnx(base, f"{case}.onnx", mutate, src)
    with pytest.raises(CheckpointError, match=match) as ei:
        load_serving_model(cfg, p)
    _one_line(ei.value, p)
    if meta_too:
        with pytest.raises(CheckpointError, match=match) as ei:
            read_model_meta(p)
        _one_line(ei.value, p)
    else:
        read_model_meta(p)  # the metadata alone is fine: the worker computes the features


@pytest.mark.parametrize("cut", [0, 100, -200])
def test_empty_truncated_and_directory_onnx(base, cfg, tmp_path, cut):
    p = tmp_path / "m.onnx"
    b = (base / "good.onnx").read_bytes()
    p.write_bytes(b[:cut] if cut else b"")
    with pytest.raises(CheckpointError, match="not a readable ONNX file|not a fusewatch ONNX export") as ei:
        load_serving_model(cfg, p)
    _one_line(ei.value, p)
    d = tmp_path / "d.onnx"
    d.mkdir(exist_ok=True)
    for load in (lambda q: load_serving_model(cfg, q), read_model_meta):
        with pytest.raises(CheckpointError, match="is a directory"):
            load(d)


def test_good_files_still_load_and_score(base, cfg):
    for name in ("good.pt", "good.onnx", "features.onnx", "concat.pt"):
        m = load_serving_model(cfg, base / name)
        st = m.new_state()
        st.push({"flow": np.linspace(0, 1, 80, dtype=np.float32)})
        s = float(np.asarray(m.score([st.window()]))[0])
        assert 0.0 <= s <= 1.0
        assert read_model_meta(base / name).window == 8


REPO = Path(__file__).resolve().parents[1]


def _without_logging_errors(lines: list[str]) -> list[str]:
    """``lines`` minus the "--- Logging error ---" reports (through "Arguments: …") that the
    logging module prints when a leftover background thread logs after its stream closed."""
    out, skip = [], False
    for ln in lines:
        if ln.startswith("--- Logging error ---"):
            skip = True
        elif skip and ln.startswith("Arguments:"):
            skip = False
        elif not skip:
            out.append(ln)
    return out


def test_cli_commands_end_in_one_line(base, tmp_path, capsys):
    bad = _ckpt(base, "cli-nan.pt", _fill_nan)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    runs = [
        (["export", "--model", str(bad), "--out", str(tmp_path / "o")], "NaN or infinite values"),
        (["export", "--model", str(base / "good.onnx"), "--out", str(tmp_path / "o")], "is an ONNX file"),
        (
            [
                "export-models",
                "--out",
                str(tmp_path / "o"),
                "--model",
                str(tmp_path / "nope.pt"),
                "--backbones",
                "none",
            ],
            "not found",
        ),
        (
            ["export-models", "--out", str(tmp_path / "o"), "--model", str(tmp_path), "--backbones", "none"],
            "is a directory",
        ),
        (["worker", "--camera", "c", "--source", str(video), "--model", str(bad)], None),
    ]
    for argv, match in runs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        # other libraries' leftover threads (kafka-python from earlier tests) may share stderr in-process:
        # ours is exactly one error line, and no traceback passes through fusewatch's code
        ours = [ln for ln in err if ln.startswith("fusewatch:")]
        assert len(ours) == 1 and ours[0].startswith("fusewatch: error: "), err
        assert not any(f'File "{REPO}/' in ln for ln in _without_logging_errors(err)), err
        if match:
            assert match in ours[0], err
