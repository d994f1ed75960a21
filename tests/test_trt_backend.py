"""TensorRT scorer end to end against a faithful fake ``tensorrt`` + fake CUDA (tests/fake_tensorrt.py):
construction, precision flags, profiles, engine cache, device placement, checked returns, fallback,
FP16 with an absent representation; plus the fake's API checked against the installed TensorRT-RTX.

ONNX Runtime runs for real (it is the reference and, inside the fake, the FP32 executor)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import fusewatch.engines.serving.backends as backends
import fusewatch.engines.serving.backends.artifacts as artifacts
import fusewatch.engines.serving.backends.fp16 as fp16_mod
import fusewatch.engines.serving.backends.tensorrt_build as trt_build
from fusewatch.engines.export.onnx import example_inputs, export_onnx
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.backends import BackendError, select_backend, tensorrt_importable
from fusewatch.engines.serving.backends.fp16 import FP16_SAFE_EPS
from fusewatch.engines.serving.backends.onnxruntime import OrtScorer
from fusewatch.engines.serving.backends.probe import parse_version, version_problem
from fusewatch.engines.serving.backends.tensorrt import TrtScorer
from fusewatch.stream.config import ModelConfig
from tests import fake_tensorrt

REPO = Path(__file__).resolve().parents[1]
DIMS = {"rgb": 24, "flow": 12, "audio": 8}
N = 8


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """LEGO model with a node branch (graphs form takes U) → {form: onnx path}."""
    torch.manual_seed(0)
    m = build_model(ModelConfig(window=N, representations=list(DIMS)), DIMS).eval()
    d = tmp_path_factory.mktemp("onnx")
    return m, {f: export_onnx(m, None, d / f"{f}.onnx", form=f) for f in ("graphs", "features")}


@pytest.fixture(scope="module")
def ort(exports):
    return OrtScorer(exports[1], threads=1)


def install(monkeypatch, **kw):
    """Put a fresh fake ``tensorrt`` into sys.modules; fresh per-process logger/fallback memories."""
    trt, cuda, state = fake_tensorrt.make_fake(**kw)
    monkeypatch.setitem(sys.modules, trt.__name__, trt)
    monkeypatch.setattr(trt_build, "_LOGGERS", {})
    monkeypatch.setattr(backends, "_LOGGED_FALLBACKS", set())
    return trt, cuda, state


@pytest.fixture
def fake(monkeypatch):
    return install(monkeypatch)


def graph_batch(model, b, seed=0):
    g = example_inputs(model, "graphs", batch=b, seed=seed)
    return g["R"], g["mask"], g["present"], g.get("U")


def absent_batch(model):
    """4 windows: full, padded, representation 1 absent (all-zero R/U, present 0), all absent."""
    r, mask, present, u = graph_batch(model, 4, seed=3)
    present[:] = 1
    present[2, 1] = 0
    r[2, 1] = 0
    u[2, 1] = 0
    present[3] = 0
    r[3] = 0
    u[3] = 0
    return r, mask, present, u


def test_fp32_engine_matches_onnxruntime_with_tf32_cleared_and_batch_profile(fake, exports, ort, tmp_path):
    trt, cuda, state = fake
    model, paths = exports
    s = TrtScorer(paths, max_batch=4, opt_batch=2, cache_dir=tmp_path, cuda=cuda)
    assert (s.precision, s.gpu_name, s.compute_capability, s.built) == (
        "fp32",
        "Fake GPU A",
        "8.9",
        ["graphs", "features"],
    )
    builds = state.events("build")
    assert len(builds) == 2 and all(b["flags"] == set() for b in builds)  # TF32 (on by default) cleared
    prof = builds[0]["profile"]
    assert set(prof) == {"R", "mask", "present", "U"}
    assert prof["R"] == [(1, 3, N, N), (2, 3, N, N), (4, 3, N, N)]
    assert prof["mask"] == [(1, N), (2, N), (4, N)]
    r, mask, present, u = graph_batch(model, 6)
    got = s.score_graphs(r, mask, present, u)  # 6 > max_batch 4: split 4 + 2
    np.testing.assert_allclose(got, ort.score_graphs(r, mask, present, u), atol=1e-6)
    ex = [e for e in state.events("execute")]
    assert [e["shapes"]["R"][0] for e in ex] == [4, 2]
    assert all(set(e["addresses"]) == {"R", "mask", "present", "U", "scores"} for e in ex)
    assert len({e["addresses"]["R"] for e in ex} | {e["addresses"]["scores"] for e in ex}) == 2
    assert [e["shape"] for e in state.events("set_input_shape") if e["name"] == "U"] == [(4, 3, N, 16), (2, 3, N, 16)]
    g = example_inputs(model, "features", batch=3, seed=1)
    feats = {k: g[f"feat_{i}"] for i, k in enumerate(DIMS)}
    np.testing.assert_allclose(
        s.score_features(feats, g["mask"], g["present"]), ort.score_features(feats, g["mask"], g["present"]), atol=1e-6
    )


def test_tf32_opt_in_and_precision_are_in_the_engine_cache_key(fake, exports, tmp_path):
    trt, cuda, state = fake
    paths = {"graphs": exports[1]["graphs"]}
    fp32 = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda)
    tf32 = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda, tf32=True)
    fp16 = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda, fp16=True)
    assert [b["flags"] for b in state.events("build")] == [set(), {"TF32"}, {"FP16"}]
    assert len({fp32.engine_paths["graphs"], tf32.engine_paths["graphs"], fp16.engine_paths["graphs"]}) == 3
    assert fp32.built == tf32.built == fp16.built == ["graphs"]


def test_engine_cache_hit_and_corrupt_entry_rebuilt_atomically(fake, exports, tmp_path):
    trt, cuda, state = fake
    paths = {"graphs": exports[1]["graphs"]}
    first = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda)
    again = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda)
    assert (first.built, again.built, len(state.events("build"))) == (["graphs"], [], 1)
    ep = first.engine_paths["graphs"]
    ep.write_bytes(b"truncated engine")
    healed = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda)
    assert healed.built == ["graphs"] and len(state.events("build")) == 2
    assert ep.read_bytes().startswith(fake_tensorrt.MAGIC)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # no temporary files left
        [ep.name, "timing-10.8.0.43-Fake_GPU_A-sm89.cache"]
    )


def test_everything_is_created_and_run_on_the_configured_device(fake, exports, tmp_path):
    trt, cuda, state = fake
    model, paths = exports
    s = TrtScorer({"graphs": paths["graphs"]}, max_batch=2, cache_dir=tmp_path, cuda=cuda, device=1)
    s.score_graphs(*graph_batch(model, 2))
    assert s.gpu_name == "Fake GPU B"
    for ev in (
        "Builder",
        "create_network",
        "parse",
        "build",
        "Runtime",
        "deserialize",
        "create_execution_context",
        "alloc",
        "stream",
        "set_input_shape",
        "set_tensor_address",
        "execute",
    ):
        got = state.events(ev)
        assert got and all(e["device"] == 1 for e in got), ev
    assert all(e["on"] == 1 for e in state.events("alloc") + state.events("stream"))
    assert state.device == 0  # restored after every scope
    with pytest.raises(BackendError, match="CUDA device 5"):
        TrtScorer({"graphs": paths["graphs"]}, cache_dir=tmp_path, cuda=cuda, device=5)


def test_one_tensorrt_logger_per_process(fake, exports, tmp_path):
    trt, cuda, state = fake
    for sub in ("a", "b"):
        TrtScorer({"graphs": exports[1]["graphs"]}, max_batch=2, cache_dir=tmp_path / sub, cuda=cuda)
    assert len(state.events("Logger")) == 1 and len(state.events("Builder")) == 2


@pytest.mark.parametrize(
    "event, message",
    [
        ("set_input_shape", "rejected input shape"),
        ("set_tensor_address", "rejected the device address"),
        ("execute", "execute_async_v3 failed"),
        ("output_shape", r"TensorRT reports shape \(2, 9\) for batch 2, which does not fit its buffer \(2, 8\)"),
        ("output_rows", r"TensorRT output shape \(1, 8\), expected \(2, 8\)"),
    ],
)
def test_every_execution_return_value_is_checked(fake, exports, tmp_path, event, message):
    trt, cuda, state = fake
    model, paths = exports
    s = TrtScorer({"graphs": paths["graphs"]}, max_batch=2, cache_dir=tmp_path, cuda=cuda)
    state.fail[event] = True
    with pytest.raises(BackendError, match=message):
        s.score_graphs(*graph_batch(model, 2))


@pytest.mark.parametrize(
    "event, message",
    [
        ("add_optimization_profile", "rejected the optimisation profile"),
        ("parse", "parser rejected the model: In node 3"),
        ("build", "engine build failed"),
        ("create_execution_context", "could not create an execution context"),
    ],
)
def test_construction_failures_raise_backend_error(fake, exports, tmp_path, event, message):
    trt, cuda, state = fake
    state.fail[event] = True
    with pytest.raises(BackendError, match=message):
        TrtScorer({"graphs": exports[1]["graphs"]}, max_batch=2, cache_dir=tmp_path, cuda=cuda)


def test_a_files_form_must_match_its_key(fake, exports, tmp_path):
    trt, cuda, state = fake
    wrong = {"features": exports[1]["graphs"]}
    for make in (lambda: TrtScorer(wrong, cache_dir=tmp_path, cuda=cuda), lambda: OrtScorer(wrong)):
        with pytest.raises(BackendError, match="is a 'graphs' export, given as 'features'"):
            make()


FAILURES = {  # how TensorRT can fail at construction → what the fallback reason says
    "builder": (
        dict(fail={"Builder": TypeError("pybind11::init(): factory function returned nullptr")}),
        "tensorrt.Builder() failed (TypeError: pybind11::init(): factory function returned nullptr)",
    ),
    "parse": (dict(fail={"parse": True}), "parser rejected the model"),
    "build": (dict(fail={"build": True}), "engine build failed"),
    "deserialize": (dict(fail={"deserialize": True}), "could not deserialize the engine"),
    "old": (dict(version="8.6.1.6"), "tensorrt 8.6.1.6 is older than the minimum supported 10.0"),
    "no_gpu": (dict(usable=(False, "no CUDA GPU available")), "backend 'tensorrt' unavailable: no CUDA GPU available"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_auto_falls_back_to_onnxruntime_and_explicit_tensorrt_fails_in_one_line(
    monkeypatch, exports, tmp_path, caplog, case
):
    setup, reason = FAILURES[case]
    trt, cuda, state = install(monkeypatch, **({"version": setup["version"]} if "version" in setup else {}))
    state.fail.update(setup.get("fail", {}))
    if "usable" in setup:
        cuda.usable = setup["usable"]
    paths = {"graphs": exports[1]["graphs"]}
    caplog.set_level(logging.INFO, logger="fusewatch.engines.serving.backends")
    for _ in range(2):
        s = select_backend("auto", model=paths, cache_dir=tmp_path, cuda=cuda)
        assert (s.backend, s.requested_backend) == ("onnxruntime", "auto")
        assert reason in s.fallback_reason
    logged = [r for r in caplog.records if r.name == "fusewatch.engines.serving.backends" and reason in r.getMessage()]
    assert len(logged) == 1  # said once, with the reason
    assert logged[0].levelno == (logging.INFO if case in ("old", "no_gpu") else logging.WARNING)
    with pytest.raises(BackendError) as ei:
        select_backend("tensorrt", model=paths, cache_dir=tmp_path, cuda=cuda)
    assert reason in str(ei.value) and "\n" not in str(ei.value)
    ok = (
        select_backend("auto", model=paths, cache_dir=tmp_path / "ok", cuda=fake_tensorrt.make_fake()[1])
        if case == "no_gpu"
        else None
    )
    if ok is not None:  # the same call with TensorRT usable gets TensorRT, no reason
        assert (ok.backend, ok.fallback_reason) == ("tensorrt", "")


@pytest.mark.parametrize("fp16_flag", [True, False], ids=["trt10-flag", "trt11-typed"])
def test_fp16_stays_finite_and_close_with_an_absent_representation(monkeypatch, exports, ort, tmp_path, fp16_flag):
    trt, cuda, state = install(monkeypatch, fp16_flag=fp16_flag)
    model, paths = exports
    s = TrtScorer({"graphs": paths["graphs"]}, max_batch=4, cache_dir=tmp_path, cuda=cuda, fp16=True)
    build = state.events("build")[0]
    if fp16_flag:
        assert (s.precision, build["flags"], build["network_flags"]) == ("fp16-flag", {"FP16"}, 0)
    else:
        assert (s.precision, build["flags"]) == ("fp16-typed", set())
        assert build["network_flags"] == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    args = absent_batch(model)
    got, ref = s.score_graphs(*args), ort.score_graphs(*args)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 1e-2
    assert np.abs(got - ref).max() > 0  # it really ran in FP16


def clip_minimums(proto) -> list[float]:
    vals = {t.name: t for t in proto.graph.initializer}
    vals.update({n.output[0]: n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"})
    return [
        float(numpy_helper.to_array(vals[n.input[1]]).astype(np.float64).reshape(()))
        for n in proto.graph.node
        if n.op_type == "Clip"
    ]


@pytest.mark.parametrize("fp16_flag", [True, False], ids=["trt10-flag", "trt11-typed"])
def test_fp16_engines_get_fp16_safe_clip_floors_fp32_engines_the_export_as_is(
    monkeypatch, exports, tmp_path, fp16_flag
):
    trt, cuda, state = install(monkeypatch, fp16_flag=fp16_flag)
    paths = {"graphs": exports[1]["graphs"]}
    exported = clip_minimums(onnx.load(str(paths["graphs"])))
    assert min(exported) == pytest.approx(1e-12)  # the torch model's eps, kept for FP32
    f32 = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda)
    f16 = TrtScorer(paths, max_batch=2, cache_dir=tmp_path, cuda=cuda, fp16=True)
    assert clip_minimums(fake_tensorrt.engine_onnx(f32.engine_paths["graphs"].read_bytes())) == exported
    floors = clip_minimums(fake_tensorrt.engine_onnx(f16.engine_paths["graphs"].read_bytes()))
    assert min(floors) == pytest.approx(FP16_SAFE_EPS, rel=1e-3) and len(floors) == len(exported)


@pytest.mark.parametrize("fp16_flag", [True, False], ids=["trt10-flag", "trt11-typed"])
def test_fp16_emulation_catches_the_unsafe_1e12_clamp(monkeypatch, exports, tmp_path, fp16_flag):
    """The FP16 check above can fail: with the floor left at the torch model's 1e-12 (0 in float16)
    the absent rows become non-finite in FP16."""
    trt, cuda, state = install(monkeypatch, fp16_flag=fp16_flag)
    monkeypatch.setattr(fp16_mod, "FP16_SAFE_EPS", 1e-12)
    model, paths = exports
    s = TrtScorer({"graphs": paths["graphs"]}, max_batch=4, cache_dir=tmp_path, cuda=cuda, fp16=True)
    got = s.score_graphs(*absent_batch(model))
    assert np.isfinite(got[:2]).all() and not np.isfinite(got[2:]).all()


def test_cli_explicit_tensorrt_failure_is_one_line_without_traceback(monkeypatch, exports, tmp_path, capsys):
    from fusewatch import cli
    from fusewatch.engines.serving.backends import cuda as cuda_mod

    trt, cuda, state = install(monkeypatch)
    state.fail["Builder"] = TypeError("pybind11::init(): factory function returned nullptr")
    monkeypatch.setattr(cuda_mod, "TorchCuda", lambda: cuda)
    monkeypatch.setattr(artifacts, "_default_cache", lambda: tmp_path)
    rc = cli.main(["engine", "--model", str(exports[1]["graphs"]), "--backend", "tensorrt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("fusewatch: error: tensorrt.Builder() failed (TypeError")


def test_engine_stats_report_the_backend_and_the_fallback_reason(monkeypatch, exports, tmp_path):
    from fusewatch.engines.serving.backends import cuda as cuda_mod
    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.engines.serving.service import EngineService
    from fusewatch.stream.config import load_config
    from fusewatch.stream.transport import BusTransport, InProcessBus

    trt, cuda, state = install(monkeypatch)
    state.fail["build"] = True
    monkeypatch.setattr(cuda_mod, "TorchCuda", lambda: cuda)
    monkeypatch.setattr(artifacts, "_default_cache", lambda: tmp_path)
    cfg = load_config(overrides={"engine.backend": "auto", "engine.model": str(exports[1]["graphs"])}, env={})
    svc = EngineService(cfg, load_serving_model(cfg), BusTransport(InProcessBus()))
    st = svc.stats
    assert (st.backend, st.backend_requested) == ("onnxruntime", "auto")
    assert "engine build failed" in st.backend_fallback


def test_minimum_tensorrt_version():
    assert parse_version("10.8.0.43") == (10, 8, 0, 43) and parse_version("11.0.0b1") == (11, 0, 0)
    assert version_problem("tensorrt", "10.0.1.6") == "" and version_problem("tensorrt_rtx", "1.7.1.116") == ""
    assert "older than the minimum supported 10.0" in version_problem("tensorrt", "9.3.0")
    assert "unreadable" in version_problem("tensorrt", "dev")


def test_fake_api_exists_in_the_installed_tensorrt_rtx_bindings():
    """Every TensorRT name the fake defines must exist in the real bindings (checked in a child
    process: importing TensorRT can crash an interpreter). TensorRT-10-only names are listed in
    fake_tensorrt.TENSORRT10_ONLY and must be ABSENT from TensorRT-RTX (strongly typed only)."""
    ok, why = tensorrt_importable("tensorrt_rtx", timeout=120)
    if not ok:
        pytest.skip(f"tensorrt-rtx is not importable here: {why}")
    names = sorted(fake_tensorrt.api_names(fake_tensorrt.make_fake()[0]))
    code = (
        "import json, sys, tensorrt_rtx as t\n"
        "def has(n):\n o = t\n for p in n.split('.'):\n  if not hasattr(o, p): return False\n  o = getattr(o, p)\n return True\n"
        "names = json.loads(sys.stdin.read())\n"
        "print(json.dumps({n: has(n) for n in names}))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], input=json.dumps(names), capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    found = json.loads(p.stdout.strip().splitlines()[-1])
    missing = sorted(n for n, ok in found.items() if not ok and n not in fake_tensorrt.TENSORRT10_ONLY)
    assert missing == [], f"fake tensorrt names missing from tensorrt_rtx: {missing}"
    assert not any(found[n] for n in fake_tensorrt.TENSORRT10_ONLY), "TensorRT-RTX gained BuilderFlag.FP16?"
    assert len(found) > 60


def test_exports_fed_to_tensorrt_pass_its_op_lint_or_fall_back(monkeypatch, exports, tmp_path):
    """Every ONNX file TensorRT builds from is checked against its parser's operator list first: a
    graph with an operator the parser rejects is a BackendError (``auto`` falls back to ONNX Runtime)."""
    trt, cuda, state = install(monkeypatch)
    proto = onnx.load(str(exports[1]["graphs"]))
    out = proto.graph.output[0].name
    proto.graph.node.append(onnx.helper.make_node("Unique", [out], ["unique_values"]))  # not in TensorRT's list
    bad = tmp_path / "bad-graphs.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(BackendError, match="Unique"):
        TrtScorer({"graphs": bad}, max_batch=4, cache_dir=tmp_path, cuda=cuda)
    assert not [c for c, _ in state.calls if "build" in c.lower()]  # rejected before any engine build
    s = select_backend("auto", model={"graphs": bad}, cache_dir=tmp_path, cuda=cuda)
    assert s.backend == "onnxruntime" and "Unique" in s.fallback_reason
