"""The CUDA memory and stream operations the TensorRT backend needs, behind one small interface
(:class:`CudaOps`) so that tests can replace CUDA together with ``tensorrt``.

:class:`TorchCuda` implements it with torch (CUDA build): device buffers and pinned host buffers are
float32 torch tensors, copies are asynchronous on the scorer's own stream.

Shapes: buffers are allocated at their largest size ``(max_batch, *rest)``; copies move the first
``b`` rows (batch entries).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ContextManager

import numpy as np


class CudaOps(ABC):
    """What :class:`fusewatch.engines.serving.backends.tensorrt.TrtScorer` does with CUDA. Every method that creates or
    touches device state is called inside :meth:`device_scope` of the configured device."""

    @abstractmethod
    def probe(self, module: str) -> tuple[bool, str]:
        """``(usable, reason)``: a GPU is there and ``module`` (``tensorrt``/``tensorrt_rtx``) imports."""

    @abstractmethod
    def device_scope(self, device: int) -> ContextManager:
        """Make ``device`` (CUDA ordinal) current for the duration of the ``with`` block."""

    @abstractmethod
    def device_info(self, device: int) -> tuple[str, str]:
        """``(GPU name, compute capability "major.minor")``; raises for a device that does not exist."""

    @abstractmethod
    def alloc(self, shape: tuple[int, ...], device: int) -> Any:
        """A float32 device buffer of ``shape`` on ``device``."""

    @abstractmethod
    def alloc_host(self, shape: tuple[int, ...]) -> Any:
        """A float32 pinned host buffer of ``shape``."""

    @abstractmethod
    def address(self, buf: Any) -> int:
        """Device pointer of a device buffer (what ``set_tensor_address`` takes)."""

    @abstractmethod
    def stream(self, device: int) -> Any:
        """A new CUDA stream on ``device``."""

    @abstractmethod
    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` value of ``stream`` (what ``execute_async_v3`` takes)."""

    @abstractmethod
    def to_device(self, dev: Any, host: Any, a: np.ndarray, stream: Any) -> None:
        """Copy ``a`` (``b×rest``, float32) into the first ``b`` rows of ``dev`` (through ``host``),
        asynchronously on ``stream``."""

    @abstractmethod
    def to_host(self, host: Any, dev: Any, shape: tuple[int, ...], stream: Any) -> np.ndarray:
        """Copy the first ``prod(shape)`` elements of ``dev`` to ``host``, wait for ``stream``, return
        them as a new float32 numpy array of ``shape``."""


class TorchCuda(CudaOps):
    """:class:`CudaOps` on torch's CUDA runtime (needs a CUDA build of torch)."""

    def __init__(self):
        import torch

        self.torch = torch

    def probe(self, module: str) -> tuple[bool, str]:
        from fusewatch.engines.serving.backends.probe import tensorrt_status

        return tensorrt_status(module)

    def device_scope(self, device: int) -> ContextManager:
        return self.torch.cuda.device(int(device))

    def device_info(self, device: int) -> tuple[str, str]:
        n = self.torch.cuda.device_count()
        if not 0 <= int(device) < n:
            raise ValueError(f"CUDA device {device} does not exist ({n} visible)")
        p = self.torch.cuda.get_device_properties(int(device))
        return str(p.name), f"{p.major}.{p.minor}"

    def alloc(self, shape, device):
        return self.torch.empty(tuple(shape), dtype=self.torch.float32, device=f"cuda:{int(device)}")

    def alloc_host(self, shape):
        return self.torch.empty(tuple(shape), dtype=self.torch.float32, pin_memory=True)

    def address(self, buf) -> int:
        return int(buf.data_ptr())

    def stream(self, device):
        return self.torch.cuda.Stream(device=f"cuda:{int(device)}")

    def stream_handle(self, stream) -> int:
        return int(stream.cuda_stream)

    def to_device(self, dev, host, a, stream) -> None:
        b = a.shape[0]
        host[:b].numpy()[...] = a
        with self.torch.cuda.stream(stream):
            dev[:b].copy_(host[:b], non_blocking=True)

    def to_host(self, host, dev, shape, stream) -> np.ndarray:
        n = int(np.prod(shape))
        h, d = host.view(-1)[:n], dev.view(-1)[:n]
        with self.torch.cuda.stream(stream):
            h.copy_(d, non_blocking=True)
        stream.synchronize()
        return h.numpy().reshape(shape).copy()
