"""Inference backends behind one :class:`Scorer` interface.

* ``torch`` — :class:`~fusewatch.engines.serving.backends.torch_backend.TorchScorer` (reference, eager PyTorch).
* ``onnxruntime`` — :class:`~fusewatch.engines.serving.backends.ort_backend.OrtScorer` (CPU EP, configurable
  intra-op threads).
* ``tensorrt`` — :class:`~fusewatch.engines.serving.backends.trt_backend.TrtScorer` (engine built from the ONNX with a
  batch optimisation profile, timing + engine cache; needs a CUDA GPU, ``tensorrt`` and CUDA torch).

Use :func:`select_backend` to construct one. Inputs are numpy arrays (float32 is used internally):

* :meth:`Scorer.score_graphs` ``(R B×M×N×N, mask B×N, present B×M | None, U B×M×N×k | None) → B×N``
  (``U``: node signals, required iff the model has a node branch, ``meta["node_dim"] = k > 0``;
  :meth:`fusewatch.engines.serving.state.CameraGraphState.window` returns it as the 4th array)
* :meth:`Scorer.score_features` ``(feats, mask B×N, present B×M | None) → B×N`` with ``feats`` a
  ``dict[name → B×N×d_m]`` (missing key = representation absent) or a list in
  ``representations`` order.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


from fusewatch.errors import BackendError  # noqa: E402,F401 - re-exported


class Scorer(ABC):
    """Common interface. Attributes: ``backend`` (name), ``meta`` (model metadata: ``model_version``,
    ``representations``, ``dims``, ``window``, ``fusion`` …), ``names``, ``dims``, ``window`` (N),
    ``node_dim`` (``k``; 0 = no node branch, the graphs-in form then takes no ``U``), ``forms`` (subset of ``{"graphs", "features"}`` this scorer can run), ``max_batch`` (None = any;
    larger batches are split transparently)."""

    backend = ""

    def __init__(self, meta: Mapping[str, Any], forms: Sequence[str], max_batch: int | None = None):
        self.meta = dict(meta)
        self.names: list[str] = list(self.meta["representations"])
        self.dims: dict[str, int] = {k: int(v) for k, v in self.meta["dims"].items()}
        self.window = int(self.meta.get("window") or self.meta.get("N"))
        self.node_dim = int(self.meta.get("node_dim") or 0)
        self.forms = tuple(forms)
        self.max_batch = max_batch

    # -- public API -------------------------------------------------------------------------------
    def score_graphs(self, r: np.ndarray, mask: np.ndarray, present: np.ndarray | None = None,
                     u: np.ndarray | None = None) -> np.ndarray:
        """Scores ``B×N`` float32 from base graphs ``r`` ``B×M×N×N`` and, for models with a node
        branch, node signals ``u`` ``B×M×N×k`` (graphs-in form, LEGO only)."""
        if "graphs" not in self.forms:
            raise BackendError(f"{self.backend}: this model/export has no graphs-in form "
                               f"(fusion={self.meta.get('fusion')!r}, forms={list(self.forms)})")
        arrays = self._graph_inputs(r, mask, present, u)
        return self._chunked(self._run_graphs, arrays)

    def score_features(self, feats: Mapping[str, np.ndarray | None] | Sequence[np.ndarray],
                       mask: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Scores ``B×N`` float32 from raw features (see module doc)."""
        if "features" not in self.forms:
            raise BackendError(f"{self.backend}: this model/export has no features-in form "
                               f"(forms={list(self.forms)})")
        arrs, mask, present = self._feature_inputs(feats, mask, present)
        return self._chunked(self._run_features, arrs + [mask, present])

    def close(self) -> None:
        """Release resources (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model_version={self.meta.get('model_version')!r}, "
                f"forms={list(self.forms)}, N={self.window}, reps={self.names})")

    # -- to implement -----------------------------------------------------------------------------
    @abstractmethod
    def _run_graphs(self, r: np.ndarray, mask: np.ndarray, present: np.ndarray,
                    u: np.ndarray | None = None) -> np.ndarray:
        """``u`` is given iff ``self.node_dim > 0``."""

    @abstractmethod
    def _run_features(self, *arrays: np.ndarray) -> np.ndarray: ...

    # -- helpers ----------------------------------------------------------------------------------
    def _chunked(self, fn, arrays: list[np.ndarray]) -> np.ndarray:
        b = arrays[0].shape[0]
        if b == 0:
            return np.zeros((0, self.window), np.float32)
        if self.max_batch is None or b <= self.max_batch:
            return np.asarray(fn(*arrays), dtype=np.float32)
        outs = [fn(*[a[i:i + self.max_batch] for a in arrays]) for i in range(0, b, self.max_batch)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _mask_present(self, b: int, mask, present) -> tuple[np.ndarray, np.ndarray]:
        m, n = len(self.names), self.window
        mask = np.ascontiguousarray(mask, dtype=np.float32)
        if mask.shape != (b, n):
            raise BackendError(f"mask: expected shape ({b}, {n}), got {mask.shape}")
        if present is None:
            present = np.ones((b, m), np.float32)
        present = np.ascontiguousarray(present, dtype=np.float32)
        if present.shape != (b, m):
            raise BackendError(f"present: expected shape ({b}, {m}), got {present.shape}")
        return mask, present

    def _graph_inputs(self, r, mask, present, u=None) -> list[np.ndarray]:
        r = np.ascontiguousarray(r, dtype=np.float32)
        m, n, k = len(self.names), self.window, self.node_dim
        if r.ndim != 4 or r.shape[1:] != (m, n, n):
            raise BackendError(f"R: expected shape (B, {m}, {n}, {n}), got {r.shape}")
        mask, present = self._mask_present(r.shape[0], mask, present)
        if not k:
            if u is not None:
                raise BackendError("U given but this model has no node branch (node_dim = 0)")
            return [r, mask, present]
        if u is None:
            raise BackendError(f"U (node signals, shape (B, {m}, {n}, {k})) is required: this model has a "
                               f"node branch (node_dim = {k}); CameraGraphState.window() returns it")
        u = np.ascontiguousarray(u, dtype=np.float32)
        if u.shape != (r.shape[0], m, n, k):
            raise BackendError(f"U: expected shape ({r.shape[0]}, {m}, {n}, {k}), got {u.shape}")
        return [r, mask, present, u]

    def _feature_inputs(self, feats, mask, present):
        mask = np.asarray(mask)
        b, n = mask.shape[0], self.window
        absent = []
        if isinstance(feats, Mapping):
            arrs = []
            for i, nm in enumerate(self.names):
                v = feats.get(nm)
                if v is None:
                    v = np.zeros((b, n, self.dims[nm]), np.float32)
                    absent.append(i)
                arrs.append(v)
        else:
            arrs = list(feats)
            if len(arrs) != len(self.names):
                raise BackendError(f"feats: expected {len(self.names)} arrays ({self.names}), got {len(arrs)}")
        out = []
        for nm, v in zip(self.names, arrs):
            v = np.ascontiguousarray(v, dtype=np.float32)
            if v.shape != (b, n, self.dims[nm]):
                raise BackendError(f"feats[{nm!r}]: expected shape ({b}, {n}, {self.dims[nm]}), got {v.shape}")
            out.append(v)
        mask, present = self._mask_present(b, mask, present)
        if absent:
            present = present.copy()
            present[:, absent] = 0
        return out, mask, present


# ------------------------------------------------------------------------------- probing ----------

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


# ------------------------------------------------------------------------------- factory ----------

def _resolve_model(model, meta):
    """→ (torch model | None, meta, onnx paths {form: path} | None)."""
    from fusewatch.engines.training.checkpoint import load_model, model_meta
    from fusewatch.engines.fusion.model import FusionModel

    if model is None:
        raise BackendError("select_backend: no model given (checkpoint .pt, exported .onnx or nn.Module)")
    if isinstance(model, FusionModel):
        return model, (dict(meta) if meta and meta.get("model_version") else model_meta(model)), None
    if isinstance(model, Mapping):  # {form: onnx path}
        return None, None, {k: Path(v) for k, v in model.items()}
    p = Path(model)
    if p.suffix == ".onnx":
        from fusewatch.engines.export.onnx import read_onnx_meta

        return None, None, {read_onnx_meta(p)["form"]: p}
    m, mt = load_model(p)
    return m, mt, None


def _export_paths(model, meta, cache_dir, forms) -> dict[str, Path]:
    from fusewatch.engines.export.onnx import export_cached
    from fusewatch.engines.fusion.model import LegoModel

    if forms is None:
        forms = ("graphs", "features") if isinstance(model, LegoModel) else ("features",)
    cache = Path(cache_dir) if cache_dir else _default_cache() / "onnx"
    return {f: export_cached(model, meta, cache, form=f) for f in forms}


def _default_cache() -> Path:
    try:
        from fusewatch.stream.config import CACHE_DIR

        return Path(CACHE_DIR)
    except Exception:  # noqa: BLE001
        return Path(os.environ.get("FUSEWATCH_CACHE", Path.home() / ".cache" / "fusewatch"))


def select_backend(name: str = "auto", model=None, meta: Mapping[str, Any] | None = None, *,
                   max_batch: int = 64, threads: int = 0, cache_dir: str | os.PathLike | None = None,
                   forms: Sequence[str] | None = None, device: str | int | None = None,
                   fp16: bool = False) -> Scorer:
    """Build a :class:`Scorer`.

    Args:
        name: ``auto`` | ``torch`` | ``onnxruntime`` | ``tensorrt``. ``auto`` = ``tensorrt`` when a
            CUDA GPU is present AND ``tensorrt`` imports (probed in a child process, GPU checked
            first), else ``onnxruntime``.
        model: checkpoint path (``.pt``), exported ONNX path (one form; from its metadata),
            ``{form: onnx path}``, or a built :class:`fusewatch.engines.fusion.model.FusionModel`.
        meta: metadata for an nn.Module (default: computed). max_batch: TensorRT profile max batch
            (bigger batches are split). threads: ONNX Runtime intra-op threads (0 = default) /
            torch threads when > 0. cache_dir: ONNX exports (``<cache>/onnx``) and TensorRT
            engines (``<cache>/trt``); default ``fusewatch.stream.config.CACHE_DIR``. forms: ONNX forms to
            export (default: both for LEGO, ``features`` otherwise). device: torch device for
            ``torch`` (default cpu) / CUDA ordinal for ``tensorrt``. fp16: TensorRT FP16 flag.
    Raises :class:`BackendError` with a clear reason when the requested backend is unusable.
    """
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "auto":
        ok, _why = tensorrt_status()
        name = "tensorrt" if ok else "onnxruntime"
    torch_model, meta2, paths = _resolve_model(model, meta)
    cache = Path(cache_dir) if cache_dir else _default_cache()
    if name == "torch":
        if torch_model is None:
            raise BackendError("backend 'torch' needs a checkpoint or nn.Module, not an ONNX file")
        from fusewatch.engines.serving.backends.torch_backend import TorchScorer

        return TorchScorer(torch_model, meta2, device=device or "cpu", threads=threads)
    if paths is None:
        paths = _export_paths(torch_model, meta2, cache / "onnx", forms)
    if name == "onnxruntime":
        from fusewatch.engines.serving.backends.ort_backend import OrtScorer

        return OrtScorer(paths, threads=threads)
    ok, why = tensorrt_status()
    if not ok:
        raise BackendError(f"backend 'tensorrt' unavailable: {why}")
    from fusewatch.engines.serving.backends.trt_backend import TrtScorer

    return TrtScorer(paths, max_batch=max_batch, cache_dir=cache / "trt", fp16=fp16,
                     device=int(device) if device is not None else 0)


__all__ = ["BACKENDS", "BackendError", "Scorer", "gpu_available", "nvidia_smi_gpus",
           "tensorrt_importable", "tensorrt_status", "select_backend"]
