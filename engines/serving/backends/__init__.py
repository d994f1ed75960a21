"""Inference backends behind one :class:`Scorer` interface.

* ``torch`` — :class:`~fusewatch.engines.serving.backends.torch.TorchScorer` (reference, eager PyTorch).
* ``onnxruntime`` — :class:`~fusewatch.engines.serving.backends.onnxruntime.OrtScorer` (CPU EP, configurable
  intra-op threads).
* ``tensorrt`` — :class:`~fusewatch.engines.serving.backends.tensorrt.TrtScorer` (engine built from the ONNX with a
  batch optimisation profile, timing + engine cache; needs a CUDA GPU, TensorRT >= 10.0 and CUDA
  torch; CUDA memory/streams behind :class:`~fusewatch.engines.serving.backends.cuda.CudaOps`).

Modules: ``base`` (Scorer, BackendError, names), ``probe`` (GPU / TensorRT probing, minimum
versions), ``onnxruntime``, ``tensorrt`` (+ ``cuda``, ``fp16``), ``torch``.

Use :func:`select_backend` to construct one. Inputs are numpy arrays (float32 is used internally):

* :meth:`Scorer.score_graphs` ``(R B×M×N×N, mask B×N, present B×M | None, U B×M×N×k | None) → B×N``
  (``U``: node signals, required iff the model has a node branch, ``meta["node_dim"] = k > 0``;
  :meth:`fusewatch.engines.serving.state.CameraGraphState.window` returns it as the 4th array)
* :meth:`Scorer.score_features` ``(feats, mask B×N, present B×M | None) → B×N`` with ``feats`` a
  ``dict[name → B×N×d_m]`` (missing key = representation absent) or a list in
  ``representations`` order.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fusewatch.engines.serving.backends.artifacts import (
    _default_cache,
    _export_paths,
    _resolve_model,
)
from fusewatch.engines.serving.backends.base import (
    BACKENDS,
    BackendError,
    BackendUnavailable,
    Scorer,
    read_export_metas,
)
from fusewatch.engines.serving.backends.probe import (
    MIN_VERSIONS,
    gpu_available,
    nvidia_smi_gpus,
    tensorrt_importable,
    tensorrt_status,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- factory ----------


_LOGGED_FALLBACKS: set[str] = set()


def _log_fallback_once(reason: str, unavailable: bool) -> None:
    """Say once per process and reason why ``auto`` did not get TensorRT (INFO when TensorRT or a GPU
    is simply not there, WARNING when it was there and failed)."""
    if reason in _LOGGED_FALLBACKS:
        return
    _LOGGED_FALLBACKS.add(reason)
    log.log(
        logging.INFO if unavailable else logging.WARNING,
        "backend auto: using onnxruntime, TensorRT not used: %s",
        reason,
    )


def _one_line(e: BaseException) -> str:
    msg = (str(e).strip().splitlines() or [""])[0]
    return msg if isinstance(e, BackendError) else f"{type(e).__name__}: {msg}"


def _cuda_ordinal(device: str | int | None) -> int:
    """``None`` → 0, ``1`` / ``"1"`` / ``"cuda:1"`` → 1."""
    if device is None:
        return 0
    s = str(device)
    if s.startswith("cuda"):
        s = s.partition(":")[2] or "0"
    try:
        return int(s)
    except ValueError:
        raise BackendError(f"backend 'tensorrt': device must be a CUDA ordinal or 'cuda:N', got {device!r}") from None


def select_backend(
    name: str = "auto",
    model=None,
    meta: Mapping[str, Any] | None = None,
    *,
    max_batch: int = 64,
    threads: int = 0,
    cache_dir: str | os.PathLike | None = None,
    forms: Sequence[str] | None = None,
    device: str | int | None = None,
    fp16: bool = False,
    tf32: bool = False,
    trt_module: str = "tensorrt",
    cuda=None,
) -> Scorer:
    """Build a :class:`Scorer`.

    Args:
        name: ``auto`` | ``torch`` | ``onnxruntime`` | ``tensorrt``. ``auto`` tries ``tensorrt``
            (a CUDA GPU, then ``import tensorrt`` + ``Builder()`` probed in a child process, then the
            engine build/load) and falls back to ``onnxruntime`` on ANY failure there; the reason is
            logged once and kept in the scorer's ``fallback_reason``. An explicit ``tensorrt`` raises
            :class:`BackendError` with a one-line reason instead.
        model: checkpoint path (``.pt``), exported ONNX path (one form; from its metadata),
            ``{form: onnx path}``, or a built :class:`fusewatch.engines.fusion.base.FusionModel`.
        meta: metadata for an nn.Module (default: computed). max_batch: TensorRT profile max batch
            (bigger batches are split). threads: ONNX Runtime intra-op threads (0 = default) /
            torch threads when > 0. cache_dir: ONNX exports (``<cache>/onnx``) and TensorRT
            engines (``<cache>/trt``); default ``fusewatch.stream.config.CACHE_DIR``. forms: ONNX forms to
            export (default: both for LEGO, ``features`` otherwise). device: torch device for
            ``torch`` (default cpu) / CUDA ordinal (or ``cuda:N``) for ``tensorrt``. fp16: TensorRT
            FP16. tf32: allow TensorRT TF32 (off by default). trt_module: ``tensorrt`` |
            ``tensorrt_rtx``. cuda: :class:`fusewatch.engines.serving.backends.cuda.CudaOps` for TensorRT (tests).
    The returned scorer has ``requested_backend`` = ``name`` and ``fallback_reason`` ('' unless
    ``auto`` fell back).
    """
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    torch_model, meta2, paths = _resolve_model(model, meta)
    cache = Path(cache_dir) if cache_dir else _default_cache()
    if name == "torch":
        if torch_model is None:
            raise BackendError("backend 'torch' needs a checkpoint or nn.Module, not an ONNX file")
        from fusewatch.engines.serving.backends.torch import TorchScorer

        scorer: Scorer = TorchScorer(torch_model, meta2, device=device or "cpu", threads=threads)
        scorer.requested_backend = name
        return scorer
    if paths is None:
        paths = _export_paths(torch_model, meta2, cache / "onnx", forms)
    reason = ""
    if name in ("auto", "tensorrt"):
        try:
            from fusewatch.engines.serving.backends.tensorrt import TrtScorer

            scorer = TrtScorer(
                paths,
                max_batch=max_batch,
                cache_dir=cache / "trt",
                fp16=fp16,
                tf32=tf32,
                device=_cuda_ordinal(device),
                module=trt_module,
                cuda=cuda,
            )
            scorer.requested_backend = name
            return scorer
        except Exception as e:  # noqa: BLE001 - auto: any TensorRT failure means ONNX Runtime
            if name == "tensorrt":
                if isinstance(e, BackendError):
                    raise
                raise BackendError(f"backend 'tensorrt' failed: {_one_line(e)}") from e
            reason = _one_line(e)
            _log_fallback_once(reason, isinstance(e, BackendUnavailable))
    from fusewatch.engines.serving.backends.onnxruntime import OrtScorer

    scorer = OrtScorer(paths, threads=threads)
    scorer.requested_backend, scorer.fallback_reason = name, reason
    return scorer


__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendUnavailable",
    "MIN_VERSIONS",
    "Scorer",
    "gpu_available",
    "nvidia_smi_gpus",
    "read_export_metas",
    "tensorrt_importable",
    "tensorrt_status",
    "select_backend",
]
