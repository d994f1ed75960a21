"""Clip feature extractors: one :class:`Extractor` per configured representation.

==================  ======================  =====================================================
``extractors`` item  representation name     dim
==================  ======================  =====================================================
``mobilenetv2``      ``mobilenetv2``          1280 (``pool = meanmax``: 2560)
``effnet_lite0``     ``effnet_lite0``         1280 (``pool = meanmax``: 2560)
``flow``             ``flow``                 80 (dense optical-flow motion statistics)
``audio``            ``audio``                80 (log-mel mean ‖ std; None without audio)
``flow_grid``        ``flow_grid``            128 (patch-level flow: top cells + 6×9 grid)
``objects``          ``objects``              42 (MOG2 foreground objects: area, speed, aspect)
``mnv2_patches``     ``mnv2_patches``         191 (top-4 changing MobileNetV2 patches + 7×7 map)
``onnx:<path>``      ``onnx:<file stem>``     the model's output channels (×2 for meanmax)
==================  ======================  =====================================================

Features-config fields the extractors read (:class:`~fusewatch.stream.config.FeaturesConfig`
holds their defaults): ``cnn_frames`` (0: CNNs see every frame of the clip; k > 0: k frames spread
over the clip), ``cnn_input_size`` (CNN input side, px), ``cnn_resize`` (``squash`` | ``crop``),
``flow_width`` (px), ``flow_method`` (``farneback`` | ``dis``).
"""

from __future__ import annotations

from fusewatch.errors import ConfigError

from .base import Extractor, pool_frames

__all__ = ["Extractor", "build_extractors", "build_extractor", "KNOWN", "pool_frames"]

KNOWN = ("mobilenetv2", "effnet_lite0", "flow", "audio", "flow_grid", "objects", "mnv2_patches")


def build_extractor(spec: str, cfg) -> Extractor:
    """One extractor from its ``features.extractors`` entry (ValueError with one line if invalid)."""
    spec = str(spec).strip()
    if spec in ("mobilenetv2", "effnet_lite0"):
        from .backbones import BackboneExtractor

        return BackboneExtractor(spec, cfg)
    if spec == "flow":
        from .flow import FlowExtractor

        return FlowExtractor(cfg)
    if spec in ("flow_grid", "objects"):
        from .flow_grid import FlowGridExtractor
        from .objects import ObjectsExtractor

        return (FlowGridExtractor if spec == "flow_grid" else ObjectsExtractor)(cfg)
    if spec == "mnv2_patches":
        from .patches import PatchAppearanceExtractor

        return PatchAppearanceExtractor(cfg)
    if spec == "audio":
        from .audio import AudioExtractor

        return AudioExtractor(cfg)
    if spec.startswith("onnx:"):
        from .user_onnx import OnnxModelExtractor

        return OnnxModelExtractor(spec[len("onnx:") :].strip(), cfg)
    raise ConfigError(f"features.extractors: unknown extractor {spec!r} (known: {', '.join(KNOWN)}, onnx:<path>)")


def build_extractors(cfg) -> list[Extractor]:
    """The extractors of ``cfg.extractors`` in order (``cfg``: a FeaturesConfig, or a Config).

    CNN backbones are exported to ONNX on first use into ``cfg.model_dir`` and reused from there
    afterwards. Raises ValueError (one line) for an unknown name, a bad ``onnx:`` file, or two
    entries with the same representation name.
    """
    if hasattr(cfg, "features") and not hasattr(cfg, "extractors"):
        cfg = cfg.features
    if not cfg.extractors:
        raise ConfigError("features.extractors: at least one extractor is required")
    out: list[Extractor] = []
    seen: set[str] = set()
    for spec in cfg.extractors:
        ex = build_extractor(spec, cfg)
        if ex.name in seen:
            raise ConfigError(f"features.extractors: two extractors produce the representation {ex.name!r}")
        seen.add(ex.name)
        out.append(ex)
    return out
