"""UCSD Ped2 benchmark: LEGO (matrix / hadamard) vs concat / add fusion, streamed vs offline.

    python bench/ped2.py --videos ../shared/data/ped2 --out-model out/ped2/lego.pt \\
        [--work DIR] [--json OUT.json] [--no-stream] [--stream-set all|anomalous] \\
        [--transport bus|kafka] [--set section.field=value ...]

Same as ``fusewatch bench ped2`` (logic in :mod:`fusewatch.engines.bench.ped2`, see its docstring): features with
the default extractors (cached), weak video labels only, P/Q chosen by cross-validation on held-out
videos, final models trained on all videos with a fixed seed, scores through replay → worker →
transport → engine and offline, frame-level AUC of both, clip-by-clip agreement (1e-4).
Exit status 0 when streamed and offline scores agree, 1 otherwise, 2 on user errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusewatch.cli import main  # noqa: E402

if __name__ == "__main__":
    # the same command as `fusewatch bench ped2 ...` (global options such as --set, --config,
    # --transport and --bootstrap are accepted after it)
    sys.exit(main(["bench", "ped2", *sys.argv[1:]]))
