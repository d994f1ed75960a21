"""Former single module of the fusion models, kept as a re-export for callers not yet switched.

New code imports from the split modules: :mod:`~fusewatch.engines.fusion.base`,
:mod:`~fusewatch.engines.fusion.lego`, :mod:`~fusewatch.engines.fusion.baselines`,
:mod:`~fusewatch.engines.fusion.numpy_ops`, :mod:`~fusewatch.engines.fusion.factory`.
"""
# TODO(ModelMeta): engines/serving/backends/ (rewritten on another branch) still import from here;
# drop this module once they import the split modules.
from __future__ import annotations

from fusewatch.engines.fusion.base import FeatsLike, FusionModel
from fusewatch.engines.fusion.baselines import DEFAULT_HIDDEN, AddMLP, ConcatMLP, MTNModel, NodeHead
from fusewatch.engines.fusion.factory import DEFAULT_NODE_DIM, MODEL_CLASSES, build_model, config_dict
from fusewatch.engines.fusion.lego import LegoModel
from fusewatch.engines.fusion.names import DEFAULT_GRAPH_NORM, GRAPH_NORMS
from fusewatch.engines.fusion.numpy_ops import numpy_affine, numpy_linear

__all__ = ["FeatsLike", "FusionModel", "DEFAULT_HIDDEN", "AddMLP", "ConcatMLP", "MTNModel", "NodeHead",
           "DEFAULT_NODE_DIM", "MODEL_CLASSES", "build_model", "config_dict", "LegoModel",
           "DEFAULT_GRAPH_NORM", "GRAPH_NORMS", "numpy_affine", "numpy_linear"]
