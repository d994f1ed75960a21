"""A faithful fake of the ``tensorrt`` Python module (the subset fusewatch uses) and of CUDA
(:class:`FakeCuda`, an :class:`fusewatch.engines.serving.backends.cuda.CudaOps`), for tests on machines without a GPU.

:func:`make_fake` → ``(trt module, FakeCuda, State)`` sharing one :class:`State` that records every call
(``state.calls``: ``(event, details)``, each with the CUDA device current at the time) and injects
failures on demand (``state.fail[event] = True`` → the call reports failure the way TensorRT does:
``False`` / ``None`` / ``-1``; an exception instance → raised).

Behaviour follows TensorRT 10/11: a new builder config has ``BuilderFlag.TF32`` set; the parser reads
the real ONNX graph inputs/outputs (batch axis ``-1``); a build needs every input in an optimisation
profile with ``min <= opt <= max``; the context accepts input shapes inside the profile only, derives
output shapes from them, and ``execute_async_v3`` needs every I/O address and input shape. Execution
runs the engine's ONNX on the bytes at the bound "device" addresses: with ONNX Runtime in FP32, and
in FP16 (``BuilderFlag.FP16`` or a strongly typed float16 network) with every layer computed in
float16 by ``onnx.reference`` — the worst case TensorRT may choose. ``fp16_flag=False`` gives the
TensorRT ≥ 11 / TensorRT-RTX flavour (no ``BuilderFlag.FP16``).
"""

from __future__ import annotations

import enum
import json
import types
from typing import Any

import numpy as np
import onnx

from fusewatch.engines.serving.backends.cuda import CudaOps

MAGIC = b"FAKETRT1"
FAKE_ONLY = {"REAL_NAME"}
"""Attributes of the fake classes that are not part of the TensorRT API (excluded from the drift check)."""


class State:
    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.fail: dict[str, Any] = {}
        self.device = 0
        self.memory: dict[int, np.ndarray] = {}

    def record(self, event: str, **kw) -> None:
        kw.setdefault("device", self.device)
        self.calls.append((event, kw))

    def events(self, event: str) -> list[dict]:
        return [d for e, d in self.calls if e == event]

    def failing(self, event: str) -> bool:
        f = self.fail.get(event)
        if isinstance(f, BaseException):
            raise f
        return bool(f)


class FakeCuda(CudaOps):
    """CUDA stand-in: "device" buffers are numpy arrays addressed by their data pointer."""

    def __init__(
        self,
        state: State,
        devices: tuple[str, ...] = ("Fake GPU A", "Fake GPU B"),
        usable: tuple[bool, str] = (True, "10.8.0"),
    ):
        self.state, self.devices, self.usable = state, devices, usable

    def probe(self, module):
        self.state.record("probe", module=module)
        return self.usable

    def device_scope(self, device):
        state = self

        class _Scope:
            def __enter__(self):
                self.prev = state.state.device
                state.state.device = int(device)

            def __exit__(self, *exc):
                state.state.device = self.prev

        return _Scope()

    def device_info(self, device):
        if not 0 <= device < len(self.devices):
            raise ValueError(f"CUDA device {device} does not exist ({len(self.devices)} visible)")
        return self.devices[device], "8.9"

    def alloc(self, shape, device):
        a = np.full(shape, np.nan, np.float32)
        self.state.memory[a.ctypes.data] = a
        self.state.record("alloc", shape=tuple(shape), on=int(device))
        return a

    def alloc_host(self, shape):
        return np.zeros(shape, np.float32)

    def address(self, buf):
        return int(buf.ctypes.data)

    def stream(self, device):
        self.state.record("stream", on=int(device))
        return types.SimpleNamespace(handle=1000 + int(device))

    def stream_handle(self, stream):
        return stream.handle

    def to_device(self, dev, host, a, stream):
        host[: a.shape[0]] = a
        dev[: a.shape[0]] = host[: a.shape[0]]

    def to_host(self, host, dev, shape, stream):
        n = int(np.prod(shape))
        host.reshape(-1)[:n] = dev.reshape(-1)[:n]
        return host.reshape(-1)[:n].reshape(shape).copy()


def _dims(vi) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)


