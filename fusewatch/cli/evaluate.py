"""``fusewatch eval``: frame-level metrics of a model on feature files or streamed videos."""

from __future__ import annotations

import argparse

from fusewatch.engines.evaluation.evaluate import evaluate
from fusewatch.engines.evaluation.stream_eval import evaluate_stream
from fusewatch.errors import UsageError


def _cmd_eval(args: argparse.Namespace, cfg) -> int:
    if not args.model:
        raise UsageError("eval: --model MODEL is required")
    from fusewatch.extras import require

    require("sklearn", "fusewatch eval (ROC-AUC / AP)")
    if args.stream or args.videos:
        if not (args.stream and args.videos):
            raise UsageError("eval: --stream needs --videos VIDEO_DIR (and --videos needs --stream)")
        rep = evaluate_stream(args.model, args.videos, cfg, out_json=args.json, plots_dir=args.plots)
        if args.json:
            print(f"wrote {args.json}")
        return 0
    if not args.data:
        raise UsageError("eval: --data DIR is required (or --videos DIR --stream)")
    rep = evaluate(
        args.model,
        args.data,
        out_json=args.json,
        plots_dir=args.plots,
        max_timelines=None if args.max_timelines < 0 else args.max_timelines,
    )
    if args.json:
        print(f"wrote {args.json}")
    if args.plots:
        print(f"wrote {len(rep['plots'])} plot(s) to {args.plots}")
    return 0


def add_commands(subparsers) -> None:
    """Register ``eval`` on the ``fusewatch`` CLI."""
    p = subparsers.add_parser(
        "eval",
        help="frame-level AUC/AP of a trained model on extracted features",
        description="Scores every clip causally (as the streaming engine does), pools frames over all "
        "videos and reports ROC-AUC and AP; optional JSON report and plots.",
    )
    p.add_argument("--model", metavar="MODEL", default=None, help="checkpoint (.pt) written by train")
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="feature data with ground truth (same layouts as train; .list folders: test lists)",
    )
    p.add_argument("--json", metavar="OUT", default=None, help="write the JSON report here")
    p.add_argument("--plots", metavar="DIR", default=None, help="write ROC and timeline PNGs here")
    p.add_argument(
        "--videos",
        metavar="VIDEO_DIR",
        default=None,
        help="with --stream: videos + labels.json, scored through worker → transport → engine",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="score by replaying --videos through the streaming path (uses --transport)",
    )
    p.add_argument(
        "--max-timelines",
        type=int,
        default=100,
        metavar="K",
        help="at most K per-video timeline plots (-1: all; default 100)",
    )
    p.set_defaults(handler=_cmd_eval)
