"""``fusewatch train``: weakly-supervised training (:mod:`fusewatch.engines.training.loop`)."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from fusewatch.engines.fusion.names import FUSIONS
from fusewatch.errors import DataNotFoundError
from fusewatch.stream.config import Config


def _cmd_train(args: argparse.Namespace, cfg: Config) -> int:
    from fusewatch.extras import require

    require("torch", "fusewatch train")
    from fusewatch.engines.training.checkpoint import check_writable_file
    from fusewatch.engines.training.loop import train

    data = Path(args.data)
    if not data.exists():
        raise DataNotFoundError(f"--data {data}: not found")
    check_writable_file(args.out, "--out")  # before training, not after it
    cfg = copy.deepcopy(cfg)
    if args.seed is not None:
        cfg.train.seed = int(args.seed)
    if args.epochs is not None:
        cfg.train.epochs = int(args.epochs)
    if args.window is not None:
        cfg.model.window = int(args.window)
    cfg.validate()
    reps = [r.strip() for r in args.representations.split(",") if r.strip()] if args.representations else None
    summary = train(data, cfg, args.out, fusion=args.fusion, representations=reps, progress=not args.no_progress)
    print(f"saved {summary.out} ({summary.describe()})")
    return 0


def add_commands(subparsers) -> None:
    """Register ``train`` on the ``fusewatch`` CLI."""
    p = subparsers.add_parser(
        "train",
        help="train a fusion model on extracted clip features",
        description="Weakly-supervised training (top-k MIL + LEGO degree-variance regulariser) on every "
        "video, keeping the last epoch (train.val_fraction > 0: a validation split picks the best epoch); "
        "alert thresholds are calibrated on normal videos the model never trained on (train.calibration).",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="feature data: fusewatch extract folder, UCF-Crime C3D .txt folder, .list files or .npy",
    )
    p.add_argument("--out", required=True, metavar="MODEL", help="checkpoint to write (.pt)")
    p.add_argument("--fusion", choices=FUSIONS, default=None, help="fusion model (default: model.fusion)")
    p.add_argument(
        "--representations",
        metavar="A,B",
        default=None,
        help="comma-separated representation names (default: model.representations)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: train.seed)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: train.epochs)")
    p.add_argument("--window", type=int, default=None, help="clip nodes per graph N (default: model.window)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_train)