def make_fake(version: str = "10.8.0.43", fp16_flag: bool = True, name: str = "tensorrt"):
    """→ ``(module, FakeCuda, State)``; see the module doc."""
    state = State()
    trt = types.ModuleType(name)
    trt.__version__ = version

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class Logger:
        REAL_NAME = "Logger"
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = (
            Severity.INTERNAL_ERROR,
            Severity.ERROR,
            Severity.WARNING,
            Severity.INFO,
            Severity.VERBOSE,
        )

        def __init__(self, min_severity=Severity.WARNING):
            self.min_severity = min_severity
            state.record("Logger", severity=int(min_severity))

    Logger.Severity = Severity
    flags = {"TF32": 1, "STRICT_NANS": 2}
    if fp16_flag:
        flags["FP16"] = 0
    BuilderFlag = enum.IntEnum("BuilderFlag", flags)
    NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 1})
    MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT32": 3, "BOOL": 4, "INT64": 9})
    TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    ComputeCapability = enum.IntEnum("ComputeCapability", {"NONE": 0, "CURRENT": 1, "SM89": 89})
    dtypes = {onnx.TensorProto.FLOAT: DataType.FLOAT, onnx.TensorProto.FLOAT16: DataType.HALF}

    class ITensor:
        REAL_NAME = "ITensor"

        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    class INetworkDefinition:
        REAL_NAME = "INetworkDefinition"

        def __init__(self, flags):
            self.flags, self.onnx = flags, None
            self._inputs: list[ITensor] = []
            self._outputs: list[ITensor] = []

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_input(self, i):
            return self._inputs[i]

        def get_output(self, i):
            return self._outputs[i]

    class OnnxParser:
        REAL_NAME = "OnnxParser"

        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, model: bytes) -> bool:
            state.record("parse", size=len(model))
            if state.failing("parse"):
                self.errors = ["In node 3 (importFake): UNSUPPORTED_NODE: fake parser failure"]
                return False
            try:
                proto = onnx.load_from_string(bytes(model))
                onnx.checker.check_model(proto)
            except Exception as e:  # noqa: BLE001
                self.errors = [f"ModelImporter: {e}"]
                return False
            g = proto.graph
            self.network.onnx = bytes(model)
            self.network._inputs = [ITensor(v.name, _dims(v), dtypes[v.type.tensor_type.elem_type]) for v in g.input]
            self.network._outputs = [ITensor(v.name, _dims(v), dtypes[v.type.tensor_type.elem_type]) for v in g.output]
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class IOptimizationProfile:
        REAL_NAME = "IOptimizationProfile"

        def __init__(self):
            self.shapes: dict[str, list] = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's keyword names
            self.shapes[input] = [tuple(min), tuple(opt), tuple(max)]

        def get_shape(self, input):  # noqa: A002
            return self.shapes.get(input, [])

    class ITimingCache:
        REAL_NAME = "ITimingCache"

        def __init__(self, data: bytes):
            self.data = bytes(data) or b"timing"

        def serialize(self):
            return self.data

    class IBuilderConfig:
        REAL_NAME = "IBuilderConfig"

        def __init__(self):
            self.flags = 1 << int(BuilderFlag.TF32)  # TensorRT enables TF32 by default
            self.profiles: list[IOptimizationProfile] = []
            self.pools: dict = {}
            self.timing_cache = None
            self.num_compute_capabilities = 0

        def set_flag(self, flag):
            self.flags |= 1 << int(flag)

        def clear_flag(self, flag):
            self.flags &= ~(1 << int(flag))

        def get_flag(self, flag):
            return bool(self.flags & (1 << int(flag)))

        def set_memory_pool_limit(self, pool, pool_size):
            self.pools[pool] = pool_size

        def add_optimization_profile(self, profile):
            if state.failing("add_optimization_profile"):
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing_cache = cache
            return True

        def get_timing_cache(self):
            return self.timing_cache

        def set_compute_capability(self, compute_capability, index):
            return True

    class Builder:
        REAL_NAME = "Builder"

        def __init__(self, logger):
            state.record("Builder")
            if state.failing("Builder"):  # what pybind11 raises when CUDA initialisation failed
                raise TypeError("pybind11::init(): factory function returned nullptr")
            self.logger = logger

        def create_network(self, flags=0):
            state.record("create_network", flags=int(flags))
            return INetworkDefinition(int(flags))

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            profile = config.profiles[0].shapes if config.profiles else {}
            state.record(
                "build",
                flags={f.name for f in BuilderFlag if config.get_flag(f)},
                profile=dict(profile),
                network_flags=network.flags,
            )
            if state.failing("build") or network.onnx is None:
                return None
            for t in network._inputs:
                if t.name not in profile:
                    return None  # "Network has dynamic or shape inputs, but no optimization profile"
                lo, opt, hi = profile[t.name]
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    return None
            strongly_typed = bool(network.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            header = {
                "profile": {k: [list(s) for s in v] for k, v in profile.items()},
                "fp16_flag": "FP16" in BuilderFlag.__members__ and config.get_flag(BuilderFlag["FP16"]),
                "strongly_typed": strongly_typed,
                "io": [[t.name, "in", list(t.shape)] for t in network._inputs]
                + [[t.name, "out", list(t.shape)] for t in network._outputs],
            }
            h = json.dumps(header).encode()
            return MAGIC + len(h).to_bytes(4, "little") + h + network.onnx

    class IExecutionContext:
        REAL_NAME = "IExecutionContext"

        def __init__(self, engine):
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self._session = None

        def set_input_shape(self, name, shape):
            shape = tuple(int(d) for d in shape)
            state.record("set_input_shape", name=name, shape=shape)
            if state.failing("set_input_shape") or name not in self.engine.profile:
                return False
            lo, _opt, hi = self.engine.profile[name]
            if len(shape) != len(lo) or not all(a <= s <= c for a, s, c in zip(lo, shape, hi)):
                return False
            self.shapes[name] = shape
            return True

        def set_tensor_address(self, name, memory):
            state.record("set_tensor_address", name=name, address=int(memory))
            if state.failing("set_tensor_address") or name not in self.engine.io or not memory:
                return False
            self.addresses[name] = int(memory)
            return True

        def get_tensor_shape(self, name):
            mode, shape = self.engine.io[name]
            if mode == "in":
                return self.shapes.get(name, tuple(shape))
            b = {s[0] for s in self.shapes.values()}
            if len(b) != 1 or len(self.shapes) < len(self.engine.inputs):
                return tuple(shape)  # not all input shapes known yet: -1 stays
            out = (b.pop(),) + tuple(shape[1:])
            if state.fail.get("output_shape"):  # more columns than the buffer holds
                out = out[:-1] + (out[-1] + 1,)
            if state.fail.get("output_rows"):  # fits the buffer, not the batch
                out = (out[0] - 1,) + out[1:]
            return out

        def execute_async_v3(self, stream_handle):
            state.record("execute", stream=stream_handle, shapes=dict(self.shapes), addresses=dict(self.addresses))
            if state.failing("execute"):
                return False
            if set(self.addresses) != set(self.engine.io) or set(self.shapes) != set(self.engine.inputs):
                return False
            feeds = {}
            for name in self.engine.inputs:
                buf = state.memory[self.addresses[name]].reshape(-1)
                n = int(np.prod(self.shapes[name]))
                feeds[name] = buf[:n].reshape(self.shapes[name]).copy()
            outs = self._run(feeds)
            for name, val in zip(self.engine.outputs, outs):
                buf = state.memory[self.addresses[name]].reshape(-1)
                buf[: val.size] = val.reshape(-1)
            return True

        def _run(self, feeds):
            e = self.engine
            proto = onnx.load_from_string(e.onnx)
            if e.fp16_flag or e.strongly_typed:
                from onnx.reference import ReferenceEvaluator

                from fusewatch.engines.serving.backends.fp16 import to_float16

                typed16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
                # BuilderFlag.FP16: TensorRT may run any layer in FP16 — emulate all of them, Clip
                # constants as given (the backend must have made them FP16-safe itself)
                net = proto if typed16 else to_float16(proto, safe_floors=False)
                with np.errstate(all="ignore"):
                    return [np.asarray(o, np.float32) for o in ReferenceEvaluator(net).run(None, feeds)]
            if self._session is None:
                import onnxruntime as ort

                so = ort.SessionOptions()
                so.intra_op_num_threads = 1
                self._session = ort.InferenceSession(e.onnx, so, providers=["CPUExecutionProvider"])
            return self._session.run(None, feeds)

    class ICudaEngine:
        REAL_NAME = "ICudaEngine"

        def __init__(self, header, onnx_bytes):
            self.onnx = onnx_bytes
            self.profile = {k: [tuple(s) for s in v] for k, v in header["profile"].items()}
            self.fp16_flag, self.strongly_typed = header["fp16_flag"], header["strongly_typed"]
            self.io = {n: (mode, tuple(shape)) for n, mode, shape in header["io"]}
            self.names = [n for n, _m, _s in header["io"]]
            self.inputs = [n for n, m, _s in header["io"] if m == "in"]
            self.outputs = [n for n, m, _s in header["io"] if m == "out"]

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, index):
            return self.names[index]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if self.io[name][0] == "in" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return DataType.HALF if state.fail.get("dtype") else DataType.FLOAT

        def get_tensor_shape(self, name):
            return self.io[name][1]

        def create_execution_context(self):
            state.record("create_execution_context")
            return None if state.failing("create_execution_context") else IExecutionContext(self)

    class Runtime:
        REAL_NAME = "Runtime"

        def __init__(self, logger):
            state.record("Runtime")

        def deserialize_cuda_engine(self, serialized_engine):
            data = bytes(serialized_engine)
            state.record("deserialize", size=len(data))
            if state.failing("deserialize") or not data.startswith(MAGIC):
                return None
            n = int.from_bytes(data[8:12], "little")
            return ICudaEngine(json.loads(data[12 : 12 + n]), data[12 + n :])

    for obj in (
        Logger,
        Builder,
        OnnxParser,
        Runtime,
        BuilderFlag,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        DataType,
        TensorIOMode,
        ComputeCapability,
    ):
        setattr(trt, obj.__name__, obj)
    trt.IBuilderConfig, trt.INetworkDefinition, trt.IOptimizationProfile = (
        IBuilderConfig,
        INetworkDefinition,
        IOptimizationProfile,
    )
    trt.ICudaEngine, trt.IExecutionContext, trt.ITensor, trt.ITimingCache = (
        ICudaEngine,
        IExecutionContext,
        ITensor,
        ITimingCache,
    )
    return trt, FakeCuda(state), state


