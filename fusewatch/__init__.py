"""fusewatch: streaming video anomaly detection with learnable graph-operator fusion.

Import layout (``pyproject.toml`` maps the repository's top-level folders into one package)::

    fusewatch            this folder: public API, errors, logging, command line (fusewatch/cli)
    fusewatch.stream     stream/   camera side: sources, clips, extractors, wire schema, transports
    fusewatch.engines    engines/  inference side: fusion model, serving, training, data, evaluation

Installed (``pip install .``) the three live in one ``fusewatch`` folder. Run from a source tree
(``PYTHONPATH=<repo>`` or an editable install) the repository root is appended to this package's
``__path__`` so ``fusewatch.stream`` and ``fusewatch.engines`` resolve to ``<repo>/stream`` and
``<repo>/engines``: the same import names in both cases, nothing else on ``sys.path``.

Public API (what a script uses; resolved lazily, so ``import fusewatch`` imports neither torch nor
any submodule — the runtime install has no torch)::

    import fusewatch as fw
    cfg = fw.load_config("fusewatch.toml")                     # fw.Config, fw.ConfigError
    fw.replay(["cam1.mp4"], cfg, speed=None)                    # fw.Worker(cfg, camera=, source=).run()
    model = fw.load_serving_model(cfg, "model.onnx")            # .onnx: runtime; .pt: the train extra
    res = fw.stream_videos(["cam1.mp4"], cfg, model)            # worker → bus → fw.EngineService
    fw.train("feats/", cfg, "model.pt"); fw.evaluate("model.pt", "feats/")   # fusewatch[train]
    fw.export_models("models/", ["model.pt"], ["mobilenetv2"])  # for runtime-only hosts

Each name maps to ``module:attribute`` in :data:`_API`, the one place to update when code moves.
"""

from __future__ import annotations

from pathlib import Path as _Path
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    # configuration
    "Config": "fusewatch.stream.config:Config",
    "ConfigError": "fusewatch.stream.config:ConfigError",
    "load_config": "fusewatch.stream.config:load_config",
    # camera side
    "Worker": "fusewatch.stream.worker:Worker",
    "replay": "fusewatch.stream.replay:replay",
    "extract_videos": "fusewatch.stream.extract:extract_videos",
    "make_transport": "fusewatch.stream.transport:make_transport",
    # engine
    "EngineService": "fusewatch.engines.serving.service:EngineService",
    "ServingModel": "fusewatch.engines.serving.runtime:ServingModel",
    "load_serving_model": "fusewatch.engines.serving.runtime:load_serving_model",
    "select_backend": "fusewatch.engines.serving.backends:select_backend",
    "stream_videos": "fusewatch.engines.serving.pipeline:stream_videos",
    # models (train extra)
    "load_model": "fusewatch.engines.training.checkpoint:load_model",
    "train": "fusewatch.engines.training.loop:train",
    "evaluate": "fusewatch.engines.evaluation.evaluate:evaluate",
    "evaluate_stream": "fusewatch.engines.evaluation.stream_eval:evaluate_stream",
    "export_onnx": "fusewatch.engines.export.onnx:export_onnx",
    "export_models": "fusewatch.engines.export.models:export_models",
    # optional dependencies
    "MissingExtraError": "fusewatch.extras:MissingExtraError",
}

__all__ = ["__version__", *_API]

_repo = _Path(__file__).resolve().parent.parent
if (_repo / "stream" / "schema.py").is_file() and (_repo / "engines").is_dir():
    __path__.append(str(_repo))  # source tree: fusewatch.stream -> <repo>/stream  # noqa: F821


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'fusewatch' has no attribute {name!r}")
    import importlib

    mod, _, attr = target.partition(":")
    try:
        value = getattr(importlib.import_module(mod), attr)
    except ImportError as e:  # an optional dependency: name the extra that installs it
        from fusewatch.extras import EXTRA_OF, MissingExtraError

        missing = (e.name or "").split(".")[0]
        if missing not in EXTRA_OF:
            raise
        raise MissingExtraError(
            f"fusewatch.{name} needs {missing} (not installed): pip install 'fusewatch[{EXTRA_OF[missing]}]'"
        ) from e
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
