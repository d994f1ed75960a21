# shellcheck shell=bash
# Shared settings of the local single-node Kafka (sourced by fetch.sh / up.sh / down.sh / status.sh).
#
# Environment (all optional). NB: not FUSEWATCH_* — fusewatch's config loader rejects unknown
# FUSEWATCH_<SECTION>_<FIELD> variables, so the broker's own knobs use the LOCALKAFKA_ prefix.
#   LOCALKAFKA_VERSION          Kafka version fetched from Maven Central        (default 4.1.1)
#   LOCALKAFKA_HOME             cache root: <home>/<version>/libs holds the jars
#                               (default ${FUSEWATCH_CACHE:-~/.cache/fusewatch}/kafka)
#   LOCALKAFKA_RUN_DIR          data dir, logs, pid file, rendered config       (default <home>/run)
#   LOCALKAFKA_HOST             listen/advertised host                          (default 127.0.0.1)
#   LOCALKAFKA_PORT             PLAINTEXT listener                              (default 9092)
#   LOCALKAFKA_SASL_PORT        SASL_PLAINTEXT listener (PLAIN)                 (default 9094)
#   LOCALKAFKA_CONTROLLER_PORT  KRaft controller listener                       (default 9093)
#   LOCALKAFKA_HEAP             JVM max heap                                    (default 512m)
#   LOCALKAFKA_JVM_OPTS         extra JVM flags, e.g. -XX:TieredStopAtLevel=1 (faster start)
#   LOCALKAFKA_START_TIMEOUT    seconds `up` waits for the broker               (default 120)
#   LOCALKAFKA_STOP_TIMEOUT     seconds `down` waits after SIGTERM before SIGKILL (default 30)
#   LOCALKAFKA_SASL_USER / LOCALKAFKA_SASL_PASSWORD  the SASL/PLAIN client user (fusewatch / fusewatch-secret)
#   JAVA                        java binary (default: $JAVA_HOME/bin/java or java on PATH)
#   PYTHON                      python3 used for the readiness probe (stdlib only)
set -euo pipefail

KAFKA_DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOCALKAFKA_VERSION="${LOCALKAFKA_VERSION:-4.1.1}"
LOCALKAFKA_HOME="${LOCALKAFKA_HOME:-${FUSEWATCH_CACHE:-$HOME/.cache/fusewatch}/kafka}"
LOCALKAFKA_RUN_DIR="${LOCALKAFKA_RUN_DIR:-$LOCALKAFKA_HOME/run}"
LOCALKAFKA_HOST="${LOCALKAFKA_HOST:-127.0.0.1}"
LOCALKAFKA_PORT="${LOCALKAFKA_PORT:-9092}"
LOCALKAFKA_SASL_PORT="${LOCALKAFKA_SASL_PORT:-9094}"
LOCALKAFKA_CONTROLLER_PORT="${LOCALKAFKA_CONTROLLER_PORT:-9093}"
LOCALKAFKA_HEAP="${LOCALKAFKA_HEAP:-512m}"
LOCALKAFKA_START_TIMEOUT="${LOCALKAFKA_START_TIMEOUT:-120}"
LOCALKAFKA_STOP_TIMEOUT="${LOCALKAFKA_STOP_TIMEOUT:-30}"
LOCALKAFKA_SASL_USER="${LOCALKAFKA_SASL_USER:-fusewatch}"
LOCALKAFKA_SASL_PASSWORD="${LOCALKAFKA_SASL_PASSWORD:-fusewatch-secret}"

KAFKA_LIBS="$LOCALKAFKA_HOME/$LOCALKAFKA_VERSION/libs"
KAFKA_PID_FILE="$LOCALKAFKA_RUN_DIR/kafka.pid"
KAFKA_DATA_DIR="$LOCALKAFKA_RUN_DIR/data"
KAFKA_LOG_DIR="$LOCALKAFKA_RUN_DIR/logs"
KAFKA_PROPS="$LOCALKAFKA_RUN_DIR/server.properties"
BOOTSTRAP="$LOCALKAFKA_HOST:$LOCALKAFKA_PORT"
SASL_BOOTSTRAP="$LOCALKAFKA_HOST:$LOCALKAFKA_SASL_PORT"

if [[ -n "${JAVA:-}" ]]; then :
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"
else JAVA=java; fi
PYTHON="${PYTHON:-python3}"

log() { echo "kafka: $*" >&2; }
die() { echo "kafka: error: $*" >&2; exit 1; }

# pid of our running broker (pid file + live process whose command line is kafka.Kafka), else empty.
broker_pid() {
  [[ -f "$KAFKA_PID_FILE" ]] || return 0
  local pid; pid="$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  local cmd; cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  if [[ "$cmd" == *" kafka.Kafka "* ]]; then echo "$pid"; fi
}

# probe HOST:PORT [timeout] -> 0 when the broker answers a Metadata request listing a broker.
probe() { "$PYTHON" "$KAFKA_DEPLOY_DIR/probe.py" "$@"; }

# Use the addresses of the running broker's rendered config (it may run on other ports than ours).
use_running_addresses() {
  [[ -f "$KAFKA_PROPS" ]] || return 0
  local line l
  line="$(grep -E '^advertised\.listeners=' "$KAFKA_PROPS" | head -n1 | cut -d= -f2-)"
  IFS=',' read -ra ls <<<"$line"
  for l in "${ls[@]}"; do
    case "$l" in
      PLAINTEXT://*) BOOTSTRAP="${l#PLAINTEXT://}" ;;
      SASL_PLAINTEXT://*) SASL_BOOTSTRAP="${l#SASL_PLAINTEXT://}" ;;
    esac
  done
}
