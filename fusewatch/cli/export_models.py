"""``fusewatch export-models``: backbone ONNX files and trained models for runtime-only hosts
(:mod:`fusewatch.engines.export.models`). Needs the ``train`` extra; its output needs only the runtime."""

from __future__ import annotations

from pathlib import Path

from fusewatch.stream.config import Config

BACKBONE_NAMES = ("mobilenetv2", "effnet_lite0")  # fusewatch.stream.extractors.backbones.BACKBONES
EXPORTABLE = (*BACKBONE_NAMES, "mnv2_patches")
"""What ``--backbones`` names: the backbones, and ``mnv2_patches`` (its MobileNetV2 feature-map ONNX)."""


def add_commands(sub) -> None:
    p = sub.add_parser(
        "export-models",
        help="export the backbone ONNX files and trained models for runtime-only hosts",
        description="Write the backbone ONNX files (the names the extractors look for) and each --model "
        "checkpoint as <stem>.onnx into --out. On a host with only `pip install fusewatch`, set "
        "features.model_dir=OUT and engine.model=OUT/<stem>.onnx. Needs `fusewatch[train]`.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (e.g. a copy of features.model_dir)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="M.pt",
        help="checkpoint to export (repeatable; default: engine.model or the demo's model, if present)",
    )
    p.add_argument(
        "--backbones",
        default="configured",
        metavar="A,B|configured|all|none",
        help="backbones to export (default: those in features.extractors; mnv2_patches: its feature-map ONNX)",
    )
    p.add_argument("--opset", type=int, default=17, choices=range(17, 21), metavar="17..20")
    p.set_defaults(handler=cmd_export_models)


def _backbones(spec: str, cfg: Config) -> list[str]:
    if spec == "none":
        return []
    if spec == "all":
        return list(EXPORTABLE)
    names = cfg.features.extractors if spec == "configured" else [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in EXPORTABLE and spec != "configured"]
    if bad:
        raise ValueError(f"--backbones: unknown backbone {bad[0]!r} (known: {', '.join(EXPORTABLE)})")
    return [n for n in names if n in EXPORTABLE]


def _models(args, cfg: Config) -> list[Path]:
    if args.model:
        return [Path(m) for m in args.model]
    from fusewatch.engines.serving.runtime import default_model_path

    m = Path(cfg.engine.model or default_model_path()).expanduser()
    return [m] if m.suffix == ".pt" and m.is_file() else []


def cmd_export_models(args, cfg: Config) -> int:
    from fusewatch.engines.export.models import export_models

    paths = export_models(
        args.out,
        _models(args, cfg),
        _backbones(args.backbones, cfg),
        spatial=cfg.features.cnn_spatial,
        opset=args.opset,
        size=cfg.features.cnn_input_size,
    )
    print(
        f"export-models: {len(paths)} file(s) in {Path(args.out).expanduser()}; on a runtime-only host: "
        f"--set features.model_dir=<copy of it> and --model <copy>/<stem>.onnx"
    )
    return 0
