#!/usr/bin/env bash
# The one command that runs every tierwatch test, on a dev box or a fresh CI
# machine: installs the real services if missing (Kafka jars via Maven,
# PostgreSQL via apt), starts them on loopback, runs
#   cargo test --workspace --all-targets "$@"
# with TIERWATCH_TEST_* pointing at them, and always stops them again.
# Exits with cargo's status.
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
exit "$rc"
