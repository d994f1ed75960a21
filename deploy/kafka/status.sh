#!/usr/bin/env bash
# One line on stdout: "running pid=N bootstrap=H:P sasl=H:P ready=yes|no" (exit 0)
# or "stopped bootstrap=H:P" (exit 3).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

pid="$(broker_pid)"
if [[ -z "$pid" ]]; then
  echo "stopped bootstrap=$BOOTSTRAP"
  exit 3
fi
use_running_addresses
ready=no
probe "$BOOTSTRAP" 2 2>/dev/null && ready=yes
echo "running pid=$pid bootstrap=$BOOTSTRAP sasl=$SASL_BOOTSTRAP ready=$ready"
