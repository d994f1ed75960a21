"""TensorRT engine building: one logger per process, import + version check, the engine cache key
(ONNX hash, TensorRT version, GPU, precision, TF32), atomic cache writes, and the builder itself
(optimisation profile over the batch axis, TF32 cleared unless asked for, FP16 per TensorRT version)."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from fusewatch.engines.serving.backends.base import (
    BackendError,
    BackendUnavailable,
)
from fusewatch.engines.serving.backends.fp16 import (
    CONVERTER_VERSION,
    fp16_safe_clip_floors,
    to_float16,
)
from fusewatch.engines.serving.backends.probe import version_problem

log = logging.getLogger(__name__)

ENGINE_KEY_VERSION = "2"


_LOGGERS: dict[str, Any] = {}


_LOGGERS_LOCK = threading.Lock()


def trt_logger(trt) -> Any:
    """The process-wide ``trt.Logger`` (severity WARNING) of this TensorRT module — created once."""
    with _LOGGERS_LOCK:
        lg = _LOGGERS.get(trt.__name__)
        if lg is None:
            lg = _LOGGERS[trt.__name__] = trt.Logger(trt.Logger.WARNING)
        return lg


def import_tensorrt(module: str = "tensorrt"):
    """Import and return the TensorRT module (``tensorrt`` or ``tensorrt_rtx``); raises
    :class:`BackendUnavailable` when it does not import or is older than the supported minimum."""
    try:
        trt = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001
        raise BackendUnavailable(f"cannot import {module}: {e}") from None
    problem = version_problem(module, str(getattr(trt, "__version__", "")))
    if problem:
        raise BackendUnavailable(problem)
    return trt


def precision_mode(trt, fp16: bool) -> str:
    """``fp32`` | ``fp16-flag`` (TensorRT 10: ``BuilderFlag.FP16``) | ``fp16-typed`` (no such flag:
    float16 ONNX, strongly typed network)."""
    if not fp16:
        return "fp32"
    return "fp16-flag" if hasattr(trt.BuilderFlag, "FP16") else "fp16-typed"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", s).strip("_") or "gpu"


def engine_cache_key(
    onnx_bytes: bytes,
    *,
    module: str,
    trt_version: str,
    gpu_name: str,
    compute_capability: str,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    precision: str,
    tf32: bool,
) -> str:
    """sha256 hex over everything that changes the built engine."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    parts = (
        ENGINE_KEY_VERSION,
        module,
        trt_version,
        gpu_name,
        compute_capability,
        f"{min_batch}/{opt_batch}/{max_batch}",
        f"precision={precision}",
        f"fp16prep={CONVERTER_VERSION}" if precision != "fp32" else "",
        f"tf32={bool(tf32)}",
    )
    for part in parts:
        h.update(b"\0" + part.encode())
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file + ``os.replace`` (readers never see a
    partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_serialized_engine(
    trt,
    onnx_bytes: bytes,
    *,
    max_batch: int,
    opt_batch: int | None = None,
    min_batch: int = 1,
    timing_cache: str | os.PathLike | None = None,
    fp16: bool = False,
    tf32: bool = False,
    workspace_mb: int = 1024,
    compute_capability: str | None = None,
    logger=None,
) -> bytes:
    """Parse ``onnx_bytes`` and build a serialized engine with ONE optimisation profile that makes
    the batch axis (axis 0 of every input) range over ``min_batch..max_batch`` (opt ``opt_batch``,
    default ``max_batch``); other axes fixed as exported. TF32 is cleared unless ``tf32``; ``fp16``
    see the module doc.

    Works with ``tensorrt`` (needs a GPU) and ``tensorrt_rtx`` (ahead-of-time build also without a
    GPU; ``compute_capability`` e.g. ``"SM89"`` selects a target, timing caches are no-ops there).
    Raises :class:`BackendError` for a builder that cannot be created, parser errors, a rejected
    profile or a failed build."""
    logger = logger or trt_logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # noqa: BLE001 - e.g. TypeError from a null factory after a CUDA init failure
        raise BackendError(
            f"{trt.__name__}.Builder() failed ({type(e).__name__}: {e}); is the CUDA driver usable?"
        ) from None
    if builder is None:
        raise BackendError(f"{trt.__name__}.Builder() returned None (CUDA initialisation failed?)")
    mode = precision_mode(trt, fp16)
    flags = 0
    if mode == "fp16-typed":
        onnx_bytes = to_float16(onnx_bytes).SerializeToString()
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif mode == "fp16-flag":
        onnx_bytes = fp16_safe_clip_floors(onnx_bytes).SerializeToString()
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT ONNX parser rejected the model: {errs or 'no error reported'}")
    config = builder.create_builder_config()
    if hasattr(trt, "MemoryPoolType"):
        try:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        except Exception:  # noqa: BLE001 - not every flavour exposes WORKSPACE
            pass
    tf32_flag = getattr(trt.BuilderFlag, "TF32", None)
    if tf32:
        if tf32_flag is None:
            raise BackendError(f"{trt.__name__} has no TF32 builder flag")
        config.set_flag(tf32_flag)
    elif tf32_flag is not None:
        config.clear_flag(tf32_flag)
        if config.get_flag(tf32_flag):
            raise BackendError("TensorRT kept BuilderFlag.TF32 set after clear_flag")
    if mode == "fp16-flag":
        config.set_flag(trt.BuilderFlag.FP16)
    if compute_capability:
        cc = getattr(trt.ComputeCapability, compute_capability.upper(), None)
        if cc is None:
            raise BackendError(f"unknown compute capability {compute_capability!r}")
        config.num_compute_capabilities = 1
        config.set_compute_capability(cc, 0)
    opt_batch = opt_batch or max_batch
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise BackendError(
            f"batch profile must satisfy 1 <= min <= opt <= max (got {min_batch}/{opt_batch}/{max_batch})"
        )
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = [int(d) for d in list(t.shape)[1:]]
        if any(d < 0 for d in rest):
            raise BackendError(f"input {t.name!r} has dynamic non-batch axes {list(t.shape)}")
        profile.set_shape(t.name, [min_batch] + rest, [opt_batch] + rest, [max_batch] + rest)
    if config.add_optimization_profile(profile) < 0:
        raise BackendError("TensorRT rejected the optimisation profile")
    tc_path = Path(timing_cache) if timing_cache else None
    use_tc = tc_path is not None and trt.__name__ == "tensorrt"
    if use_tc:
        cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.is_file() else b"")
        config.set_timing_cache(cache, False)
    ser = builder.build_serialized_network(network, config)
    if ser is None:
        raise BackendError("TensorRT engine build failed (see the TensorRT log above)")
    if use_tc:
        try:
            atomic_write(tc_path, memoryview(config.get_timing_cache().serialize()).tobytes())
        except Exception as e:  # noqa: BLE001 - the cache is an optimisation only
            log.warning("could not save the TensorRT timing cache %s: %s", tc_path, e)
    return memoryview(ser).tobytes()
