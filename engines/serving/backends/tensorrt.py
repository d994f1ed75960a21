"""TensorRT backend: engines built from the fusewatch ONNX exports, executed with
``execute_async_v3`` on CUDA buffers (through :class:`fusewatch.engines.serving.backends.cuda.CudaOps`).

Supported: TensorRT ≥ 10.0 (``tensorrt``) and TensorRT-RTX ≥ 1.0 (``tensorrt_rtx``), see
:data:`fusewatch.engines.serving.backends.probe.MIN_VERSIONS`. ``tensorrt`` is imported lazily, and only after a CUDA
GPU was seen and the import + ``Builder()`` probe passed in a child process (a TensorRT runtime
without a GPU can crash the interpreter) — construct :class:`TrtScorer` through
:func:`fusewatch.engines.serving.backends.select_backend` (``auto`` falls back to ONNX Runtime on any failure here).

Precision: FP32 with **TF32 cleared** unless ``tf32=True`` (TensorRT enables TF32 by default; it
costs ~1e-4 of score accuracy on the LEGO graphs). ``fp16=True``: on TensorRT 10 the weakly typed
``BuilderFlag.FP16``; where that flag does not exist (TensorRT ≥ 11, TensorRT-RTX: precision follows
the network's types) the ONNX is converted to float16 with float32 I/O
(:func:`fusewatch.engines.serving.backends.fp16.to_float16`) and built strongly typed. Either way the export's
``Clip(min=1e-12)`` guards are first raised to the FP16-safe
:data:`fusewatch.engines.serving.backends.fp16.FP16_SAFE_EPS`, so an absent (all-zero) representation stays finite.

Everything — builder, runtime, deserialisation, execution context, buffers, stream, execution — is
created and run with the configured CUDA device current. One ``trt.Logger`` per TensorRT module per
process (:func:`trt_logger`).

Engine cache: ``<cache_dir>/<key>.engine`` with ``key`` the sha256 of (ONNX bytes, TensorRT module +
version, GPU name, compute capability, batch profile, precision mode, TF32), written atomically;
an entry that does not deserialize is rebuilt once. Timing cache (``tensorrt`` only):
``<cache_dir>/timing-<trt version>-<gpu>-sm<cc>.cache``.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fusewatch.engines.serving.backends.base import (
    BackendError,
    BackendUnavailable,
    Scorer,
    read_export_metas,
)
from fusewatch.engines.serving.backends.cuda import CudaOps
from fusewatch.engines.serving.backends.tensorrt_build import (  # noqa: F401  (re-exported)
    ENGINE_KEY_VERSION,
    _slug,
    atomic_write,
    build_serialized_engine,
    engine_cache_key,
    import_tensorrt,
    precision_mode,
    trt_logger,
)

log = logging.getLogger(__name__)

"""Bump when anything outside the key's other parts changes the built engine."""


