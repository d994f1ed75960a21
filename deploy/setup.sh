#!/usr/bin/env bash
# Set up fusewatch on this machine, non-interactively and idempotently:
#   - system packages the tests and demo need (ffmpeg, mosquitto; Java 17 + Maven and Go are expected present)
#   - a virtual environment cached outside the clone, keyed by a hash of pyproject.toml:
#       ${FUSEWATCH_CACHE:-~/.cache/fusewatch}/venv-<sha256(pyproject.toml)[:12]>
#   - this clone installed into it (editable), and ./.venv pointing at it.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${FUSEWATCH_CACHE:-$HOME/.cache/fusewatch}
HASH=$(sha256sum pyproject.toml | cut -c1-12)
VENV=$CACHE/venv-$HASH
PY=${PYTHON:-python3}
mkdir -p "$CACHE"

if ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ffmpeg (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "setup: warning: ffmpeg not found (needed by the RTSP/HTTP source tests); install it" >&2
  fi
fi

# the MQTT sink tests start their own `mosquitto -c <conf>` on a free port: the system service is not used
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing mosquitto (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
  else
    echo "setup: warning: mosquitto not found (needed by the MQTT sink tests); install it" >&2
  fi
fi

# the web UI's browser tests drive Debian's Chromium through its chromedriver (no browser download)
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium + chromium-driver (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: warning: chromium/chromedriver not found (needed by the web UI browser tests); install them" >&2
  fi
fi

if [ ! -f "$VENV/.complete" ]; then
  echo "setup: creating $VENV (first run downloads torch and friends: several minutes)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q --progress-bar off -e ".[train,test,ui]"
  # optional: the TensorRT-RTX builder lets the test suite build TensorRT engines without a GPU
  "$VENV/bin/pip" install -q --progress-bar off -e ".[train,test,ui,trt-rtx]" \
    || echo "setup: note: tensorrt-rtx not installable here; its test will be skipped with the reason" >&2
  touch "$VENV/.complete"
fi
# The venv is shared between clones: point its editable install at this clone (no dependency work).
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
  || "$VENV/bin/pip" install -q --no-deps -e .
ln -sfn "$VENV" .venv
echo "setup: ready: $(readlink .venv) (fusewatch: .venv/bin/fusewatch)"
