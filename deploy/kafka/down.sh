#!/usr/bin/env bash
# Stop the local broker by pid: SIGTERM (controlled shutdown), SIGKILL after LOCALKAFKA_STOP_TIMEOUT.
#   --kill   send SIGKILL at once (crash simulation; data is kept)
#   --purge  also delete the data directory (topics, offsets) after stopping
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

sig=TERM purge=0
for a in "$@"; do
  case "$a" in
    --kill) sig=KILL ;;
    --purge) purge=1 ;;
    *) die "unknown option $a (use --kill, --purge)" ;;
  esac
done

pid="$(broker_pid)"
if [[ -z "$pid" ]]; then
  log "not running"
else
  log "stopping pid $pid (SIG$sig)"
  kill "-$sig" "$pid" 2>/dev/null || true
  deadline=$((SECONDS + LOCALKAFKA_STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      log "still running after ${LOCALKAFKA_STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
  log "stopped"
fi
rm -f "$KAFKA_PID_FILE"
if (( purge )); then
  rm -rf "$KAFKA_DATA_DIR"
  log "purged $KAFKA_DATA_DIR"
fi
