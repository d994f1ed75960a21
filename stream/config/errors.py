"""pydantic ``ValidationError`` → one-line :class:`ConfigError` naming the field.

``alerts.on: expected float (got 'high')``, ``source.sample_fps: must be a finite number (got 'nan')``,
``features.flow_width: must be <= 1920 (got 100000)``, ``kafka.bogus: unknown configuration field``.
Values of secret fields are never echoed.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from fusewatch.errors import ConfigError

SECRET_NAMES = ("sasl_plain_password",)

_TYPES = {
    "float": "float",
    "int": "int",
    "bool": "bool",
    "string": "str",
    "list": "list",
    "dict": "table",
    "model": "table",
    "dataclass": "table",
    "model_attributes": "table",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def _got(loc: tuple[Any, ...], value: Any) -> str:
    if any(str(p) in SECRET_NAMES for p in loc):
        return "'***'"
    r = repr(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
    return r if len(r) <= 60 else r[:57] + "..."


def _message(err: Any) -> tuple[str, bool]:
    """(text, names_itself): ``names_itself`` when the text already starts with the field name."""
    kind, ctx, loc = err["type"], err.get("ctx") or {}, tuple(err["loc"])
    got = _got(loc, err.get("input"))
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", err["msg"]))
        return text, len(loc) <= 1 and ":" in text.split(" ")[0]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown configuration field", False
    if kind == "missing":
        return "required", False
    if kind == "finite_number":
        return f"must be a finite number (got {got})", False
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {ctx.get(_BOUND_KEYS[kind])} (got {got})", False
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {choices} (got {got})", False
    if kind in ("too_short", "string_too_short"):
        return "must not be empty", False
    if kind in ("too_long", "string_too_long"):
        return f"too long (at most {ctx.get('max_length')})", False
    for prefix, tname in _TYPES.items():
        if kind.startswith(prefix + "_") or kind == f"{prefix}_type":
            return f"expected {tname} (got {got})", False
    return f"{err['msg']} (got {got})", False


def _dotted(loc: tuple[Any, ...]) -> str:
    # Literal | None unions add a branch name (e.g. 'literal[...]' or 'none') to loc: drop it.
    return ".".join(str(p) for p in loc if isinstance(p, str) and "[" not in p and p not in ("none", "function-after"))


def config_error(e: ValidationError, prefix: tuple[str, ...] = ()) -> ConfigError:
    """The first error of ``e`` as one line (``+ N more`` when there are several)."""
    errs = e.errors(include_url=False)
    # one error per field: unions report each branch; keep the most specific (not 'none_required').
    seen: dict[str, Any] = {}
    for er in errs:
        key = _dotted(prefix + tuple(er["loc"]))
        if key not in seen or seen[key]["type"] in ("none_required",):
            seen[key] = er
    items = list(seen.items())
    name, first = items[0]
    text, named = _message({**first, "loc": prefix + tuple(first["loc"])})
    line = text if named or not name else f"{name}: {text}"
    if len(items) > 1:
        line += f" (and {len(items) - 1} more error{'s' if len(items) > 2 else ''})"
    return ConfigError(line)
