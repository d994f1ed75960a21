"""``fusewatch bench ped2``: the command-line front of :mod:`fusewatch.engines.bench.ped2`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fusewatch.engines.bench.ped2 import (
    DEFAULT_EXPANSIONS,
    DEFAULT_FOLDS,
    DEFAULT_FUSIONS,
    DEFAULT_PQ_GRID,
    run_ped2,
)
from fusewatch.engines.bench.ped2_report import format_table, print_report
from fusewatch.errors import UsageError
from fusewatch.stream.config import Config


def add_arguments(p) -> None:
    """Options of ``bench ped2`` (shared by ``fusewatch bench ped2`` and ``bench/ped2.py``)."""
    p.add_argument(
        "--videos", required=True, metavar="DIR", help="folder laid out like ../shared/data/ped2 (videos + labels.json)"
    )
    p.add_argument(
        "--protocol",
        choices=("inductive", "transductive", "both"),
        default="inductive",
        help="inductive (default, the headline): leave-one-anomalous-video-out, no selection inside "
        "folds, default recipe vs concat vs single representations vs the training-free "
        "motion baseline; transductive: the older CV-selected models trained on all videos, "
        "streamed vs offline agreement",
    )
    p.add_argument(
        "--out-model",
        metavar="PATH",
        default=None,
        help="transductive: write the selected LEGO model here (.pt; required for that protocol)",
    )
    p.add_argument(
        "--features",
        metavar="DIR",
        default=None,
        help="inductive: reuse an extracted feature folder of these videos (a finer clip stride "
        "that divides clips.clip_stride is restrided)",
    )
    p.add_argument("--seeds", default="0,1,2", metavar="A,B", help="inductive: training seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=None, help="inductive: training epochs (default: train.epochs)")
    p.add_argument("--jobs", type=int, default=1, help="inductive: training processes (default 1)")
    p.add_argument("--no-singles", action="store_true", help="inductive: skip the single-representation rows")
    p.add_argument("--md", metavar="OUT", default=None, help="inductive: write the Markdown tables here")
    p.add_argument(
        "--work",
        metavar="DIR",
        default=None,
        help="features, baseline models, scratch (default: $FUSEWATCH_CACHE/bench/ped2-<dir>; "
        "features then come from the shared extraction cache)",
    )
    p.add_argument("--json", metavar="OUT", default=None, help="write the JSON report here")
    p.add_argument("--no-stream", action="store_true", help="offline scoring only (no replay through the engine)")
    p.add_argument(
        "--stream-set",
        choices=("all", "anomalous"),
        default="all",
        help="videos to stream: all (default) or only those containing anomalies",
    )
    p.add_argument(
        "--fusions",
        default=None,
        metavar="A,B",
        help=f"fusions to benchmark (default: inductive, every fusion; transductive, {','.join(DEFAULT_FUSIONS)})",
    )
    p.add_argument(
        "--expansions",
        default=",".join(DEFAULT_EXPANSIONS),
        metavar="A,B",
        help="LEGO expansions (default matrix,hadamard)",
    )
    p.add_argument(
        "--pq-grid",
        default=" ".join(f"{a},{b}" for a, b in DEFAULT_PQ_GRID),
        metavar="'P,Q ...'",
        help="candidate (P,Q) pairs, space separated (default '%(default)s')",
    )
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="cross-validation folds (default 3)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown")


def parse_pq_grid(s: str) -> list[tuple[int, int]]:
    out = []
    for tok in s.replace(";", " ").split():
        a, _, b = tok.partition(",")
        try:
            out.append((int(a), int(b)))
        except ValueError:
            raise UsageError(f"--pq-grid: expected 'P,Q P,Q ...' (got {tok!r})") from None
    if not out:
        raise UsageError("--pq-grid: empty")
    return out


def _fusions(s: str | None) -> list[str] | None:
    """``--fusions A,B`` as a checked list (None when not given)."""
    if s is None:
        return None
    from fusewatch.engines.fusion.names import FUSIONS

    out = [f.strip() for f in s.split(",") if f.strip()]
    bad = [f for f in out if f not in FUSIONS]
    if bad or not out:
        raise UsageError(f"--fusions: expected some of {','.join(FUSIONS)} (got {s!r})")
    return out


def _write(path: str, text: str) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    print(f"wrote {p}")


def cmd_bench_ped2(args, cfg: Config) -> int:
    from fusewatch.extras import require

    require("torch", "fusewatch bench ped2")
    if args.protocol != "inductive" and not args.out_model:
        raise UsageError(f"--protocol {args.protocol}: --out-model PATH is required")
    ind = None
    if args.protocol == "inductive":
        unused = [
            name
            for name, given in (
                ("--no-stream", args.no_stream),
                ("--stream-set", args.stream_set != "all"),
                ("--expansions", args.expansions != ",".join(DEFAULT_EXPANSIONS)),
                ("--pq-grid", parse_pq_grid(args.pq_grid) != list(DEFAULT_PQ_GRID)),
                ("--folds", args.folds != DEFAULT_FOLDS),
                ("--out-model", bool(args.out_model)),
                ("--markdown", args.markdown),
            )
            if given
        ]
        if unused:
            print(
                f"fusewatch bench ped2: {', '.join(unused)} only apply to --protocol transductive/both; ignored",
                file=sys.stderr,
            )
    if args.protocol in ("inductive", "both"):
        from fusewatch.engines.bench.ped2_inductive import format_markdown, run_bench_inductive

        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds: expected integers 'A,B' (got {args.seeds!r})") from None
        ind = run_bench_inductive(
            args.videos,
            cfg,
            work_dir=args.work,
            features=args.features,
            seeds=seeds,
            epochs=args.epochs,
            singles=not args.no_singles,
            jobs=args.jobs,
            log=(lambda m: None) if args.quiet else print,
            fusions=_fusions(args.fusions),
        )
        md = format_markdown(ind)
        print(md)
        if args.md:
            _write(args.md, md + "\n")
        if args.protocol == "inductive":
            if args.json:
                _write(args.json, json.dumps({"inductive": ind}, indent=1, default=str) + "\n")
            return 0
    report = run_ped2(
        args.videos,
        args.out_model,
        cfg,
        work_dir=args.work,
        fusions=_fusions(args.fusions) or list(DEFAULT_FUSIONS),
        expansions=[e.strip() for e in args.expansions.split(",") if e.strip()],
        pq_grid=parse_pq_grid(args.pq_grid),
        stream=not args.no_stream,
        transport=cfg.transport,
        progress=not args.quiet,
        folds=args.folds,
        stream_set=args.stream_set,
    )
    print("transductive (models selected and trained on all videos, scored on the same videos):")
    print_report(report)
    if args.markdown:
        print(format_table(report))
    ok = report.get("agreement_ok") in (True, None)
    if ind is not None:
        report = {"inductive": ind, "transductive": report}
    if args.json:
        p = Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"wrote {p}")
    return 0 if ok else 1


def add_commands(subparsers) -> None:
    """Register ``bench ped2`` (adds to an existing ``bench`` command when another module made one)."""
    import argparse

    bench = subparsers.choices.get("bench") if hasattr(subparsers, "choices") else None
    if bench is None:
        bench = subparsers.add_parser("bench", help="benchmarks (ped2: accuracy of the streamed scores)")
        sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
        sub.required = True
    else:
        sub = next(a for a in bench._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser(
        "ped2",
        help="UCSD Ped2: train LEGO + baselines on weak labels, stream, frame AUC",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(p)
    try:  # accept the global options after `bench ped2` too
        from fusewatch.cli import _global_options

        _global_options(p, suppress=True)
    except (ImportError, AttributeError, argparse.ArgumentError):
        pass
    p.set_defaults(handler=cmd_bench_ped2)
