#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders and replay file readers with AFL++ (cargo-afl, stable
# toolchain). The targets live in fuzz/ (its own Cargo workspace); see README.md (Fuzzing).
#
#   scripts/fuzz.sh install                  cargo-afl (pinned) and its AFL++ runtime, if missing
#   scripts/fuzz.sh build                    instrumented build of every target (fuzz/target)
#   scripts/fuzz.sh run SECONDS [TARGET...]  fuzz each target for SECONDS, one after the other
#                                            (default: all targets); exits 1 if any crashed
#   scripts/fuzz.sh smoke                    install + build + run TW_FUZZ_SMOKE_SECONDS (20) each
#   scripts/fuzz.sh seeds                    regenerate the committed seed corpus fuzz/seeds/
#   scripts/fuzz.sh check                    every committed seed through its target, once
#   scripts/fuzz.sh repro TARGET FILE        run one input through a target, outside AFL++
#   scripts/fuzz.sh targets                  list the targets
#
# Findings go to TW_FUZZ_OUT (default fuzz/out/<target>/default/{crashes,hangs,queue}); a run
# resumes from what a previous run left there. TW_FUZZ_SKIP_BUILD=1 skips the build in smoke.
set -euo pipefail

CARGO_AFL_VERSION=0.18.2
TARGETS=(avro_datum confluent json replay_jsonl replay_avro)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$REPO_ROOT/fuzz"
OUT="${TW_FUZZ_OUT:-$FUZZ_DIR/out}"
# Its own target dir: the instrumented build must never share artifacts with the workspace's.
export CARGO_TARGET_DIR="${TW_FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
BIN_DIR="$CARGO_TARGET_DIR/release"

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

log() { echo "==> fuzz.sh: $*"; }
die() { echo "fuzz.sh: error: $*" >&2; exit 1; }
now() { date +%s; }

cmd_install() {
    local have
    have="$(cargo afl --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have" != "$CARGO_AFL_VERSION" ]; then
        command -v make >/dev/null 2>&1 || die "make is needed to build AFL++"
        command -v cc >/dev/null 2>&1 || die "a C compiler (cc) is needed to build AFL++"
        log "cargo install --locked cargo-afl --version $CARGO_AFL_VERSION (have: ${have:-none})"
        cargo install --locked --quiet cargo-afl --version "$CARGO_AFL_VERSION"
    fi
    # Builds AFL++ (afl-fuzz and the runtime linked into the targets) for this rustc, once.
    local out
    if ! out="$(cargo afl config --build 2>&1)"; then
        case "$out" in
            *"already built"*) ;;
            *) echo "$out" >&2; die "cargo afl config --build failed" ;;
        esac
    else
        log "AFL++ built for $(rustc -V)"
    fi
}

cmd_build() {
    log "cargo afl build --release --locked (target dir $CARGO_TARGET_DIR)"
    (cd "$FUZZ_DIR" && cargo afl build --release --locked --bins)
}

check_target() {
    local t
    for t in "${TARGETS[@]}"; do [ "$t" = "$1" ] && return 0; done
    die "unknown target '$1' (targets: ${TARGETS[*]})"
}

dict_of() {
    case "$1" in
        json | replay_jsonl) echo "$FUZZ_DIR/dict/json.dict" ;;
        replay_avro) echo "$FUZZ_DIR/dict/avro.dict" ;;
        *) echo "" ;;
    esac
}

