#!/usr/bin/env bash
# Start the local single-node KRaft broker in the background (no-op when already running), wait
# until it answers metadata requests, print the bootstrap address (PLAINTEXT) on stdout.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# One `up` at a time per run dir (parallel test sessions): the loser waits, then finds it running.
mkdir -p "$LOCALKAFKA_RUN_DIR"
exec 8>"$LOCALKAFKA_RUN_DIR/.up.lock"
flock -w "$LOCALKAFKA_START_TIMEOUT" 8 || die "timed out waiting for another 'up' ($LOCALKAFKA_RUN_DIR/.up.lock)"

pid="$(broker_pid)"
if [[ -n "$pid" ]]; then
  use_running_addresses
  log "already running (pid $pid)"
else
  for p in "$LOCALKAFKA_PORT" "$LOCALKAFKA_SASL_PORT" "$LOCALKAFKA_CONTROLLER_PORT"; do
    if port_open "$LOCALKAFKA_HOST" "$p"; then
      if [[ "$p" == "$LOCALKAFKA_PORT" ]] && probe "$BOOTSTRAP" 2 2>/dev/null; then
        log "a Kafka broker not started by this script already answers on $BOOTSTRAP; using it"
        echo "$BOOTSTRAP"; exit 0
      fi
      die "port $LOCALKAFKA_HOST:$p is in use by another process (set LOCALKAFKA_PORT/LOCALKAFKA_SASL_PORT/LOCALKAFKA_CONTROLLER_PORT)"
    fi
  done
  command -v "$JAVA" >/dev/null || die "java not found (Kafka $LOCALKAFKA_VERSION needs Java 17+; set JAVA or JAVA_HOME)"
  "$KAFKA_DEPLOY_DIR/fetch.sh" >/dev/null
  mkdir -p "$KAFKA_DATA_DIR" "$KAFKA_LOG_DIR"
  esc() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }
  sed -e "s|@HOST@|$(esc "$LOCALKAFKA_HOST")|g" \
      -e "s|@PORT@|$LOCALKAFKA_PORT|g" \
      -e "s|@SASL_PORT@|$LOCALKAFKA_SASL_PORT|g" \
      -e "s|@CONTROLLER_PORT@|$LOCALKAFKA_CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$(esc "$KAFKA_DATA_DIR")|g" \
      -e "s|@SASL_USER@|$(esc "$LOCALKAFKA_SASL_USER")|g" \
      -e "s|@SASL_PASSWORD@|$(esc "$LOCALKAFKA_SASL_PASSWORD")|g" \
      "$KAFKA_DEPLOY_DIR/server.properties.template" >"$KAFKA_PROPS.tmp"
  chmod 600 "$KAFKA_PROPS.tmp"; mv "$KAFKA_PROPS.tmp" "$KAFKA_PROPS"

  jvm=(-Xms128m "-Xmx$LOCALKAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
       -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
       "-Dkafka.logs.dir=$KAFKA_LOG_DIR"
       "-Dlog4j2.configurationFile=$KAFKA_DEPLOY_DIR/log4j2.xml"
       -cp "$KAFKA_LIBS/*")
  # shellcheck disable=SC2206  # word splitting intended: extra JVM flags
  if [[ -n "${LOCALKAFKA_JVM_OPTS:-}" ]]; then jvm=($LOCALKAFKA_JVM_OPTS "${jvm[@]}"); fi
  if [[ ! -f "$KAFKA_DATA_DIR/meta.properties" ]]; then
    # Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'.
    while :; do
      cid="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
      [[ "$cid" != -* ]] && break
    done
    log "formatting storage $KAFKA_DATA_DIR (cluster $cid)"
    "$JAVA" "${jvm[@]}" kafka.tools.StorageTool format --standalone --ignore-formatted \
        -t "$cid" -c "$KAFKA_PROPS" >"$KAFKA_LOG_DIR/format.log" 2>&1 \
      || { cat "$KAFKA_LOG_DIR/format.log" >&2; die "storage format failed"; }
  fi

  log "starting Kafka $LOCALKAFKA_VERSION on $BOOTSTRAP (sasl $SASL_BOOTSTRAP, controller :$LOCALKAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
  setsid nohup "$JAVA" "${jvm[@]}" kafka.Kafka "$KAFKA_PROPS" \
      </dev/null >>"$KAFKA_LOG_DIR/stdout.log" 2>&1 8>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PID_FILE"
fi

deadline=$((SECONDS + LOCALKAFKA_START_TIMEOUT))
until probe "$BOOTSTRAP" 2 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 40 "$KAFKA_LOG_DIR/stdout.log" >&2 || true
    rm -f "$KAFKA_PID_FILE"
    die "broker exited during start-up (logs: $KAFKA_LOG_DIR)"
  fi
  if (( SECONDS >= deadline )); then
    tail -n 20 "$KAFKA_LOG_DIR/server.log" >&2 || true
    die "broker did not answer on $BOOTSTRAP within ${LOCALKAFKA_START_TIMEOUT}s (pid $pid still running; logs: $KAFKA_LOG_DIR)"
  fi
  sleep 0.5
done
log "ready: $BOOTSTRAP (pid $pid)"
echo "$BOOTSTRAP"