class _Engine:
    """One deserialized engine + execution context + device/host buffers sized for ``max_batch`` +
    its own stream, all created with CUDA ``device`` current.

    :meth:`run`: ``{input name: float32 array b×rest, b <= max_batch}`` → the output ``scores``
    (float32, shape as TensorRT reports it for that batch, ``b×N``)."""

    def __init__(self, trt, cuda: CudaOps, engine_bytes: bytes, max_batch: int, device: int, logger):
        self.trt, self.cuda, self.device, self.max_batch = trt, cuda, int(device), int(max_batch)
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.rest: dict[str, tuple[int, ...]] = {}
        self.dev: dict[str, Any] = {}
        self.host: dict[str, Any] = {}
        with cuda.device_scope(self.device):
            self.runtime = trt.Runtime(logger)
            self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise BackendError("TensorRT could not deserialize the engine")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise BackendError("TensorRT could not create an execution context")
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                if self.engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                    raise BackendError(f"engine tensor {name!r} is not float32")
                shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
                if len(shape) < 1 or any(d < 0 for d in shape[1:]):
                    raise BackendError(f"engine tensor {name!r} has shape {shape}: only the batch axis may be dynamic")
                self.rest[name] = shape[1:]
                full = (self.max_batch,) + shape[1:]
                self.dev[name] = cuda.alloc(full, self.device)
                self.host[name] = cuda.alloc_host(full)
                if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    self.inputs.append(name)
                else:
                    self.outputs.append(name)
            if not self.outputs:
                raise BackendError("engine has no output tensor")
            self.out = "scores" if "scores" in self.outputs else self.outputs[0]
            self.stream = cuda.stream(self.device)
        self.lock = threading.Lock()

    def run(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        missing = set(self.inputs) - set(arrays)
        if missing:
            raise BackendError(f"engine inputs not given: {sorted(missing)}")
        b = next(iter(arrays.values())).shape[0]
        if not 1 <= b <= self.max_batch:
            raise BackendError(f"batch {b} outside the engine's profile 1..{self.max_batch}")
        cuda, ctx = self.cuda, self.context
        with self.lock, cuda.device_scope(self.device):
            for name in self.inputs:
                a = np.ascontiguousarray(arrays[name], dtype=np.float32)
                shape = (b,) + self.rest[name]
                if a.shape != shape:
                    raise BackendError(f"input {name!r}: expected shape {shape}, got {a.shape}")
                cuda.to_device(self.dev[name], self.host[name], a, self.stream)
                if not ctx.set_input_shape(name, shape):
                    raise BackendError(f"TensorRT rejected input shape {shape} for {name!r}")
                if not ctx.set_tensor_address(name, cuda.address(self.dev[name])):
                    raise BackendError(f"TensorRT rejected the device address of input {name!r}")
            out_shape = ()
            for name in self.outputs:
                shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
                cap = (self.max_batch,) + self.rest[name]
                if any(d < 0 for d in shape) or len(shape) != len(cap) or any(s > c for s, c in zip(shape, cap)):
                    raise BackendError(
                        f"output {name!r}: TensorRT reports shape {shape} for batch {b}, "
                        f"which does not fit its buffer {cap}"
                    )
                if not ctx.set_tensor_address(name, cuda.address(self.dev[name])):
                    raise BackendError(f"TensorRT rejected the device address of output {name!r}")
                if name == self.out:
                    out_shape = shape
            if not ctx.execute_async_v3(cuda.stream_handle(self.stream)):
                raise BackendError("TensorRT execute_async_v3 failed")
            return cuda.to_host(self.host[self.out], self.dev[self.out], out_shape, self.stream)


class TrtScorer(Scorer):
    """TensorRT scorer.

    Args:
        paths: ``{form: onnx path}`` or one path (form from its metadata); each file's form must
            match its key.
        max_batch: profile max batch (bigger requests are split); opt_batch: profile optimum
            (default ``max_batch``). cache_dir: engine + timing cache directory (default
            ``<CACHE_DIR>/trt``). fp16: FP16 kernels (see the module doc). tf32: allow TF32 (off by
            default). device: CUDA ordinal. module: ``tensorrt`` (default) or ``tensorrt_rtx``.
            workspace_mb: builder workspace. cuda: :class:`CudaOps` (default
            :class:`~fusewatch.engines.serving.backends.cuda.TorchCuda`).
    Attributes: ``gpu_name``, ``compute_capability``, ``trt_version``, ``precision``,
    ``engine_paths`` ``{form: path}``, ``built`` (forms built now rather than loaded from the cache).
    Raises :class:`BackendUnavailable` (no GPU / TensorRT) or :class:`BackendError` (build/load).
    """

    backend = "tensorrt"

    def __init__(
        self,
        paths,
        max_batch: int = 64,
        opt_batch: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        fp16: bool = False,
        tf32: bool = False,
        device: int = 0,
        module: str = "tensorrt",
        workspace_mb: int = 1024,
        cuda: CudaOps | None = None,
    ):
        if cuda is None:
            from fusewatch.engines.serving.backends.cuda import TorchCuda

            cuda = TorchCuda()
        self.cuda = cuda
        ok, why = cuda.probe(module)
        if not ok:
            raise BackendUnavailable(f"backend 'tensorrt' unavailable: {why}")
        trt = import_tensorrt(module)
        paths, metas = read_export_metas(paths)
        from fusewatch.engines.export.tensorrt_ops import check_onnx_for_tensorrt

        for p in paths.values():  # every export TensorRT builds from meets its ONNX parser's op list
            problems = check_onnx_for_tensorrt(str(p))
            if problems:
                raise BackendError(
                    f"tensorrt: {Path(p).name} has what TensorRT's ONNX parser rejects: {problems[0]}"
                    + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
                )
        self.input_names = {f: list(m["inputs"]) for f, m in metas.items()}
        super().__init__(next(iter(metas.values())), tuple(paths), max_batch=int(max_batch))
        if cache_dir is None:
            from fusewatch.engines.serving.backends.artifacts import _default_cache

            cache_dir = _default_cache() / "trt"
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.device = int(device)
        try:
            self.gpu_name, self.compute_capability = cuda.device_info(self.device)
        except Exception as e:  # noqa: BLE001
            raise BackendError(f"CUDA device {self.device}: {e}") from None
        cc = self.compute_capability
        self.trt_version = str(trt.__version__)
        self.precision = precision_mode(trt, fp16)
        self.tf32 = bool(tf32)
        self.logger = trt_logger(trt)
        timing = self.cache_dir / (
            f"timing-{_slug(self.trt_version)}-{_slug(self.gpu_name)}-sm{cc.replace('.', '')}.cache"
        )
        self.engine_paths: dict[str, Path] = {}
        self.engines: dict[str, _Engine] = {}
        self.built: list[str] = []
        opt = int(opt_batch or max_batch)

        def build(onnx_bytes: bytes) -> bytes:
            return build_serialized_engine(
                trt,
                onnx_bytes,
                max_batch=int(max_batch),
                opt_batch=opt,
                timing_cache=timing,
                fp16=fp16,
                tf32=tf32,
                workspace_mb=workspace_mb,
                logger=self.logger,
            )

        with cuda.device_scope(self.device):
            for form, p in paths.items():
                onnx_bytes = p.read_bytes()
                key = engine_cache_key(
                    onnx_bytes,
                    module=trt.__name__,
                    trt_version=self.trt_version,
                    gpu_name=self.gpu_name,
                    compute_capability=cc,
                    min_batch=1,
                    opt_batch=opt,
                    max_batch=int(max_batch),
                    precision=self.precision,
                    tf32=self.tf32,
                )
                ep = self.cache_dir / f"{key[:32]}.engine"
                eng = None
                if ep.is_file():
                    try:
                        eng = _Engine(trt, cuda, ep.read_bytes(), int(max_batch), self.device, self.logger)
                    except BackendError as e:
                        log.warning("cached TensorRT engine %s unusable (%s): rebuilding", ep, e)
                if eng is None:
                    log.info(
                        "building TensorRT engine for %s (%s form, %s, TF32 %s), max batch %d",
                        p,
                        form,
                        self.precision,
                        "on" if tf32 else "off",
                        max_batch,
                    )
                    data = build(onnx_bytes)
                    eng = _Engine(trt, cuda, data, int(max_batch), self.device, self.logger)
                    atomic_write(ep, data)  # cached only once it deserialized
                    self.built.append(form)
                self.engine_paths[form] = ep
                self.engines[form] = eng

    def _check(self, out: np.ndarray, b: int) -> np.ndarray:
        if out.shape != (b, self.window):
            raise BackendError(f"TensorRT output shape {out.shape}, expected ({b}, {self.window})")
        return out

    def _run_graphs(self, r, mask, present, u=None):
        arrays = (r, mask, present) if u is None else (r, mask, present, u)
        names = self.input_names["graphs"]
        if len(names) != len(arrays):
            raise BackendError(f"graphs engine inputs {names} do not match {len(arrays)} arrays")
        return self._check(self.engines["graphs"].run(dict(zip(names, arrays))), r.shape[0])

    def _run_features(self, *arrays):
        out = self.engines["features"].run(dict(zip(self.input_names["features"], arrays)))
        return self._check(out, arrays[0].shape[0])

    def close(self) -> None:
        self.engines = {}


def main(argv: list[str] | None = None) -> int:
    """``python -m fusewatch.engines.serving.backends.tensorrt --onnx M.onnx --out E.engine [--module tensorrt_rtx]``:
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
    ap.add_argument("--tf32", action="store_true", help="allow TF32 (cleared by default)")
    ap.add_argument("--compute-capability", default=None, help="tensorrt_rtx target, e.g. SM89")
    a = ap.parse_args(argv)
    try:
        trt = import_tensorrt(a.module)
        data = build_serialized_engine(
            trt,
            Path(a.onnx).read_bytes(),
            max_batch=a.max_batch,
            opt_batch=a.opt_batch,
            timing_cache=a.timing_cache,
            fp16=a.fp16,
            tf32=a.tf32,
            compute_capability=a.compute_capability,
        )
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3 if "parser" in str(e) else 2
    atomic_write(Path(a.out), data)
    print(
        f"{a.out}: {len(data)} bytes ({trt.__name__} {trt.__version__}, "
        f"{precision_mode(trt, a.fp16)}, TF32 {'on' if a.tf32 else 'off'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
