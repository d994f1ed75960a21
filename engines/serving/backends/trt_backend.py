"""TensorRT backend: engines built from the fusewatch ONNX exports, executed with
``execute_async_v3`` on CUDA buffers owned by torch.

``tensorrt`` is imported lazily, and only after a CUDA GPU was seen (a TensorRT runtime without
a GPU can crash the interpreter) — construct :class:`TrtScorer` through
:func:`fusewatch.engines.serving.backends.select_backend`, or check :func:`fusewatch.engines.serving.backends.tensorrt_status` first.

Engine cache: ``<cache_dir>/<key>.engine`` with ``key`` the sha256 of (ONNX bytes, TensorRT
version, GPU name, compute capability, batch profile, precision flags). Timing cache:
``<cache_dir>/timing-<trt version>-<gpu>-sm<cc>.cache`` (reused and updated by every build).
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fusewatch.engines.serving.backends import BackendError, Scorer, tensorrt_status

log = logging.getLogger(__name__)


def import_tensorrt(module: str = "tensorrt"):
    """Import and return the TensorRT module (``tensorrt`` or ``tensorrt_rtx``)."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001
        raise BackendError(f"cannot import {module}: {e}") from None


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", s).strip("_") or "gpu"


def engine_cache_key(onnx_bytes: bytes, trt_version: str, gpu_name: str, compute_capability: str,
                     min_batch: int, opt_batch: int, max_batch: int, fp16: bool) -> str:
    """sha256 hex over everything that changes the built engine."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    for part in (trt_version, gpu_name, compute_capability, f"{min_batch}/{opt_batch}/{max_batch}",
                 f"fp16={bool(fp16)}"):
        h.update(b"\0" + part.encode())
    return h.hexdigest()


def build_serialized_engine(trt, onnx_bytes: bytes, *, max_batch: int, opt_batch: int | None = None,
                            min_batch: int = 1, timing_cache: str | os.PathLike | None = None,
                            fp16: bool = False, workspace_mb: int = 1024,
                            compute_capability: str | None = None, logger=None) -> bytes:
    """Parse ``onnx_bytes`` and build a serialized engine with ONE optimisation profile that makes
    the batch axis (axis 0 of every input) range over ``min_batch..max_batch`` (opt ``opt_batch``,
    default ``max_batch``); other axes fixed as exported.

    Works with ``tensorrt`` (needs a GPU) and ``tensorrt_rtx`` (ahead-of-time build also without a
    GPU; ``compute_capability`` e.g. ``"SM89"`` selects a target, timing caches are no-ops there).
    Raises :class:`BackendError` with the parser errors / build failure."""
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT ONNX parser rejected the model: {errs}")
    config = builder.create_builder_config()
    if hasattr(trt, "MemoryPoolType"):
        try:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        except Exception:  # noqa: BLE001 - not every flavour exposes WORKSPACE
            pass
    if fp16:
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:
            raise BackendError(f"{trt.__name__} has no FP16 builder flag (strongly typed only)")
        config.set_flag(flag)
    if compute_capability:
        cc = getattr(trt.ComputeCapability, compute_capability.upper(), None)
        if cc is None:
            raise BackendError(f"unknown compute capability {compute_capability!r}")
        config.num_compute_capabilities = 1
        config.set_compute_capability(cc, 0)
    opt_batch = opt_batch or max_batch
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = [int(d) for d in list(t.shape)[1:]]
        if any(d < 0 for d in rest):
            raise BackendError(f"input {t.name!r} has dynamic non-batch axes {list(t.shape)}")
        profile.set_shape(t.name, [min_batch] + rest, [opt_batch] + rest, [max_batch] + rest)
    config.add_optimization_profile(profile)
    tc_data = b""
    tc_path = Path(timing_cache) if timing_cache else None
    use_tc = tc_path is not None and trt.__name__ == "tensorrt"
    if use_tc and tc_path.is_file():
        tc_data = tc_path.read_bytes()
    if use_tc:
        cache = config.create_timing_cache(tc_data)
        config.set_timing_cache(cache, False)
    ser = builder.build_serialized_network(network, config)
    if ser is None:
        raise BackendError("TensorRT engine build failed (see the TensorRT log above)")
    if use_tc:
        try:
            data = memoryview(config.get_timing_cache().serialize()).tobytes()
            tc_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = tc_path.with_name(tc_path.name + f".tmp{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, tc_path)
        except Exception as e:  # noqa: BLE001 - the cache is an optimisation only
            log.warning("could not save the TensorRT timing cache %s: %s", tc_path, e)
    return memoryview(ser).tobytes()


class _Engine:
    """One deserialized engine + execution context + torch CUDA buffers sized for ``max_batch``."""

    def __init__(self, trt, torch, engine_bytes: bytes, max_batch: int, device, logger):
        self.trt, self.torch = trt, torch
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise BackendError("TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        self.device = device
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dev: dict[str, Any] = {}
        self.host: dict[str, Any] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise BackendError(f"engine tensor {name!r} is not float32")
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            full = (max_batch,) + shape[1:]
            self.shapes[name] = shape
            self.dev[name] = torch.empty(full, dtype=torch.float32, device=device)
            self.host[name] = torch.empty(full, dtype=torch.float32, pin_memory=True)
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.inputs.append(name)
            else:
                self.outputs.append(name)
        self.stream = torch.cuda.Stream(device=device)
        self.lock = threading.Lock()

    def run(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """``{input name: float32 array with batch <= max_batch}`` → first output (host copy)."""
        torch = self.torch
        missing = set(self.inputs) - set(arrays)
        if missing:
            raise BackendError(f"engine inputs not given: {sorted(missing)}")
        b = next(iter(arrays.values())).shape[0]
        with self.lock, torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for name in self.inputs:
                a = arrays[name]
                self.host[name][:b].numpy()[...] = a
                self.dev[name][:b].copy_(self.host[name][:b], non_blocking=True)
                self.context.set_input_shape(name, (b,) + self.shapes[name][1:])
                self.context.set_tensor_address(name, self.dev[name].data_ptr())
            for name in self.outputs:
                self.context.set_tensor_address(name, self.dev[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed")
            out = self.outputs[0]
            self.host[out][:b].copy_(self.dev[out][:b], non_blocking=True)
            self.stream.synchronize()
            return self.host[out][:b].numpy().copy()


class TrtScorer(Scorer):
    """TensorRT scorer.

    Args:
        paths: ``{form: onnx path}`` or one path (form from its metadata).
        max_batch: profile max batch (bigger requests are split); opt_batch: profile optimum
            (default ``max_batch``). cache_dir: engine + timing cache directory (default
            ``<CACHE_DIR>/trt``). fp16: enable FP16 kernels. device: CUDA ordinal.
        module: ``tensorrt`` (default) or ``tensorrt_rtx``. workspace_mb: builder workspace.
    """

    backend = "tensorrt"

    def __init__(self, paths, max_batch: int = 64, opt_batch: int | None = None,
                 cache_dir: str | os.PathLike | None = None, fp16: bool = False, device: int = 0,
                 module: str = "tensorrt", workspace_mb: int = 1024):
        from fusewatch.engines.export.onnx_meta import read_onnx_meta

        ok, why = tensorrt_status(module)
        if not ok:
            raise BackendError(f"backend 'tensorrt' unavailable: {why}")
        import torch

        trt = import_tensorrt(module)
        if not isinstance(paths, Mapping):
            paths = {read_onnx_meta(paths)["form"]: paths}
        metas = {f: read_onnx_meta(p) for f, p in paths.items()}
        if len({m.get("model_version") for m in metas.values()}) > 1:
            raise BackendError("ONNX files come from different models")
        self.input_names = {f: list(m["inputs"]) for f, m in metas.items()}
        super().__init__(next(iter(metas.values())), tuple(paths), max_batch=int(max_batch))
        if cache_dir is None:
            from fusewatch.engines.serving.backends import _default_cache

            cache_dir = _default_cache() / "trt"
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device("cuda", int(device))
        props = torch.cuda.get_device_properties(self.device)
        gpu = props.name
        cc = f"{props.major}.{props.minor}"
        self.trt_version = str(trt.__version__)
        self.logger = trt.Logger(trt.Logger.WARNING)
        timing = self.cache_dir / f"timing-{_slug(self.trt_version)}-{_slug(gpu)}-sm{cc.replace('.', '')}.cache"
        self.engine_paths: dict[str, Path] = {}
        self.engines: dict[str, _Engine] = {}
        opt = int(opt_batch or max_batch)
        for form, p in paths.items():
            onnx_bytes = Path(p).read_bytes()
            key = engine_cache_key(onnx_bytes, self.trt_version, gpu, cc, 1, opt, int(max_batch), fp16)
            ep = self.cache_dir / f"{key[:32]}.engine"
            data = ep.read_bytes() if ep.is_file() else None
            if data is None:
                log.info("building TensorRT engine for %s (%s form), max batch %d", p, form, max_batch)
                data = build_serialized_engine(trt, onnx_bytes, max_batch=int(max_batch), opt_batch=opt,
                                               timing_cache=timing, fp16=fp16, workspace_mb=workspace_mb,
                                               logger=self.logger)
                tmp = ep.with_name(ep.name + f".tmp{os.getpid()}")
                tmp.write_bytes(data)
                os.replace(tmp, ep)
            try:
                eng = _Engine(trt, torch, data, int(max_batch), self.device, self.logger)
            except BackendError:
                ep.unlink(missing_ok=True)  # stale/corrupt cache entry: rebuild once
                data = build_serialized_engine(trt, onnx_bytes, max_batch=int(max_batch), opt_batch=opt,
                                               timing_cache=timing, fp16=fp16, workspace_mb=workspace_mb,
                                               logger=self.logger)
                ep.write_bytes(data)
                eng = _Engine(trt, torch, data, int(max_batch), self.device, self.logger)
            self.engine_paths[form] = ep
            self.engines[form] = eng

    def _run_graphs(self, r, mask, present, u=None):
        arrays = (r, mask, present) if u is None else (r, mask, present, u)
        names = self.input_names["graphs"]
        if len(names) != len(arrays):
            raise BackendError(f"graphs engine inputs {names} do not match {len(arrays)} arrays")
        return self.engines["graphs"].run(dict(zip(names, arrays)))

    def _run_features(self, *arrays):
        return self.engines["features"].run(dict(zip(self.input_names["features"], arrays)))

    def close(self) -> None:
        self.engines = {}


def main(argv: list[str] | None = None) -> int:
    """``python -m fusewatch.engines.serving.backends.trt_backend --onnx M.onnx --out E.engine [--module tensorrt_rtx]``:
    build a serialized engine offline. Exit status 0 ok, 3 ONNX parser rejection, 2 other failure."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--module", default="tensorrt", choices=("tensorrt", "tensorrt_rtx"))
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--opt-batch", type=int, default=None)
    ap.add_argument("--timing-cache", default=None)
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--compute-capability", default=None, help="tensorrt_rtx target, e.g. SM89")
    a = ap.parse_args(argv)
    trt = import_tensorrt(a.module)
    try:
        data = build_serialized_engine(trt, Path(a.onnx).read_bytes(), max_batch=a.max_batch,
                                       opt_batch=a.opt_batch, timing_cache=a.timing_cache, fp16=a.fp16,
                                       compute_capability=a.compute_capability)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if "parser" in str(e) else 2
    Path(a.out).write_bytes(data)
    print(f"{a.out}: {len(data)} bytes ({trt.__name__} {trt.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
