#!/usr/bin/env bash
# mypy, strict, on the public API and the message boundaries (README "Tests").
# The import names (fusewatch.stream → stream/, …) come from setuptools' package-dir mapping, which
# mypy does not read: check a symlinked copy of the layout the installed package has.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py=${PYTHON:-$repo/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/fusewatch"
for f in fusewatch/*; do ln -s "$repo/$f" "$tmp/fusewatch/$(basename "$f")"; done
ln -s "$repo/stream" "$tmp/fusewatch/stream"
ln -s "$repo/engines" "$tmp/fusewatch/engines"
ln -s "$repo/deploy" "$tmp/fusewatch/deploy"
cd "$tmp"
"$py" -m mypy --config-file "$repo/pyproject.toml" \
  -m fusewatch -m fusewatch.errors -m fusewatch.extras -m fusewatch.testing \
  -m fusewatch.stream.schema -m fusewatch.stream.alert_schema -m fusewatch.stream.transport.base \
  -m fusewatch.stream.stats \
  -m fusewatch.stream.config -m fusewatch.stream.config.sections -m fusewatch.stream.config.notify \
  -m fusewatch.stream.config.errors -m fusewatch.engines.fusion.meta
