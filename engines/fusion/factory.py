"""Build a fusion model from a :class:`fusewatch.stream.config.ModelConfig` (and the plain-dict form
of that config stored in checkpoints)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from fusewatch.engines.fusion.base import FusionModel
from fusewatch.engines.fusion.baselines import DEFAULT_HIDDEN, AddMLP, ConcatMLP, MTNModel
from fusewatch.engines.fusion.lego import LegoModel
from fusewatch.engines.fusion.names import DEFAULT_GRAPH_NORM, FUSIONS
from fusewatch.stream.config import ModelConfig

DEFAULT_NODE_DIM = 16
"""``model.node_dim`` when a config does not say (the :class:`ModelConfig` default)."""

MODEL_CLASSES: dict[str, type[FusionModel]] = {c.fusion: c for c in (LegoModel, ConcatMLP, AddMLP, MTNModel)}
assert tuple(MODEL_CLASSES) == FUSIONS, "one model class per name of fusewatch.engines.fusion.names.FUSIONS"


def config_dict(cfg: ModelConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Validated plain-dict form of a :class:`ModelConfig` (unknown keys rejected; a mapping without
    ``node_dim`` gets the :class:`ModelConfig` default — checkpoints saved before the node branch
    existed are mapped to ``node_dim = 0`` by :func:`fusewatch.engines.training.checkpoint.load_model`)."""
    if isinstance(cfg, ModelConfig):
        c = dataclasses.replace(cfg, representations=list(cfg.representations))
    else:
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        extra = set(cfg) - known - {"node_dim"}
        if extra:
            raise ValueError(f"model config: unknown field(s) {sorted(extra)}")
        c = ModelConfig(**{k: (list(v) if k == "representations" else v) for k, v in cfg.items() if k in known})
        if "node_dim" in cfg and "node_dim" not in known:  # fusewatch.stream.config without the field
            c.node_dim = cfg["node_dim"]  # type: ignore[attr-defined]
    c.validate()
    d = dataclasses.asdict(c)
    d["node_dim"] = int(getattr(c, "node_dim", DEFAULT_NODE_DIM))
    if d["node_dim"] < 0:
        raise ValueError(f"model.node_dim: must be >= 0 (got {d['node_dim']})")
    return d


def build_model(
    cfg: ModelConfig | Mapping[str, Any],
    dims: Mapping[str, int],
    *,
    hidden: int | None = None,
    dropout: float = 0.0,
    graph_norm: str | None = None,
) -> FusionModel:
    """Build the model described by ``cfg`` for representation dims ``dims`` (``{name: d_m}``;
    every name of ``cfg.representations`` must be present, others are ignored).

    ``hidden`` (baselines only): common width ``H``; default ``cfg.proj_dim`` or 128.
    ``dropout``: head dropout (training only). ``graph_norm`` (LEGO only): conditioning of the
    head's view of ``G`` (:data:`fusewatch.engines.fusion.names.GRAPH_NORMS`, default ``standardize``). Returns a
    :class:`FusionModel` with ``.config`` (plain dict of ``cfg``) and ``.build_kwargs`` set (both
    saved by :mod:`fusewatch.engines.training.checkpoint`).
    """
    c = config_dict(cfg)
    names = c["representations"]
    if len(set(names)) != len(names):
        raise ValueError(f"model.representations: duplicate names in {names}")
    if c["fusion"] == "lego":
        gn = graph_norm or DEFAULT_GRAPH_NORM
        model: FusionModel = LegoModel(
            names,
            dims,
            c["window"],
            c["order_p"],
            c["order_q"],
            c["expansion"],
            c["softplus"],
            c["proj_dim"],
            dropout=dropout,
            node_dim=c["node_dim"],
            graph_norm=gn,
        )
        kw: dict[str, Any] = {"dropout": float(dropout), "graph_norm": gn}
    else:
        h = int(hidden or c["proj_dim"] or DEFAULT_HIDDEN)
        model = MODEL_CLASSES[c["fusion"]](names, dims, c["window"], hidden=h, dropout=dropout)
        kw = {"hidden": h, "dropout": float(dropout)}
    model.config = c
    model.build_kwargs = kw
    return model
