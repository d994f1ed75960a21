"""Inference backends behind one :class:`Scorer` interface.

* ``torch`` — :class:`~engines.backends.torch.TorchScorer` (reference, eager PyTorch).
* ``onnxruntime`` — :class:`~engines.backends.onnxruntime.OrtScorer` (CPU EP, configurable
  intra-op threads).
* ``tensorrt`` — :class:`~engines.backends.tensorrt.TrtScorer` (engine built from the ONNX with a
  batch optimisation profile, timing + engine cache; needs a CUDA GPU, ``tensorrt`` and CUDA torch).

Use :func:`select_backend` to construct one. Inputs are numpy arrays (float32 is used internally):

* :meth:`Scorer.score_graphs` ``(R B×M×N×N, mask B×N, present B×M | None, U B×M×N×k | None) → B×N``
  (``U``: node signals, required iff the model has a node branch, ``meta["node_dim"] = k > 0``;
  :meth:`engines.incremental.CameraGraphState.window` returns it as the 4th array)
* :meth:`Scorer.score_features` ``(feats, mask B×N, present B×M | None) → B×N`` with ``feats`` a
  ``dict[name → B×N×d_m]`` (missing key = representation absent) or a list in
  ``representations`` order.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .base import BACKENDS, BackendError, Scorer
from .probe import gpu_available, nvidia_smi_gpus, tensorrt_importable, tensorrt_status


# ------------------------------------------------------------------------------- factory ----------

def _resolve_model(model, meta):
    """→ (torch model | None, meta, onnx paths {form: path} | None)."""
    from ..checkpoint import load_model, model_meta
    from ..model import FusionModel

    if model is None:
        raise BackendError("select_backend: no model given (checkpoint .pt, exported .onnx or nn.Module)")
    if isinstance(model, FusionModel):
        return model, (dict(meta) if meta and meta.get("model_version") else model_meta(model)), None
    if isinstance(model, Mapping):  # {form: onnx path}
        return None, None, {k: Path(v) for k, v in model.items()}
    p = Path(model)
    if p.suffix == ".onnx":
        from ..export import read_onnx_meta

        return None, None, {read_onnx_meta(p)["form"]: p}
    m, mt = load_model(p)
    return m, mt, None


def _export_paths(model, meta, cache_dir, forms) -> dict[str, Path]:
    from ..export import export_cached
    from ..model import LegoModel

    if forms is None:
        forms = ("graphs", "features") if isinstance(model, LegoModel) else ("features",)
    cache = Path(cache_dir) if cache_dir else _default_cache() / "onnx"
    return {f: export_cached(model, meta, cache, form=f) for f in forms}


def _default_cache() -> Path:
    try:
        from stream.config import CACHE_DIR

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
            ``{form: onnx path}``, or a built :class:`engines.model.FusionModel`.
        meta: metadata for an nn.Module (default: computed). max_batch: TensorRT profile max batch
            (bigger batches are split). threads: ONNX Runtime intra-op threads (0 = default) /
            torch threads when > 0. cache_dir: ONNX exports (``<cache>/onnx``) and TensorRT
            engines (``<cache>/trt``); default ``stream.config.CACHE_DIR``. forms: ONNX forms to
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
        from .torch import TorchScorer

        return TorchScorer(torch_model, meta2, device=device or "cpu", threads=threads)
    if paths is None:
        paths = _export_paths(torch_model, meta2, cache / "onnx", forms)
    if name == "onnxruntime":
        from .onnxruntime import OrtScorer

        return OrtScorer(paths, threads=threads)
    ok, why = tensorrt_status()
    if not ok:
        raise BackendError(f"backend 'tensorrt' unavailable: {why}")
    from .tensorrt import TrtScorer

    return TrtScorer(paths, max_batch=max_batch, cache_dir=cache / "trt", fp16=fp16,
                     device=int(device) if device is not None else 0)


__all__ = ["BACKENDS", "BackendError", "Scorer", "gpu_available", "nvidia_smi_gpus",
           "tensorrt_importable", "tensorrt_status", "select_backend"]
