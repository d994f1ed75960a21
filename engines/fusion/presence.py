"""The absent-representation rule, defined once.

A representation ``m`` that is absent from an input (its key missing or ``None``) is fed as zeros
and flagged ``present[m] = 0``; a given one keeps its values and ``present[m] = 1``. Used by the
models' input normalisation, training batches, causal scoring and the features-in serving window.
numpy only (no torch), so the serving side can use it without the training stack.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np

A = TypeVar("A")


def present_flags(feats: Mapping[str, object | None], names: Sequence[str]) -> np.ndarray:
    """``present`` ``(M,)`` float32 in ``names`` order: 1 where ``feats`` holds a non-``None`` value."""
    return np.array([0.0 if feats.get(n) is None else 1.0 for n in names], dtype=np.float32)


def fill_absent(
    feats: Mapping[str, A | None], names: Sequence[str], zeros: Callable[[str], A]
) -> tuple[list[A], np.ndarray]:
    """→ (one value per name in ``names`` order, ``zeros(name)`` for an absent one;
    ``present`` ``(M,)`` float32 from :func:`present_flags`)."""
    flags = present_flags(feats, names)
    out = [feats[n] if flags[i] else zeros(n) for i, n in enumerate(names)]  # type: ignore[misc]
    return out, flags
