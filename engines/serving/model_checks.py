"""What a model file may declare about itself: bounds and types of a :class:`ModelMeta` read from an
untrusted ``.pt`` checkpoint or ``.onnx`` export, checked before anything is sized from it.

Every loader calls :func:`check_meta` (:func:`fusewatch.engines.training.checkpoint.load_model`,
:func:`fusewatch.engines.export.onnx_meta.read_onnx_meta`,
:func:`fusewatch.engines.serving.model_features.read_model_meta`): a violation is one
:class:`~fusewatch.errors.CheckpointError` line naming the file and the field, with any value
from the file shortened (:func:`short`), instead of a traceback, a multi-GB allocation
(``window``, ``dims`` size the engine's per-camera state) or a silently wrong engine (NaN alert
thresholds). The hyper-parameters are checked against the ``[model]`` schema itself
(:class:`~fusewatch.stream.config.ModelConfig`), feature dims against the wire contract.

No torch here: the runtime install serves ONNX files with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.errors import CheckpointError, ConfigError

MAX_FEATURE_DIM = 1 << 20
"""Largest feature dim of a representation: the wire contract's largest array axis
(:mod:`fusewatch.stream.schema`); a model wanting more could never be fed."""
MAX_REPRESENTATIONS = 64
MAX_NAME = 256
"""Longest representation name / extractor version / model version string accepted."""


def short(x: Any, n: int = 80) -> str:
    """``repr(x)`` cut to ``n`` characters (values from a file in one-line errors)."""
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_dims(reps: Any, dims: Any, where: str) -> None:
    """``representations`` (list of unique non-empty names) and ``dims`` (an int in
    ``1..MAX_FEATURE_DIM`` for each of them), as stored in a model file."""
    if not isinstance(reps, (list, tuple)) or not 1 <= len(reps) <= MAX_REPRESENTATIONS:
        raise CheckpointError(f"{where}: representations must be a list of 1..{MAX_REPRESENTATIONS} names")
    for r in reps:
        if not isinstance(r, str) or not 0 < len(r) <= MAX_NAME:
            raise CheckpointError(
                f"{where}: representation name {short(r)} is not a string of 1..{MAX_NAME} characters"
            )
    if len(set(reps)) != len(reps):
        raise CheckpointError(f"{where}: duplicate representation names {short(list(reps))}")
    if not isinstance(dims, Mapping):
        raise CheckpointError(f"{where}: dims must be a mapping of representation → dim")
    for r in reps:
        d = dims.get(r)
        if not is_int(d) or not 1 <= d <= MAX_FEATURE_DIM:
            raise CheckpointError(
                f"{where}: dims[{short(r, 40)}] must be an integer in 1..{MAX_FEATURE_DIM} (got {short(d)})"
            )


def check_thresholds(th: Any, where: str) -> None:
    """Calibrated ``alert_thresholds``: None, or finite ``on``/``off`` with ``0 <= off <= on <= 1``."""
    if th is None:
        return
    if not isinstance(th, Mapping) or "on" not in th or "off" not in th:
        raise CheckpointError(f"{where}: alert_thresholds must be a mapping with 'on' and 'off' (got {short(th)})")
    on, off = th["on"], th["off"]
    for k, v in (("on", on), ("off", off)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
            raise CheckpointError(f"{where}: alert_thresholds.{k} must be a number in [0, 1] (got {short(v)})")
    if not off <= on:
        raise CheckpointError(f"{where}: alert_thresholds: need off <= on (got off={off}, on={on})")


def check_meta(meta: ModelMeta, where: str) -> ModelMeta:
    """Raise :class:`CheckpointError` (``"<where>: <field>: <problem>"``) unless ``meta`` is within
    the bounds above and the ``[model]`` schema; returns ``meta``."""
    check_dims(list(meta.representations), meta.dims, where)
    if not isinstance(meta.model_version, str) or len(meta.model_version) > 64:
        raise CheckpointError(f"{where}: model_version must be a string of at most 64 characters")
    if meta.form not in (None, "graphs", "features"):
        raise CheckpointError(f"{where}: form must be 'graphs' or 'features' (got {short(meta.form)})")
    hp: dict[str, Any] = {"window": meta.window, "representations": list(meta.representations)}
    for k in ("fusion", "order_p", "order_q", "expansion", "proj_dim", "node_dim"):
        v = getattr(meta, k)
        if v is not None and v != "":
            hp[k] = v
    from fusewatch.stream.config import ModelConfig
    from fusewatch.stream.config.errors import config_error

    try:
        ModelConfig(**hp)
    except ValidationError as e:
        raise CheckpointError(f"{where}: {config_error(e, ('model',))}") from None
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: {e}") from None
    check_thresholds(meta.alert_thresholds, where)
    ev = meta.extractor_versions
    if ev is not None:
        if not isinstance(ev, Mapping):
            raise CheckpointError(f"{where}: extractor_versions must be a mapping (got {short(ev)})")
        for k, v in ev.items():
            if not isinstance(k, str) or not (v is None or (isinstance(v, str) and len(v) <= MAX_NAME)):
                raise CheckpointError(
                    f"{where}: extractor_versions[{short(k, 40)}] must be a string of at most {MAX_NAME} characters"
                )
    return meta
