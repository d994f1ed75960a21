"""fusewatch: streaming video anomaly detection with learnable graph-operator fusion.

Import layout (``pyproject.toml`` maps the repository's top-level folders into one package)::

    fusewatch            this folder: public API, errors, logging, command line (fusewatch/cli)
    fusewatch.stream     stream/   camera side: sources, clips, extractors, wire schema, transports
    fusewatch.engines    engines/  inference side: fusion model, serving, training, data, evaluation

Installed (``pip install .``) the three live in one ``fusewatch`` folder. Run from a source tree
(``PYTHONPATH=<repo>`` or an editable install) the repository root is appended to this package's
``__path__`` so ``fusewatch.stream`` and ``fusewatch.engines`` resolve to ``<repo>/stream`` and
``<repo>/engines``: the same import names in both cases, nothing else on ``sys.path``.
"""
from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"

_repo = _Path(__file__).resolve().parent.parent
if (_repo / "stream" / "schema.py").is_file() and (_repo / "engines").is_dir():
    __path__.append(str(_repo))  # source tree: fusewatch.stream -> <repo>/stream  # noqa: F821
