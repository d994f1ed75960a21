"""``fusewatch`` command line: one entry point, subcommands registered by the modules that own them.

Global options (before or after the subcommand): ``--config F`` (TOML), ``--set section.field=value``
(repeatable; any config field), ``--transport bus|kafka``, ``--bootstrap HOST:PORT``,
``--log-level``, ``--debug`` (tracebacks instead of one-line errors).

User mistakes (bad config, missing files, unreachable broker, unsupported sources) print one line
``fusewatch: error: ...`` and exit with status 2; Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fusewatch.stream.config import ConfigError, load_config, parse_set

# Modules that contribute subcommands through ``add_commands(subparsers)``.
COMMAND_MODULES = (
    "fusewatch.cli.kafka",     # kafka up|down|status|restart, topics create
    "fusewatch.cli.worker",    # worker, replay, extract
    "fusewatch.cli.engine",    # engine, export, alerts
    "fusewatch.cli.notify",    # notify (MQTT, webhooks)
    "fusewatch.cli.train",     # train
    "fusewatch.cli.evaluate",  # eval
    "fusewatch.cli.demo",      # demo
    "fusewatch.cli.bench",     # bench ped2
)


def _global_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--config", metavar="FILE", default=d, help="TOML configuration file")
    p.add_argument("--set", metavar="SECTION.FIELD=VALUE", action="append", default=d,
                   help="override any configuration field (repeatable)")
    p.add_argument("--transport", choices=("bus", "kafka"), default=d,
                   help="message transport (default: bus, the in-process bus)")
    p.add_argument("--bootstrap", metavar="HOST:PORT", default=d, help="Kafka bootstrap servers")
    p.add_argument("--log-level", default=d, help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusewatch",
        description="Streaming video anomaly detection with learnable graph-operator fusion.")
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
    over = parse_set(getattr(args, "set", None))
    if getattr(args, "transport", None):
        over.append(("transport", args.transport))
    if getattr(args, "bootstrap", None):
        over.append(("kafka.bootstrap_servers", args.bootstrap))
    if getattr(args, "log_level", None):
        over.append(("log_level", args.log_level))
    return load_config(getattr(args, "config", None), overrides=over)


def _user_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [ConfigError, FileNotFoundError, ValueError, PermissionError]
    for mod, name in (("fusewatch.stream.transport.base", "TransportError"),
                      ("fusewatch.stream.sources", "SourceError"),
                      ("fusewatch.engines.serving.backends", "BackendError")):
        try:
            errs.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errs)


def main(argv: list[str] | None = None) -> int:
    from fusewatch.stream.memory import tune_malloc
    tune_malloc()  # long-running workers/engines: keep RSS flat (see stream/memory.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    try:
        cfg = config_from_args(args)
        logging.basicConfig(level=getattr(logging, cfg.log_level.upper()),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
        return int(args.handler(args, cfg) or 0)
    except KeyboardInterrupt:
        print("fusewatch: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"fusewatch: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
