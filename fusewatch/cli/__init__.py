"""``fusewatch`` command line: one entry point, subcommands registered by the modules that own them.

Global options (before or after the subcommand): ``--config F`` (TOML), ``--set section.field=value``
(repeatable; any config field; those before and after the subcommand all apply, later wins),
``--transport bus|kafka``, ``--bootstrap HOST:PORT``, ``--log-level``, ``--log-format text|json``,
``--debug`` (tracebacks instead of one-line errors).

User mistakes (bad config, missing files, unreachable broker, unsupported sources) raise a
:class:`fusewatch.errors.FusewatchError`: one line ``fusewatch: error: ...`` and exit status 2.
Any other exception is a bug and keeps its traceback. Ctrl-C exits with 130.

Every command logs through the one ``fusewatch`` logger (:func:`fusewatch.stream.logs.setup_from_config`:
level ``log_level``, format ``log_format``, configured secrets redacted from every line).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fusewatch.errors import FusewatchError, one_line
from fusewatch.stream.config import load_config, parse_set

# Modules that contribute subcommands through ``add_commands(subparsers)``.
COMMAND_MODULES = (
    "fusewatch.cli.kafka",  # kafka up|down|status|restart, topics create
    "fusewatch.cli.worker",  # worker, replay, extract
    "fusewatch.cli.engine",  # engine, export, alerts
    "fusewatch.cli.models",  # models publish|rollback|show (live model rollout)
    "fusewatch.cli.export_models",  # export-models (backbone ONNX files + trained models for runtime hosts)
    "fusewatch.cli.notify",  # notify (MQTT, webhooks)
    "fusewatch.cli.train",  # train
    "fusewatch.cli.evaluate",  # eval
    "fusewatch.cli.demo",  # demo
    "fusewatch.cli.bench",  # bench ped2
    "fusewatch.cli.ui",  # ui, labels export
    "fusewatch.cli.calibrate",  # calibrate (per-camera thresholds from normal footage)
)


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--config", metavar="FILE", default=d, help="TOML configuration file")
    # after the subcommand --set has its own dest: argparse would otherwise replace the list
    # given before the subcommand by the one given after it
    p.add_argument(
        "--set",
        metavar="SECTION.FIELD=VALUE",
        action="append",
        default=d,
        dest="set_after" if suppress else "set",
        help="override any configuration field (repeatable)",
    )
    p.add_argument(
        "--transport", choices=("bus", "kafka"), default=d, help="message transport (default: bus, the in-process bus)"
    )
    p.add_argument("--bootstrap", metavar="HOST:PORT", default=d, help="Kafka bootstrap servers")
    p.add_argument("--log-level", default=d, help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--log-format", choices=("text", "json"), default=d, help="log lines as text or JSON")
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS if suppress else False, help="show tracebacks"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusewatch", description="Streaming video anomaly detection with learnable graph-operator fusion."
    )
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        mod = importlib.import_module(name)
        mod.add_commands(sub)
    for sp in sub.choices.values():  # global options are accepted after the subcommand too
        _global_options(sp, suppress=True)
    return parser


def config_from_args(args: argparse.Namespace):
    over = parse_set((getattr(args, "set", None) or []) + (getattr(args, "set_after", None) or []))
    if getattr(args, "transport", None):
        over.append(("transport", args.transport))
    if getattr(args, "bootstrap", None):
        over.append(("kafka.bootstrap_servers", args.bootstrap))
    if getattr(args, "log_level", None):
        over.append(("log_level", args.log_level))
    if getattr(args, "log_format", None):
        over.append(("log_format", args.log_format))
    return load_config(getattr(args, "config", None), overrides=over)


def main(argv: list[str] | None = None) -> int:
    from fusewatch.stream.logs import setup_from_config
    from fusewatch.stream.memory import tune_malloc

    tune_malloc()  # long-running workers/engines: keep RSS flat (see stream/memory.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        cfg = config_from_args(args)
        setup_from_config(cfg)
        logging.getLogger("fusewatch.cli").debug("command %s, config %s", args.command, cfg.redacted())
        return int(args.handler(args, cfg) or 0)
    except KeyboardInterrupt:
        print("fusewatch: interrupted", file=sys.stderr)
        return 130
    except FusewatchError as e:
        if debug:
            raise
        print(f"fusewatch: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
