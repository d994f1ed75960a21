"""Probing for a CUDA GPU and an importable TensorRT, without importing TensorRT in this process
(a TensorRT runtime without a GPU can crash the interpreter)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys


def gpu_available() -> bool:
    """True when torch sees a CUDA GPU. Never imports TensorRT (a TensorRT runtime without a GPU
    can crash the interpreter)."""
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.device_count() > 0)
    except Exception:  # noqa: BLE001
        return False


def nvidia_smi_gpus() -> list[str]:
    """GPU lines of ``nvidia-smi -L`` (empty if the tool is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [ln for ln in out.stdout.splitlines() if ln.startswith("GPU")] if out.returncode == 0 else []


MIN_VERSIONS = {"tensorrt": (10, 0), "tensorrt_rtx": (1, 0)}
"""Oldest supported release per TensorRT flavour: TensorRT 10.0 (name-based I/O tensor API —
``num_io_tensors``/``set_input_shape``/``set_tensor_address``/``execute_async_v3`` — and explicit batch
networks by default) and TensorRT-RTX 1.0 (strongly typed, same API)."""


def parse_version(v: str) -> tuple[int, ...]:
    """``"10.8.0.43"`` → ``(10, 8, 0, 43)`` (stops at the first non-numeric part)."""
    out = []
    for part in str(v).split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        out.append(int(m.group()))
        if m.end() < len(part):  # "0b1": a pre-release suffix ends the numeric part
            break
    return tuple(out)


def version_problem(module: str, version: str) -> str:
    """Empty when ``module`` at ``version`` is supported, else the reason."""
    need = MIN_VERSIONS.get(module, (0,))
    have = parse_version(version)
    if not have:
        return f"{module} reports an unreadable version {version!r}"
    if have < need:
        return f"{module} {version} is older than the minimum supported {'.'.join(map(str, need))}"
    return ""


def tensorrt_importable(
    module: str = "tensorrt", timeout: float = 120.0, create_builder: bool = False
) -> tuple[bool, str]:
    """Probe ``import <module>`` in a child interpreter (a crash there cannot kill this process); with
    ``create_builder`` also construct a ``Builder`` (importing does not initialise CUDA, creating a
    builder does: after a CUDA initialisation failure it raises a TypeError from a null factory).
    → ``(ok, version or reason)``; a version below :data:`MIN_VERSIONS` is not ok."""
    if importlib.util.find_spec(module) is None:
        return False, f"python package {module!r} is not installed"
    code = f"import {module} as t; print(t.__version__)"
    if create_builder:
        code += "; b = t.Builder(t.Logger(t.Logger.ERROR)); assert b is not None, 'Builder() returned None'"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"import {module} timed out"
    version = (p.stdout.strip().splitlines() or [""])[0]
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        what = f"{module}.Builder() failed" if version else f"import {module} failed"
        return False, f"{what}: {tail}"
    problem = version_problem(module, version)
    return (False, problem) if problem else (True, version)


def tensorrt_status(module: str = "tensorrt") -> tuple[bool, str]:
    """``(usable, reason)`` for the TensorRT backend: GPU first, then the import + builder probe."""
    if not gpu_available():
        smi = nvidia_smi_gpus()
        if smi:
            return False, (
                f"nvidia-smi lists {len(smi)} GPU(s) but torch.cuda is unavailable "
                "(a CUDA build of torch is needed for device buffers)"
            )
        return False, "no CUDA GPU available"
    return tensorrt_importable(module, create_builder=True)
