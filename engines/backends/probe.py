"""Probing for a CUDA GPU and an importable TensorRT, without importing TensorRT in this process
(a TensorRT runtime without a GPU can crash the interpreter)."""
from __future__ import annotations

import importlib.util
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


def tensorrt_importable(module: str = "tensorrt", timeout: float = 120.0) -> tuple[bool, str]:
    """Probe ``import <module>`` in a child interpreter (a crash there cannot kill this process).
    → ``(ok, version or reason)``."""
    if importlib.util.find_spec(module) is None:
        return False, f"python package {module!r} is not installed"
    code = f"import {module} as t; print(t.__version__)"
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"import {module} timed out"
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
        return False, f"import {module} failed: {tail}"
    return True, p.stdout.strip()


def tensorrt_status(module: str = "tensorrt") -> tuple[bool, str]:
    """``(usable, reason)`` for the TensorRT backend: GPU first, then the import probe."""
    if not gpu_available():
        smi = nvidia_smi_gpus()
        if smi:
            return False, (f"nvidia-smi lists {len(smi)} GPU(s) but torch.cuda is unavailable "
                           "(a CUDA build of torch is needed for device buffers)")
        return False, "no CUDA GPU available"
    return tensorrt_importable(module)
