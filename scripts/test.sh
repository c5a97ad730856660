#!/usr/bin/env bash
# The one command that runs every tierwatch test, on a dev box or a fresh CI
# machine: installs the real services if missing (Kafka jars via Maven,
# PostgreSQL via apt), starts them on loopback, runs
#   cargo test --workspace --all-targets "$@"
# with TIERWATCH_TEST_* pointing at them, then a short fuzz smoke run
# (scripts/fuzz.sh smoke; TW_SKIP_FUZZ=1 skips it), and always stops them again.
# Exits with cargo's status, else the fuzz smoke's.
#
# If the services were already running before (scripts/services.sh start),
# they are reused and left running.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
SERVICES="$REPO_ROOT/scripts/services.sh"

# rustup's default location, in case PATH lacks it (e.g. a bare CI shell).
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: error: 'cargo' not found in PATH. Install the Rust toolchain (rustup) first." >&2
    exit 127
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
phase() { echo "==> test.sh: $*"; }

STOP_ON_EXIT=1
cleanup() {
    local rc=$?
    if [ "$STOP_ON_EXIT" -eq 1 ]; then
        phase "stopping services"
        bash "$SERVICES" stop || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if bash "$SERVICES" status >/dev/null 2>&1; then
    phase "services already running; reusing them and leaving them running"
    STOP_ON_EXIT=0
fi

t=$(now)
phase "install"
bash "$SERVICES" install
phase "install took $(elapsed "$t")s"

t=$(now)
phase "start services"
bash "$SERVICES" start >/dev/null
# shellcheck disable=SC1090
. "${TW_SERVICES_DIR:-$REPO_ROOT/.tw-services}/env"
phase "start took $(elapsed "$t")s (kafka $TIERWATCH_TEST_KAFKA_BROKERS, postgres $TIERWATCH_TEST_DATABASE_URL)"

# A one-shot build gains nothing from incremental state; it only costs disk.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
disk_report() {
    local target_size="absent"
    [ -d "$TARGET_DIR" ] && target_size="$(du -sh "$TARGET_DIR" 2>/dev/null | cut -f1)"
    phase "disk $1: $(df -h --output=avail "$REPO_ROOT" | tail -1 | tr -d ' ') free, target dir $target_size"
}
disk_report "before build"

t=$(now)
phase "cargo test --workspace --all-targets $*"
set +e
cargo test --workspace --all-targets "$@"
rc=$?
set -e
phase "tests took $(elapsed "$t")s, cargo exit status $rc"
disk_report "after tests"

# ---- fuzz smoke: a separate step after the tests; TW_SKIP_FUZZ=1 skips it ----
# scripts/fuzz.sh installs cargo-afl if missing, builds the instrumented decoder and replay-reader
# targets in fuzz/target (its own workspace: only the decoders' few dependencies) and fuzzes each
# for TW_FUZZ_SMOKE_SECONDS (20 s, 100 s in all). A decoder change that breaks its contract, or a
# seed it no longer accepts, fails here.
fuzz_rc=0
if [ "${TW_SKIP_FUZZ:-0}" = 1 ]; then
    phase "fuzz smoke skipped (TW_SKIP_FUZZ=1)"
else
    t=$(now)
    phase "fuzz smoke: scripts/fuzz.sh smoke"
    set +e
    bash "$REPO_ROOT/scripts/fuzz.sh" smoke
    fuzz_rc=$?
    set -e
    phase "fuzz smoke took $(elapsed "$t")s, exit status $fuzz_rc"
fi
[ "$rc" -ne 0 ] && exit "$rc"
exit "$fuzz_rc"
