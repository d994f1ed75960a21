#!/usr/bin/env bash
# Fetch the Kafka broker jars from Maven Central into $LOCALKAFKA_HOME/<version>/libs (cached:
# a second run only checks the marker file). Prints the libs directory.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [[ -f "$KAFKA_LIBS/.complete" ]]; then echo "$KAFKA_LIBS"; exit 0; fi
command -v mvn >/dev/null || die "mvn not found (Maven 3 is needed once to fetch Kafka $LOCALKAFKA_VERSION)"
command -v "$JAVA" >/dev/null || die "java not found (Kafka $LOCALKAFKA_VERSION needs Java 17+)"
mkdir -p "$LOCALKAFKA_HOME"
exec 9>"$LOCALKAFKA_HOME/.fetch.lock"
flock -w 600 9 || die "timed out waiting for another fetch ($LOCALKAFKA_HOME/.fetch.lock)"
if [[ -f "$KAFKA_LIBS/.complete" ]]; then echo "$KAFKA_LIBS"; exit 0; fi   # fetched meanwhile

log "fetching Apache Kafka $LOCALKAFKA_VERSION from Maven Central (first run only)..."
start=$SECONDS
tmp="$LOCALKAFKA_HOME/$LOCALKAFKA_VERSION/libs.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
mlog="$LOCALKAFKA_HOME/fetch-$LOCALKAFKA_VERSION.log"
if ! mvn -B -ntp -f "$KAFKA_DEPLOY_DIR/pom.xml" \
      -Dkafka.version="$LOCALKAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mlog" 2>&1; then
  tail -n 30 "$mlog" >&2
  die "maven fetch failed (full log: $mlog)"
fi
ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing after fetch (log: $mlog)"
touch "$tmp/.complete"
rm -rf "$KAFKA_LIBS"; mv "$tmp" "$KAFKA_LIBS"
trap - EXIT
log "fetched $(ls "$KAFKA_LIBS"/*.jar | wc -l) jars in $((SECONDS - start))s -> $KAFKA_LIBS"
echo "$KAFKA_LIBS"
