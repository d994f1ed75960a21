"""CLI: ``fusewatch models publish|rollback|show`` — live model rollout through the compacted
``topics.models`` topic (see :mod:`fusewatch.engines.serving.manifest`)."""

from __future__ import annotations

import json
import time

from fusewatch.errors import UsageError
from fusewatch.stream.config import Config
from fusewatch.stream.transport import make_transport


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="publish a model to running engines, roll back, show the deployed model")
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="publish|rollback|show")
    q = msub.add_parser("publish", help="publish MODEL (on storage every engine host mounts) to a deployment")
    q.add_argument("--model", required=True, help="checkpoint (.pt) or exported ONNX")
    q.add_argument("--name", help="deployment (default engine.deployment)")
    q.set_defaults(handler=cmd_publish)
    q = msub.add_parser("rollback", help="publish the deployment's previous model again")
    q.add_argument("--name", help="deployment (default engine.deployment)")
    q.set_defaults(handler=cmd_rollback)
    q = msub.add_parser("show", help="print the deployment's current manifest (JSON)")
    q.add_argument("--name", help="deployment (default engine.deployment)")
    q.set_defaults(handler=cmd_show)


def _kafka(cfg: Config, what: str) -> None:
    if cfg.transport != "kafka":
        raise UsageError(
            f"`fusewatch models {what}` uses the {cfg.topics.models} topic: use --transport kafka "
            "(engines on the in-process bus take a model with EngineService.stage_model)"
        )


def current_manifest(cfg: Config, name: str, timeout: float = 30.0):
    """The newest manifest of deployment ``name`` on ``topics.models`` (None: none)."""
    from fusewatch.engines.serving.manifest import ModelWatcher
    from fusewatch.stream.topics import create_models_topic

    create_models_topic(cfg)
    t = make_transport(cfg, group_id=None, produce=False)
    try:
        return ModelWatcher(cfg, t, name).read_current(timeout)
    finally:
        t.close()


def publish(cfg: Config, manifest) -> None:
    from fusewatch.stream.topics import create_models_topic

    create_models_topic(cfg)
    t = make_transport(cfg, consume=False)
    try:
        t.produce(cfg.topics.models, manifest.name, manifest.encode())
        t.flush()
    finally:
        t.close()


def cmd_publish(args, cfg: Config) -> int:
    from fusewatch.engines.serving.manifest import build_manifest

    _kafka(cfg, "publish")
    name = args.name or cfg.engine.deployment
    cur = current_manifest(cfg, name)
    m = build_manifest(name, args.model, cur)
    publish(cfg, m)
    print(
        f"published {name}: model {m.version} ({m.model}, sha256 {m.sha256[:16]}…)"
        + (f"; previous {cur.version}" if cur is not None else "")
    )
    return 0


def cmd_rollback(args, cfg: Config) -> int:
    from fusewatch.engines.serving.manifest import rollback_manifest

    _kafka(cfg, "rollback")
    name = args.name or cfg.engine.deployment
    cur = current_manifest(cfg, name)
    if cur is None:
        raise UsageError(f"deployment {name!r}: no model published on {cfg.topics.models}")
    m = rollback_manifest(cur)
    publish(cfg, m)
    print(f"rolled back {name}: {cur.version} → {m.version} ({m.model})")
    return 0


def cmd_show(args, cfg: Config) -> int:
    _kafka(cfg, "show")
    name = args.name or cfg.engine.deployment
    cur = current_manifest(cfg, name)
    if cur is None:
        raise UsageError(f"deployment {name!r}: no model published on {cfg.topics.models}")
    d = json.loads(cur.encode())
    d["published_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cur.published))
    print(json.dumps(d, indent=2, sort_keys=True))
    return 0
