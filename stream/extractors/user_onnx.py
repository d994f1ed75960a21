"""``onnx:<path>``: any user-supplied ONNX image model as a clip extractor.

Preprocessing (from the features config): each frame is resized to
``onnx_input_size``×``onnx_input_size`` (whole frame, area interpolation when shrinking), scaled
to [0, 1] and normalised with ``onnx_mean`` / ``onnx_std`` (given in [0, 1] pixel units; values
above 1, e.g. 127 / 128, are taken as 0…255 pixel units), laid out as ``onnx_layout`` (NCHW or
NHWC) float32. A model whose image input is uint8 gets the resized RGB pixels unnormalised.

The model's first input takes the image batch and its first output is the feature. Outputs of
rank > 2 are averaged over every axis but batch and channel (the channel axis is 1 for NCHW, the
last for NHWC), then the clip's frames are pooled (``pool``: mean or mean ‖ max). ``dim`` is read
from one run on a dummy input at build time, which also proves the model runs. Models with a
fixed batch size of 1 are run frame by frame; others get the clip's frames as one batch.

The representation is named ``onnx:<file stem>`` (e.g. ``onnx:resnet18`` for
``onnx:/models/resnet18.onnx``), so a model keeps its name wherever the file lives.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from fusewatch.errors import ConfigError

from .base import Extractor, check_frames, ort_session, pool_factor, pool_frames, sha256_file

VERSION = "onnx-1"


def _one_line(e: BaseException, limit: int = 160) -> str:
    s = " ".join(str(e).split())
    return s[:limit] + ("…" if len(s) > limit else "")


class OnnxModelExtractor(Extractor):
    def __init__(self, path: str | os.PathLike, cfg) -> None:
        spec = f"onnx:{path}"
        p = Path(os.path.expanduser(str(path)))
        if not str(path).strip():
            raise ConfigError("features.extractors: onnx:<path> needs a file path (got 'onnx:')")
        if not p.is_file():
            raise ConfigError(f"features.extractors: {spec}: file not found")
        try:
            import onnx

            proto = onnx.load(str(p), load_external_data=False)
        except Exception as e:
            raise ConfigError(f"features.extractors: {spec}: not an ONNX model ({_one_line(e, 100)})") from None
        if not proto.ir_version or not proto.graph.node:  # protobuf parses many byte strings
            raise ConfigError(f"features.extractors: {spec}: not an ONNX model (no graph)")
        try:
            self.session = ort_session(p, int(cfg.threads))
        except Exception as e:
            raise ConfigError(f"features.extractors: {spec}: ONNX Runtime cannot load it ({_one_line(e)})") from None
        self.path = p
        self.name = f"onnx:{p.stem}"
        self.size = int(cfg.onnx_input_size)
        self.layout = str(cfg.onnx_layout).upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"features.onnx_layout: must be one of NCHW, NHWC (got {self.layout!r})")
        mean = np.asarray(cfg.onnx_mean, np.float32).reshape(-1)
        std = np.asarray(cfg.onnx_std, np.float32).reshape(-1)
        if mean.size not in (1, 3) or std.size not in (1, 3) or (std <= 0).any():
            raise ConfigError("features.onnx_mean/onnx_std: need 1 or 3 values each, std > 0")
        if max(mean.max(), std.max()) <= 1.0:  # [0, 1] units → pixel units
            mean, std = mean * 255.0, std * 255.0
        self.mean = np.broadcast_to(mean, (3,)).astype(np.float32)
        self.scale = (1.0 / np.broadcast_to(std, (3,))).astype(np.float32)
        self.pool = cfg.pool
        factor = pool_factor(self.pool)

        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_uint8 = inp.type == "tensor(uint8)"
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        if inp.type not in ("tensor(float)", "tensor(float16)", "tensor(uint8)"):
            raise ConfigError(
                f"features.extractors: {spec}: unsupported input type {inp.type} (need float, float16 or uint8 images)"
            )
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ConfigError(
                f"features.extractors: {spec}: input {inp.name!r} has shape {shape}, "
                f"need a rank-4 image batch ({self.layout})"
            )
        c_ax, h_ax, w_ax = (1, 2, 3) if self.layout == "NCHW" else (3, 1, 2)
        if isinstance(shape[c_ax], int) and shape[c_ax] != 3:
            raise ConfigError(
                f"features.extractors: {spec}: input shape {shape} has {shape[c_ax]} "
                f"channels on the {self.layout} channel axis, need 3 "
                "(check features.onnx_layout)"
            )
        for ax in (h_ax, w_ax):
            if isinstance(shape[ax], int) and shape[ax] != self.size:
                raise ConfigError(
                    f"features.onnx_input_size: {self.size} does not match the model's "
                    f"declared input shape {shape} ({spec})"
                )
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if self.fixed_batch not in (None, 1):
            raise ConfigError(
                f"features.extractors: {spec}: fixed batch size {self.fixed_batch} "
                "is not supported (export with a dynamic or unit batch)"
            )
        try:
            probe = self._run(np.zeros((1, self.size, self.size, 3), np.uint8))
        except Exception as e:
            raise ConfigError(f"features.extractors: {spec}: test run failed ({_one_line(e)})") from None
        self.frame_dim = int(probe.shape[1])
        self.dim = self.frame_dim * factor
        sha = sha256_file(p)
        self.version = f"{VERSION}-sha{sha[:12]}-{self.layout}{self.size}"

    def _prep(self, batch: np.ndarray) -> np.ndarray:
        if self.input_uint8:
            x = batch
        else:
            x = ((batch.astype(np.float32) - self.mean) * self.scale).astype(self.input_dtype, copy=False)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)

    def _pool_output(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y, np.float32)
        if y.ndim == 1:
            y = y.reshape(n, -1)
        if y.ndim > 2:
            ch = 1 if self.layout == "NCHW" else y.ndim - 1
            axes = tuple(a for a in range(1, y.ndim) if a != ch)
            y = y.mean(axis=axes)
        return y.reshape(n, -1)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) uint8 RGB → (N, frame_dim) float32."""
        if self.fixed_batch == 1 and len(batch) > 1:
            return np.concatenate([self._run(batch[i : i + 1]) for i in range(len(batch))])
        y = self.session.run(None, {self.input_name: self._prep(batch)})[0]
        return self._pool_output(y, len(batch))

    def extract(self, frames, audio=None, audio_rate=None):
        check_frames(frames, self.name)
        s = self.size
        batch = np.stack(
            [
                f
                if f.shape[:2] == (s, s)
                else cv2.resize(
                    f, (s, s), interpolation=cv2.INTER_AREA if f.shape[0] * f.shape[1] > s * s else cv2.INTER_LINEAR
                )
                for f in frames
            ]
        )
        return pool_frames(self._run(batch), self.pool)
