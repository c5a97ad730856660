#!/usr/bin/env bash
# The demo's pipeline stage into the embedded SQLite store: run `tierwatch demo` (140 days ×
# 1,500 conversations/day, rescoring on, ≈ 481k records) RUNS times and print, per run and as
# medians, the pipeline stage's wall time (from the replay's "replaying" log line to its
# "pipeline stopped" line, both logged by the daemon at info), records/s over that time, the
# daemon's own split (apply_s: decode + join, commit_s: building and committing batches) and the
# demo's total.
#
# Usage: bash scripts/bench-demo-pipeline.sh [BINARY] [RUNS]   (default: target/release/tierwatch, 3)
#   TW_BENCH_DEMO_ARGS="--days 70"   extra `tierwatch demo` arguments
#   TW_BENCH_VERBOSE=1               keep each run's log (per-batch "batch written (sqlite)" lines)
# Figures: BENCHMARKS.md, "Embedded store replay".
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$REPO_ROOT/target/release/tierwatch}"
RUNS="${2:-3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Seconds since midnight of an RFC 3339 timestamp's time of day.
secs() { awk -F'T' '{ split(substr($2, 1, 15), t, ":"); printf "%.6f\n", t[1] * 3600 + t[2] * 60 + t[3] }' <<<"$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf '%-4s %9s %10s %11s %9s %9s %8s\n' run records pipeline_s records/s apply_s commit_s total_s
for i in $(seq 1 "$RUNS"); do
    log="$WORK/run$i.log"
    # shellcheck disable=SC2086
    TIERWATCH_LOG="tierwatch=info,tierwatch::store::sqlite=debug" NO_COLOR=1 \
        "$BIN" demo --quiet --no-report --out "$WORK/demo" ${TW_BENCH_DEMO_ARGS:-} >"$WORK/out$i.txt" 2>"$log"
    start="$(grep -m1 ' replaying' "$log" | awk '{ print $1 }')"
    stop_line="$(grep -m1 'pipeline stopped' "$log")"
    stop="$(awk '{ print $1 }' <<<"$stop_line")"
    field() { grep -o "$1=[0-9.]*" <<<"$stop_line" | cut -d= -f2; }
    records="$(field messages)"
    pipeline="$(awk -v a="$(secs "$start")" -v b="$(secs "$stop")" 'BEGIN { d = b - a; if (d < 0) d += 86400; printf "%.3f", d }')"
    rate="$(awk -v n="$records" -v s="$pipeline" 'BEGIN { printf "%.0f", n / s }')"
    total="$(grep -o 'Took [0-9.]*' "$WORK/out$i.txt" | awk '{ print $2 }')"
    printf '%-4s %9s %10s %11s %9.3f %9.3f %8s\n' "$i" "$records" "$pipeline" "$rate" "$(field apply_s)" "$(field commit_s)" "$total" |
        tee -a "$WORK/rows"
    if [ -n "${TW_BENCH_VERBOSE:-}" ]; then
        cp "$log" "$REPO_ROOT/target/bench-demo-pipeline-run$i.log"
    fi
done
printf '%-4s %9s %10s %11s %9s %9s %8s\n' median \
    "$(awk '{ print $2 }' "$WORK/rows" | median)" "$(awk '{ print $3 }' "$WORK/rows" | median)" \
    "$(awk '{ print $4 }' "$WORK/rows" | median)" "$(awk '{ print $5 }' "$WORK/rows" | median)" \
    "$(awk '{ print $6 }' "$WORK/rows" | median)" "$(awk '{ print $7 }' "$WORK/rows" | median)"
