"""UCSD Ped2 benchmark: LEGO (matrix / hadamard) vs concat / add fusion, streamed vs offline.

    python bench/ped2.py --videos ../shared/data/ped2 --out-model out/ped2/lego.pt \\
        [--work DIR] [--json OUT.json] [--no-stream] [--stream-set all|anomalous] \\
        [--transport bus|kafka] [--set section.field=value ...]

Same as ``fusewatch bench ped2`` (logic in :mod:`engines.ped2`, see its docstring): features with
the default extractors (cached), weak video labels only, P/Q chosen by cross-validation on held-out
videos, final models trained on all videos with a fixed seed, scores through replay → worker →
transport → engine and offline, frame-level AUC of both, clip-by-clip agreement (1e-4).
Exit status 0 when streamed and offline scores agree, 1 otherwise, 2 on user errors.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.ped2 import add_arguments, format_table, parse_pq_grid, print_report, run_ped2  # noqa: E402
from stream.config import ConfigError, load_config, parse_set  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/ped2.py", description=__doc__.split("\n\n")[0])
    add_arguments(ap)
    ap.add_argument("--config", metavar="FILE", default=None, help="TOML configuration file")
    ap.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=None,
                    help="override any configuration field (repeatable)")
    ap.add_argument("--transport", choices=("bus", "kafka"), default="bus",
                    help="stream over the in-process bus (default) or the Kafka broker")
    ap.add_argument("--bootstrap", metavar="HOST:PORT", default=None, help="Kafka bootstrap servers")
    ap.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        over = parse_set(args.set)
        if args.bootstrap:
            over.append(("kafka.bootstrap_servers", args.bootstrap))
        cfg = load_config(args.config, overrides=over)
        report = run_ped2(args.videos, args.out_model, cfg, work_dir=args.work,
                          fusions=[f.strip() for f in args.fusions.split(",") if f.strip()],
                          expansions=[e.strip() for e in args.expansions.split(",") if e.strip()],
                          pq_grid=parse_pq_grid(args.pq_grid), stream=not args.no_stream,
                          transport=args.transport, progress=not args.quiet, folds=args.folds,
                          stream_set=args.stream_set)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"bench/ped2.py: error: {e}", file=sys.stderr)
        return 2
    print_report(report)
    if args.markdown:
        print(format_table(report))
    if args.json:
        p = Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {p}")
    return 0 if report.get("agreement_ok") in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
