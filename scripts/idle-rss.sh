#!/usr/bin/env bash
# Idle memory of a running daemon: produce a simulated history to fresh topics on the broker of
# `scripts/services.sh start`, run `tierwatch run` on it (Postgres store, drift evaluated every
# 10 s over 160 days), and print its RSS every 2 s for two minutes, then the maximum.
#
# Usage: bash scripts/idle-rss.sh [BINARY] [LABEL]   (default: target/release/tierwatch)
# Figures: BENCHMARKS.md, "Idle memory".
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO_ROOT/target/release/tierwatch}"
LABEL="${2:-run}"
# shellcheck disable=SC1091
. "${TW_SERVICES_DIR:-$REPO_ROOT/.tw-services}/env"
PFX="rss_${LABEL//[^a-z0-9]/}_$$"
WORK="$(mktemp -d)"
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for t in routing feedback tickets; do
    java -cp "$TIERWATCH_KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$TIERWATCH_TEST_KAFKA_BROKERS" --create --topic "$PFX.$t" \
        --partitions 3 --replication-factor 1 >/dev/null
done
psql "$TIERWATCH_TEST_DATABASE_URL" -qc "CREATE DATABASE $PFX"
"$BIN" simulate --kafka "$TIERWATCH_TEST_KAFKA_BROKERS" --routing-topic "$PFX.routing" \
    --feedback-topic "$PFX.feedback" --tickets-topic "$PFX.tickets" --format avro \
    --days 140 --conversations-per-day 300 --seed 42 2>&1 | tail -1
PORT=$((20000 + RANDOM % 20000))
cat > "$WORK/config.toml" <<TOML
[kafka]
brokers = "$TIERWATCH_TEST_KAFKA_BROKERS"
group_id = "$PFX"
auto_offset_reset = "earliest"
[topics.routing]
name = "$PFX.routing"
format = "avro"
[topics.feedback]
name = "$PFX.feedback"
format = "avro"
[topics.tickets]
name = "$PFX.tickets"
format = "avro"
[postgres]
url = "${TIERWATCH_TEST_DATABASE_URL%/*}/$PFX"
[http]
listen = "127.0.0.1:$PORT"
[drift]
lookback_days = 160
evaluate_every_seconds = 10
TOML
TIERWATCH_LOG=warn "$BIN" run --config "$WORK/config.toml" >"$WORK/daemon.log" 2>&1 &
PID=$!
max=0 samples=""
for _ in $(seq 1 60); do
    sleep 2
    rss=$(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$PID/status")
    [ "$rss" -gt "$max" ] && max=$rss
    samples="$samples $rss"
done
kill -TERM "$PID"
wait "$PID" || true
echo "$LABEL: RSS MB every 2 s:$samples"
echo "$LABEL: max RSS $max MB"
