"""The extractor interface: one clip (sampled RGB frames + optional mono audio) → one feature vector.

Every representation of a clip (a CNN backbone's pooled features, motion statistics, audio
statistics, a user ONNX model's output) is produced by an :class:`Extractor`. Extractors are built
once per worker by :func:`fusewatch.stream.extractors.build_extractors` and then called for every clip; they
hold no per-clip state, so one instance may serve any number of cameras. The built-in extractors
may be called from several threads at once (ONNX Runtime sessions are thread-safe; the flow
extractor is too with the default Farnebäck method, not with ``flow_method = "dis"``, whose OpenCV
object keeps state — give each thread its own extractors then).
"""

from __future__ import annotations

import abc
import hashlib
import os
from pathlib import Path

import numpy as np

from fusewatch.errors import ConfigError


class Extractor(abc.ABC):
    """One clip representation.

    Attributes (set by every subclass, read by the producer and the engine):

    ``name``
        representation name as it appears in feature messages (``"mobilenetv2"``, ``"flow"``, …)
    ``dim``
        length of the float32 vector :meth:`extract` returns
    ``version``
        extractor version string; CNN extractors include the weights' sha256 prefix, so features
        computed with other weights or another preprocessing never mix silently
    ``needs_audio``
        whether the extractor reads the ``audio`` argument (the producer may skip audio decoding
        when no extractor needs it)
    """

    name: str
    dim: int
    version: str
    needs_audio: bool = False

    @abc.abstractmethod
    def extract(self, frames: list[np.ndarray], audio: np.ndarray | None, audio_rate: int | None) -> np.ndarray | None:
        """Features of one clip.

        ``frames``: the clip's sampled frames, each H×W×3 uint8 RGB; ``audio``: mono float32 samples
        covering the clip (or None); ``audio_rate``: its sample rate in Hz. Returns float32
        ``(dim,)``, or None when the representation is absent (e.g. no audio).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, version={self.version!r})"


def check_frames(frames: list[np.ndarray], who: str) -> None:
    """Raise ValueError (one line) unless ``frames`` is a non-empty list of H×W×3 uint8 arrays."""
    if not len(frames):
        raise ValueError(f"{who}: empty clip (no frames)")
    for f in frames:
        if not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            desc = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
            raise ValueError(f"{who}: frames must be H×W×3 uint8 RGB arrays (got {desc})")


def pool_frames(per_frame: np.ndarray, pool: str) -> np.ndarray:
    """Pool per-frame features ``(T, D)`` over frames: ``mean`` → (D,), ``meanmax`` → (2D,)."""
    per_frame = np.asarray(per_frame, dtype=np.float32)
    mean = per_frame.mean(axis=0)
    if pool == "mean":
        return mean.astype(np.float32)
    if pool == "meanmax":
        return np.concatenate([mean, per_frame.max(axis=0)]).astype(np.float32)
    raise ConfigError(f"features.pool: must be one of mean, meanmax (got {pool!r})")


def pool_factor(pool: str) -> int:
    """Output dim multiplier of :func:`pool_frames`."""
    if pool not in ("mean", "meanmax"):
        raise ConfigError(f"features.pool: must be one of mean, meanmax (got {pool!r})")
    return 2 if pool == "meanmax" else 1


def subsample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k <= 0`` or ``k >= n``)."""
    if k <= 0 or k >= n:
        return list(range(n))
    # centre of each of k equal segments: 16 frames, k=4 -> 2, 6, 10, 14
    return [int((2 * i + 1) * n // (2 * k)) for i in range(k)]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def ort_session(path: str | os.PathLike, threads: int = 0):
    """A CPU ONNX Runtime session with full graph optimisation and ``threads`` intra-op threads.

    ``threads <= 0`` keeps ONNX Runtime's default (one thread per physical core). Inter-op
    parallelism stays sequential: a clip's frames are batched into one call instead.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads and threads > 0:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(Path(path)), sess_options=so, providers=["CPUExecutionProvider"])