stat_of() { awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1" 2>/dev/null; }

# Run one target for $2 seconds; print its figures; return 1 if it saved a crash.
run_one() {
    local t="$1" secs="$2" dict dir stats crashes hangs
    check_target "$t"
    [ -x "$BIN_DIR/$t" ] || die "$BIN_DIR/$t missing: run '$0 build' first"
    dir="$OUT/$t"
    mkdir -p "$dir"
    dict="$(dict_of "$t")"
    # `-c -`: no CMPLOG pass (cargo-afl asks for one, but its instrumentation needs nightly).
    local args=(-c - -V "$secs" -i "$FUZZ_DIR/seeds/$t" -o "$dir")
    [ -n "$dict" ] && args+=(-x "$dict")
    log "fuzzing $t for ${secs}s (output $dir, log $dir.log)"
    # No UI, no CPU pinning (shared machines), resume from an earlier run's queue; the core
    # pattern and CPU governor checks are for dedicated fuzzing hosts.
    AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_AUTORESUME=1 AFL_SKIP_CPUFREQ=1 \
        AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        cargo afl fuzz "${args[@]}" "$BIN_DIR/$t" >"$dir.log" 2>&1 ||
        { tail -30 "$dir.log" >&2; die "afl-fuzz failed for $t (see $dir.log)"; }
    stats="$dir/default/fuzzer_stats"
    crashes="$(find "$dir/default/crashes" -name 'id:*' 2>/dev/null | wc -l)"
    hangs="$(find "$dir/default/hangs" -name 'id:*' 2>/dev/null | wc -l)"
    printf '%-13s execs %-10s execs/s %-8s corpus %-5s edges %-12s crashes %s hangs %s\n' "$t" \
        "$(stat_of "$stats" execs_done)" "$(stat_of "$stats" execs_per_sec)" "$(stat_of "$stats" corpus_count)" \
        "$(stat_of "$stats" edges_found)/$(stat_of "$stats" total_edges)" "$crashes" "$hangs"
    if [ "$crashes" -gt 0 ]; then
        log "$t CRASHED; reproduce with: $0 repro $t $dir/default/crashes/<id>"
        return 1
    fi
}

cmd_run() {
    local secs="${1:-}"
    [[ "$secs" =~ ^[0-9]+$ ]] || die "usage: $0 run SECONDS [TARGET...]"
    shift
    local targets=("$@") t failed=0
    [ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
    for t in "${targets[@]}"; do run_one "$t" "$secs" || failed=1; done
    return "$failed"
}

cmd_seeds() {
    [ -x "$BIN_DIR/seeds" ] || cmd_build
    (cd "$FUZZ_DIR" && "$BIN_DIR/seeds" seeds)
}

cmd_check() {
    local t f n=0
    for t in "${TARGETS[@]}"; do
        [ -x "$BIN_DIR/$t" ] || die "$BIN_DIR/$t missing: run '$0 build' first"
        for f in "$FUZZ_DIR/seeds/$t"/*; do
            "$BIN_DIR/$t" <"$f" >/dev/null 2>&1 || die "seed $f fails its target (run: $0 repro $t $f)"
            n=$((n + 1))
        done
    done
    log "$n seeds pass their targets"
}

cmd_repro() {
    [ $# -eq 2 ] || die "usage: $0 repro TARGET FILE"
    check_target "$1"
    [ -x "$BIN_DIR/$1" ] || cmd_build
    # Outside afl-fuzz the target reads one input from stdin; a broken contract aborts (134).
    RUST_BACKTRACE=1 "$BIN_DIR/$1" <"$2"
}

cmd_smoke() {
    local t0 secs="${TW_FUZZ_SMOKE_SECONDS:-20}"
    t0=$(now)
    cmd_install
    log "install took $(($(now) - t0))s"
    if [ "${TW_FUZZ_SKIP_BUILD:-0}" != 1 ]; then
        t0=$(now)
        cmd_build
        log "build took $(($(now) - t0))s"
    fi
    t0=$(now)
    cmd_run "$secs"
    log "fuzzing took $(($(now) - t0))s"
}

case "${1:-}" in
    install) cmd_install ;;
    build) cmd_build ;;
    run) shift; cmd_run "$@" ;;
    smoke) cmd_smoke ;;
    seeds) cmd_seeds ;;
    check) cmd_check ;;
    repro) shift; cmd_repro "$@" ;;
    targets) printf '%s\n' "${TARGETS[@]}" ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
