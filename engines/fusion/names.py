"""Names of the fusion model choices, defined once.

Used by the model factory (:mod:`fusewatch.engines.fusion.factory`), training, the CLI choices,
``bench ped2`` and the expansion code. ``fusewatch.stream.config`` keeps its own literal lists (the
camera side never imports ``engines``); ``tests/test_model_names.py`` asserts that they agree.
"""

from __future__ import annotations

FUSIONS = ("lego", "concat", "add", "mtn")
"""``model.fusion``: LEGO and the three baselines (concat / add MLPs, RTFM-style MTN)."""

EXPANSIONS = ("matrix", "hadamard")
"""``model.expansion``: how LEGO expands a graph to orders ``0..K`` (matrix powers or Hadamard powers)."""

GRAPH_NORMS = ("standardize", "none")
"""How the LEGO head's view of ``G`` is conditioned (``LegoModel`` ``graph_norm``, see
``LegoModel.head_graph``): ``standardize`` (default): window-level standardisation over the
real nodes, rows scaled to about unit norm; ``none``: raw ``G`` — the original head, whose inputs
are ``O(1/N²)`` off the diagonal in ``matrix`` mode (kept for checkpoints saved before)."""
DEFAULT_GRAPH_NORM = "standardize"
