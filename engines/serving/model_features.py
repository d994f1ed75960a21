"""What a camera worker must compute for a given model: ``fusewatch worker/replay --model M`` and the
demo take the representations (``ModelMeta.representations``) and check the extractor versions
(``ModelMeta.extractor_versions``) of the model instead of trusting ``features.extractors``.

:func:`features_for_model` reads only the model's metadata (a ``.pt`` checkpoint with
``torch.load(weights_only=True)``, or an exported ``.onnx`` file's ``metadata_props``), sets
``features.extractors`` to the model's representations in the model's order, builds those extractors
with the rest of the ``[features]`` / ``[clips]`` settings and compares each one's ``version`` with
the version recorded at training. Any mismatch is a one-line :class:`~fusewatch.errors.ConfigError`
at start-up (exit 2) instead of features the engine would refuse (or silently mis-score) later:

* a representation no extractor produces (not a built-in name, and no ``onnx:<path>`` entry of
  ``features.extractors`` produces it);
* an extractor whose version differs from the training features' (other backbone weights, resize
  mode, flow method, grid … — the version string encodes these settings).

Representations the model recorded no version for (data without versions) are accepted.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.serving.model_checks import check_meta
from fusewatch.errors import CheckpointError, ConfigError, one_line

HYPER = ("fusion", "order_p", "order_q", "expansion", "proj_dim", "node_dim")
"""Hyper-parameters a checkpoint keeps in its config (checked like an ONNX file's metadata)."""


def read_model_meta(path: str | Path) -> ModelMeta:
    """Metadata of a ``.pt`` checkpoint or an exported ``.onnx`` file, without building the model;
    checked as every loader checks it (:func:`~fusewatch.engines.serving.model_checks.check_meta`)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise CheckpointError(f"model {p}: is a directory (expected a .pt checkpoint or an .onnx file)")
    if not p.is_file():
        raise CheckpointError(f"model {p}: not found")
    if p.suffix == ".onnx":
        from fusewatch.engines.export.onnx_meta import read_onnx_meta

        return read_onnx_meta(str(p))  # CheckpointError (one line) for anything unreadable
    from fusewatch.extras import require

    require(
        "torch",
        f"model {p}: reading a torch checkpoint",
        ", or pass the exported .onnx file (`fusewatch export-models`)",
    )
    from fusewatch.engines.training.checkpoint import read_checkpoint

    ck = read_checkpoint(p)
    try:
        meta = ModelMeta.from_dict(
            {
                **ck["meta"],
                **{k: ck["config"][k] for k in HYPER if k in ck["config"]},
                "config": ck["config"],
                "dims": ck["dims"],
                "representations": ck["representations"],
                "window": ck["config"].get("window"),
            }
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {p}: unreadable metadata ({one_line(e)[:200]})") from None
    return check_meta(meta, f"checkpoint {p}")


def features_for_model(cfg: Any, model: str | Path, build=None) -> Any:
    """Copy of ``cfg`` whose ``features.extractors`` are what ``model`` needs (module doc).
    ``build``: extractor factory ``(spec, features_cfg) → extractor`` (default
    :func:`fusewatch.stream.extractors.build_extractor`). Raises :class:`ConfigError` (one line)."""
    from fusewatch.stream.extractors import KNOWN, build_extractor

    build = build or build_extractor
    meta = read_model_meta(model)
    cfg = copy.deepcopy(cfg)
    user_onnx = [s for s in cfg.features.extractors if str(s).strip().startswith("onnx:")]
    made = {}
    for spec in user_onnx:  # name of a user ONNX extractor = its representation
        try:
            ex = build(spec, cfg.features)
        except (ValueError, OSError) as e:
            raise ConfigError(f"features.extractors: {spec}: {e}") from None
        made[ex.name] = (spec, ex)
    specs = []
    for r in meta.representations:
        if r in made:
            specs.append(made[r][0])
        elif r in KNOWN:
            specs.append(r)
        else:
            raise ConfigError(
                f"model {model}: needs representation {r!r}, which no extractor produces "
                f"(built-in: {', '.join(KNOWN)}; or add onnx:<path> to features.extractors)"
            )
    for k in ("clip_len", "clip_stride"):  # the window graphs were learnt over clips of this length / step
        v = (meta.extra or {}).get(k)
        if type(v) is int and 1 <= v <= 1 << 20 and v != getattr(cfg.clips, k):
            raise ConfigError(
                f"model {model}: trained on clips.{k} = {v}, this configuration makes {getattr(cfg.clips, k)} "
                f"(use --set clips.{k}={v}, as the training extraction did)"
            )
    cfg.features.extractors = specs
    cfg.features.validate()
    want = {k: str(v) for k, v in (meta.extractor_versions or {}).items() if v}
    for r, spec in zip(meta.representations, specs):
        ex = made[r][1] if r in made else _build(build, spec, cfg)
        if r in want and str(ex.version) != want[r]:
            raise ConfigError(
                f"model {model}: representation {r!r} was trained on extractor version "
                f"{want[r]!r}, this configuration makes {str(ex.version)!r} "
                "(align the [features]/[clips] settings with the training extraction)"
            )
    return cfg


def _build(build, spec: str, cfg: Any):
    try:
        return build(spec, cfg.features)
    except (ValueError, OSError) as e:
        raise ConfigError(f"features.extractors: {spec}: {e}") from None