def engine_onnx(serialized: bytes) -> onnx.ModelProto:
    """The ONNX network inside a fake serialized engine (what the parser was given)."""
    n = int.from_bytes(serialized[8:12], "little")
    return onnx.load_from_string(serialized[12 + n :])


API_CLASSES = (
    "Logger",
    "Builder",
    "OnnxParser",
    "Runtime",
    "IBuilderConfig",
    "INetworkDefinition",
    "IOptimizationProfile",
    "ICudaEngine",
    "IExecutionContext",
    "ITensor",
    "ITimingCache",
)
API_ENUMS = (
    "BuilderFlag",
    "NetworkDefinitionCreationFlag",
    "MemoryPoolType",
    "DataType",
    "TensorIOMode",
    "ComputeCapability",
)
INSTANCE_API = {
    "Logger.min_severity",
    "IBuilderConfig.flags",
    "IBuilderConfig.num_compute_capabilities",
    "INetworkDefinition.flags",
    "ITensor.name",
    "ITensor.shape",
    "ITensor.dtype",
}
"""API attributes the fake sets per instance (invisible to ``vars(class)``)."""
TENSORRT10_ONLY = {"BuilderFlag.FP16"}
"""Fake names that exist in TensorRT 10 only (not in TensorRT ≥ 11 / TensorRT-RTX)."""


def api_names(trt) -> set[str]:
    """``"Class.member"`` names of the fake's public API (module functions/classes, class members,
    enum members) — what the drift test looks up in the real bindings."""
    out = set(INSTANCE_API)
    for cname in API_CLASSES:
        cls = getattr(trt, cname)
        out.add(cname)
        for k in vars(cls):
            if not k.startswith("_") and k not in FAKE_ONLY:
                out.add(f"{cname}.{k}")
    for ename in API_ENUMS:
        out.add(ename)
        out.update(f"{ename}.{m}" for m in getattr(trt, ename).__members__)
    return out
