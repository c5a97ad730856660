#!/usr/bin/env bash
# Real services for tierwatch development and CI: a single-node Kafka (KRaft)
# broker and a throwaway PostgreSQL cluster, both on 127.0.0.1 only, with data
# in fresh temporary directories.
#
# Usage: scripts/services.sh <command>
#   install           install Kafka jars (Maven), PostgreSQL, Alertmanager, Prometheus and
#                     Chromium (apt) if missing
#   start             install if needed, start both, write + print the env file
#   stop              stop both, delete their temp dirs and the env file
#   status            exit 0 if both are running (prints the env file), else 1
#   env               print the env file
#   restart-kafka     stop + start the broker on the same port and data dir
#   restart-postgres  stop + start Postgres on the same port and data dir
#   kafka-down / kafka-up, postgres-down / postgres-up
#                     the two halves of a restart, for fault tests that need
#                     the server gone for a while (same port, same data)
#
# Environment:
#   TIERWATCH_CACHE   cache root for the Kafka jars (default ~/.cache/tierwatch)
#   TW_SERVICES_DIR   where the env file lives (default <repo>/.tw-services)
#
# The env file exports TIERWATCH_TEST_KAFKA_BROKERS, TIERWATCH_TEST_DATABASE_URL,
# TIERWATCH_KAFKA_LIBS (java -cp "$TIERWATCH_KAFKA_LIBS/*" ...) and the paths
# this script needs to stop/restart the servers. Its contents do not change on
# restart-kafka / restart-postgres.
#
# Besides its PLAINTEXT listener the broker has a second one on loopback,
# SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512, and Postgres accepts TLS
# (ssl = on; plain connections still work). Both present a server certificate
# for 127.0.0.1/localhost signed by a throwaway CA generated at start:
#   TIERWATCH_TEST_KAFKA_SASL_BROKERS   127.0.0.1:<port> of the SASL_SSL listener
#   TIERWATCH_TEST_KAFKA_SASL_USER      SCRAM user (created at format time)
#   TIERWATCH_TEST_KAFKA_SASL_PASSWORD  its password (random per start)
#   TIERWATCH_TEST_TLS_CA               the CA certificate (PEM) to trust
#   TIERWATCH_TEST_TLS_UNTRUSTED_CA     another CA (PEM) that signed nothing here
#   TIERWATCH_TEST_DATABASE_TLS_URL     the Postgres URL with sslmode=verify-full
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"
KAFKA_LOG4J="$SCRIPT_DIR/kafka/log4j2.properties"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n1)"
[ -n "$KAFKA_VERSION" ] || { echo "services.sh: cannot read kafka.version from $KAFKA_POM" >&2; exit 1; }

if [ -z "${HOME:-}" ]; then
    HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
    export HOME
fi
CACHE_ROOT="${TIERWATCH_CACHE:-$HOME/.cache/tierwatch}"
KAFKA_CACHE="$CACHE_ROOT/kafka-$KAFKA_VERSION"
KAFKA_LIBS="$KAFKA_CACHE/libs"
KAFKA_MARKER="$KAFKA_CACHE/.complete"

SVC_DIR="${TW_SERVICES_DIR:-$REPO_ROOT/.tw-services}"
ENV_FILE="$SVC_DIR/env"

KAFKA_READY_TIMEOUT="${TW_KAFKA_READY_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${TW_KAFKA_STOP_TIMEOUT:-30}"
KAFKA_HEAP="${TW_KAFKA_HEAP:--Xmx512m}"

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers

APT_UPDATED=0
apt_install() {
    [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $* (or install it yourself)"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

# Print N distinct free TCP ports on 127.0.0.1, one per line.
free_ports() {
    local n="$1"
    if command -v python3 >/dev/null 2>&1 && python3 -c 'import socket' >/dev/null 2>&1; then
        python3 - "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
for s in socks:
    s.close()
PY
        return
    fi
    # Fallback: random ports in 20000-59999 that nobody answers on.
    local got=() p tries=0
    while [ "${#got[@]}" -lt "$n" ]; do
        tries=$((tries + 1)); [ "$tries" -lt 1000 ] || die "cannot find free ports"
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ " ${got[*]:-} " == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then got+=("$p"); fi
    done
    printf '%s\n' "${got[@]}"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Alive and not a zombie.
pid_alive() {
    local pid="$1" state
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo Z)"
    [ "$state" != Z ]
}

# The pid is alive and its command line mentions $2 (guards against pid reuse).
pid_is() {
    local pid="$1" needle="$2"
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

load_env() {
    # shellcheck disable=SC1090
    [ -f "$ENV_FILE" ] && . "$ENV_FILE"
}

# ---------------------------------------------------------------- install

java_ok() {
    command -v java >/dev/null 2>&1 || return 1
    local v
    v="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
    [ -n "$v" ] && [ "${v%%.*}" -ge 17 ] 2>/dev/null
}

install_kafka() {
    local want have
    want="$KAFKA_VERSION $(sha256sum "$KAFKA_POM" | cut -d' ' -f1)"
    if [ -f "$KAFKA_MARKER" ] && [ "$(cat "$KAFKA_MARKER")" = "$want" ] && [ -d "$KAFKA_LIBS" ]; then
        java_ok || apt_install openjdk-17-jre-headless
        return 0
    fi
    java_ok || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null 2>&1 || apt_install maven
    log "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
    mkdir -p "$KAFKA_CACHE"
    rm -rf "$KAFKA_LIBS.tmp" "$KAFKA_MARKER"
    if ! mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
            -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime >"$KAFKA_CACHE/mvn.log" 2>&1; then
        tail -n 40 "$KAFKA_CACHE/mvn.log" >&2
        die "maven failed (full log: $KAFKA_CACHE/mvn.log)"
    fi
    ls "$KAFKA_LIBS.tmp"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka jar missing after maven run"
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
    echo "$want" >"$KAFKA_MARKER"
}

pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_postgres() {
    if pg_bindir >/dev/null && command -v psql >/dev/null 2>&1; then return 0; fi
    # Install postgresql-common first and switch off Debian's auto-created
    # "main" cluster: we only ever run our own throwaway cluster.
    apt_install postgresql-common
    if command -v pg_conftool >/dev/null 2>&1; then
        pg_conftool /etc/postgresql-common/createcluster.conf set create_main_cluster off || true
    fi
    apt_install postgresql postgresql-client
    pg_bindir >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
}

# Alertmanager, for the alert delivery test (which runs its own instance).
install_alertmanager() {
    [ -x /usr/bin/prometheus-alertmanager ] && return 0
    apt_install prometheus-alertmanager
}

# Prometheus and promtool, for the alert-rule unit tests and the PromQL test
# (which run their own server); Chromium, for the report's browser test.
install_prometheus() {
    command -v promtool >/dev/null 2>&1 && [ -x /usr/bin/prometheus ] && return 0
    apt_install prometheus
}

install_chromium() {
    command -v chromium >/dev/null 2>&1 && return 0
    apt_install chromium
}

# The system libraries the daemon links (librdkafka's TLS and zstd, the embedded SQLite store)
# and pkg-config, which finds them at build time.
install_build_libs() {
    local missing=() pkg
    for pkg in pkg-config libssl-dev libzstd-dev libsqlite3-dev; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
}

cmd_install() {
    install_build_libs
    install_kafka
    install_postgres
    install_alertmanager
    install_prometheus
    install_chromium
    command -v openssl >/dev/null 2>&1 || apt_install openssl
}

# ---------------------------------------------------------------- tls

# A throwaway CA and a server certificate for 127.0.0.1/localhost in
# $TW_TLS_DIR: ca.pem (to trust), server.pem + server.key (Postgres),
# server.p12 (the broker's PKCS12 keystore, password in keystore.pass), and an
# unrelated CA (untrusted-ca.pem) for tests that must see verification fail.
tls_make() {
    local d pass
    TW_TLS_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tierwatch-tls.XXXXXX")"
    d="$TW_TLS_DIR"
    pass="$(openssl rand -hex 16)"
    # One && chain: `set -e` does not apply inside a command whose status is tested.
    (
        cd "$d" &&
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tierwatch test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca.key -out ca.pem &&
        openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=tierwatch untrusted CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout untrusted-ca.key -out untrusted-ca.pem &&
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr &&
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
            "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext &&
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile server.ext -out server.pem &&
        printf '%s' "$pass" >keystore.pass &&
        openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name broker \
            -passout "pass:$pass" -out server.p12 &&
        chmod 600 ./*.key keystore.pass server.p12
    ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "generating the test certificates failed"; }
}

tls_remove() {
    case "${TW_TLS_DIR:-}" in /*tierwatch-tls.*) rm -rf "$TW_TLS_DIR" ;; esac
}

# ---------------------------------------------------------------- kafka

kafka_java() {
    # $1.. : main class and args
    java -Xshare:auto -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
        -cp "$KAFKA_LIBS/*" "$@"
}

kafka_pid() { cat "$TW_KAFKA_DIR/kafka.pid" 2>/dev/null || true; }

kafka_running() {
    [ -n "${TW_KAFKA_DIR:-}" ] && pid_is "$(kafka_pid)" "$TW_KAFKA_DIR/server.properties"
}

# Launch the broker for an already formatted $TW_KAFKA_DIR and wait until ready.
kafka_launch() {
    local dir="$TW_KAFKA_DIR" port="$TW_KAFKA_PORT" out pid deadline
    mkdir -p "$dir/logs"
    out="$dir/logs/kafka.out"
    : >"$out"
    # setsid: not in our process group, so a Ctrl-C on the terminal does not
    # hit it; stop/trap handlers do that in order.
    (cd "$dir" && exec setsid nohup java $KAFKA_HEAP -Xms128m -XX:+UseG1GC \
        -Djava.awt.headless=true \
        -Dkafka.logs.dir="$dir/logs" \
        -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" \
        </dev/null >>"$out" 2>&1 9>&-) &
    pid=$!
    echo "$pid" >"$dir/kafka.pid"
    deadline=$((SECONDS + KAFKA_READY_TIMEOUT))
    while :; do
        if ! pid_alive "$pid"; then
            tail -n 60 "$out" >&2 || true
            die "kafka exited during startup (log: $out)"
        fi
        if grep -q "Kafka Server started" "$out" 2>/dev/null && port_open "$port"; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 60 "$out" >&2 || true
            kafka_kill "$pid"
            die "kafka not ready after ${KAFKA_READY_TIMEOUT}s (log: $out)"
        fi
        sleep 0.3
    done
    log "kafka ready on 127.0.0.1:$port (pid $pid)"
}

kafka_kill() {
    local pid="$1" deadline
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
    while pid_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if pid_alive "$pid"; then
        log "kafka (pid $pid) did not stop in ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while pid_alive "$pid"; do sleep 0.1; done
    fi
    # Reap it if it is our own child (restart in the same invocation).
    wait "$pid" 2>/dev/null || true
}

kafka_stop_process() {
    [ -n "${TW_KAFKA_DIR:-}" ] || return 0
    local pid
    pid="$(kafka_pid)"
    if [ -n "$pid" ] && pid_is "$pid" "$TW_KAFKA_DIR/server.properties"; then
        kafka_kill "$pid"
    fi
    rm -f "$TW_KAFKA_DIR/kafka.pid"
}

kafka_start_fresh() {
    local ports ctrl cluster_id sasl
    TW_KAFKA_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tierwatch-kafka.XXXXXX")"
    ports="$(free_ports 3)"
    TW_KAFKA_PORT="$(echo "$ports" | sed -n 1p)"
    TW_KAFKA_CONTROLLER_PORT="$(echo "$ports" | sed -n 2p)"
    TW_KAFKA_SASL_PORT="$(echo "$ports" | sed -n 3p)"
    TW_KAFKA_SASL_USER=tierwatch
    TW_KAFKA_SASL_PASSWORD="$(openssl rand -hex 16)"
    ctrl="$TW_KAFKA_CONTROLLER_PORT"
    sasl="$TW_KAFKA_SASL_PORT"
    mkdir -p "$TW_KAFKA_DIR/data" "$TW_KAFKA_DIR/logs"
    cat >"$TW_KAFKA_DIR/server.properties" <<EOF
# generated by scripts/services.sh
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$ctrl
listeners=PLAINTEXT://127.0.0.1:$TW_KAFKA_PORT,CONTROLLER://127.0.0.1:$ctrl,SASL_SSL://127.0.0.1:$sasl
advertised.listeners=PLAINTEXT://127.0.0.1:$TW_KAFKA_PORT,CONTROLLER://127.0.0.1:$ctrl,SASL_SSL://127.0.0.1:$sasl
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
# The SASL_SSL listener: SCRAM users come from the format step (--add-scram).
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TW_TLS_DIR/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$TW_TLS_DIR/keystore.pass")
listener.name.sasl_ssl.ssl.key.password=$(cat "$TW_TLS_DIR/keystore.pass")
log.dirs=$TW_KAFKA_DIR/data
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
EOF
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)"
    [ -n "$cluster_id" ] || die "StorageTool random-uuid failed"
    if ! kafka_java kafka.tools.StorageTool format --standalone -t "$cluster_id" \
            -c "$TW_KAFKA_DIR/server.properties" \
            --add-scram "SCRAM-SHA-256=[name=$TW_KAFKA_SASL_USER,password=$TW_KAFKA_SASL_PASSWORD]" \
            --add-scram "SCRAM-SHA-512=[name=$TW_KAFKA_SASL_USER,password=$TW_KAFKA_SASL_PASSWORD]" >"$TW_KAFKA_DIR/logs/format.out" 2>&1; then
        cat "$TW_KAFKA_DIR/logs/format.out" >&2
        die "kafka storage format failed"
    fi
    kafka_launch
}

# ---------------------------------------------------------------- postgres

# Run a command as the postgres OS user when we are root (postgres refuses to
# run as root); as ourselves otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@" 9>&-)
    else
        (cd / && "$@" 9>&-)
    fi
}

pg_running() {
    [ -n "${TW_PG_DIR:-}" ] && [ -d "$TW_PG_DIR/data" ] || return 1
    as_pg "$TW_PG_BIN/pg_ctl" -D "$TW_PG_DIR/data" status >/dev/null 2>&1
}

pg_launch() {
    if ! as_pg "$TW_PG_BIN/pg_ctl" -D "$TW_PG_DIR/data" -l "$TW_PG_DIR/postgres.log" -w -t 60 start >/dev/null; then
        tail -n 40 "$TW_PG_DIR/postgres.log" >&2 || true
        die "postgres failed to start (log: $TW_PG_DIR/postgres.log)"
    fi
    log "postgres ready on 127.0.0.1:$TW_PG_PORT"
}

pg_stop_process() {
    [ -n "${TW_PG_DIR:-}" ] && [ -d "$TW_PG_DIR/data" ] || return 0
    pg_running || return 0
    if ! as_pg "$TW_PG_BIN/pg_ctl" -D "$TW_PG_DIR/data" -m fast -w -t 60 stop >/dev/null; then
        local pid
        pid="$(head -n1 "$TW_PG_DIR/data/postmaster.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && pid_alive "$pid"; then
            log "pg_ctl stop failed, sending SIGQUIT to postmaster $pid"
            kill -QUIT "$pid" 2>/dev/null || true
            sleep 2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
}

pg_start_fresh() {
    TW_PG_BIN="$(pg_bindir)" || die "postgres not installed (run: $0 install)"
    # Under /tmp (not $TMPDIR) so that the postgres user can always reach it.
    TW_PG_DIR="$(mktemp -d /tmp/tierwatch-pg.XXXXXX)"
    chmod 700 "$TW_PG_DIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$TW_PG_DIR"; fi
    TW_PG_PORT="$(free_ports 1)"
    if ! as_pg "$TW_PG_BIN/initdb" -D "$TW_PG_DIR/data" -A trust -U tierwatch --no-sync \
            -E UTF8 --no-locale >"$TW_PG_DIR/initdb.log" 2>&1; then
        cat "$TW_PG_DIR/initdb.log" >&2
        die "initdb failed"
    fi
    # Settings go into postgresql.conf so restart-postgres reuses them as is.
    as_pg tee -a "$TW_PG_DIR/data/postgresql.conf" >/dev/null <<EOF

# --- tierwatch throwaway test cluster (scripts/services.sh) ---
listen_addresses = '127.0.0.1'
port = $TW_PG_PORT
unix_socket_directories = '$TW_PG_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
log_min_messages = warning
# TLS with the throwaway CA's server certificate; plain connections still work.
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server.key'
EOF
    as_pg tee "$TW_PG_DIR/data/server.pem" <"$TW_TLS_DIR/server.pem" >/dev/null
    as_pg tee "$TW_PG_DIR/data/server.key" <"$TW_TLS_DIR/server.key" >/dev/null
    as_pg chmod 600 "$TW_PG_DIR/data/server.key"
    pg_launch
}

# ---------------------------------------------------------------- env file

write_env() {
    mkdir -p "$SVC_DIR"
    {
        echo "# generated by scripts/services.sh start; source it"
        printf 'export %s=%q\n' \
            TIERWATCH_TEST_KAFKA_BROKERS "127.0.0.1:$TW_KAFKA_PORT" \
            TIERWATCH_TEST_DATABASE_URL "postgres://tierwatch@127.0.0.1:$TW_PG_PORT/postgres" \
            TIERWATCH_TEST_KAFKA_SASL_BROKERS "127.0.0.1:$TW_KAFKA_SASL_PORT" \
            TIERWATCH_TEST_KAFKA_SASL_USER "$TW_KAFKA_SASL_USER" \
            TIERWATCH_TEST_KAFKA_SASL_PASSWORD "$TW_KAFKA_SASL_PASSWORD" \
            TIERWATCH_TEST_TLS_CA "$TW_TLS_DIR/ca.pem" \
            TIERWATCH_TEST_TLS_UNTRUSTED_CA "$TW_TLS_DIR/untrusted-ca.pem" \
            TIERWATCH_TEST_DATABASE_TLS_URL "postgres://tierwatch@127.0.0.1:$TW_PG_PORT/postgres?sslmode=verify-full&sslrootcert=$TW_TLS_DIR/ca.pem" \
            TIERWATCH_KAFKA_LIBS "$KAFKA_LIBS" \
            TIERWATCH_KAFKA_LOG4J "$KAFKA_LOG4J" \
            TW_KAFKA_DIR "$TW_KAFKA_DIR" \
            TW_KAFKA_PORT "$TW_KAFKA_PORT" \
            TW_KAFKA_CONTROLLER_PORT "$TW_KAFKA_CONTROLLER_PORT" \
            TW_KAFKA_SASL_PORT "$TW_KAFKA_SASL_PORT" \
            TW_TLS_DIR "$TW_TLS_DIR" \
            TW_KAFKA_PID_FILE "$TW_KAFKA_DIR/kafka.pid" \
            TW_KAFKA_LOG "$TW_KAFKA_DIR/logs/kafka.out" \
            TW_PG_BIN "$TW_PG_BIN" \
            TW_PG_DIR "$TW_PG_DIR" \
            TW_PG_PORT "$TW_PG_PORT" \
            TW_PG_LOG "$TW_PG_DIR/postgres.log"
    } >"$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands

# Serialise start/stop/restart. Every server we launch gets fd 9 closed
# (9>&-), otherwise it would inherit the lock and hold it forever.
lock() {
    mkdir -p "$SVC_DIR"
    exec 9>"$SVC_DIR/.lock"
    flock 9
}

cmd_stop() {
    load_env || true
    kafka_stop_process
    pg_stop_process
    case "${TW_KAFKA_DIR:-}" in /*tierwatch-kafka.*) rm -rf "$TW_KAFKA_DIR" ;; esac
    case "${TW_PG_DIR:-}" in /*tierwatch-pg.*) rm -rf "$TW_PG_DIR" ;; esac
    tls_remove
    rm -f "$ENV_FILE"
    unset TW_KAFKA_DIR TW_PG_DIR TW_TLS_DIR
    log "stopped"
}

cmd_start() {
    if load_env; then
        if kafka_running && pg_running; then
            log "already running"
            cat "$ENV_FILE"
            return 0
        fi
        log "stale or half-running services found; cleaning up"
        cmd_stop
    fi
    cmd_install
    # If anything below fails, do not leave half of it running.
    trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed, cleaning up"; kafka_stop_process; pg_stop_process; case "${TW_KAFKA_DIR:-}" in /*tierwatch-kafka.*) rm -rf "$TW_KAFKA_DIR";; esac; case "${TW_PG_DIR:-}" in /*tierwatch-pg.*) rm -rf "$TW_PG_DIR";; esac; tls_remove; fi' EXIT
    tls_make
    # Postgres first (quick), Kafka's JVM startup overlaps nothing but is bounded.
    pg_start_fresh
    kafka_start_fresh
    write_env
    trap - EXIT
    cat "$ENV_FILE"
}

cmd_status() {
    load_env || { echo "not running" >&2; return 1; }
    local k=down p=down
    kafka_running && k=up
    pg_running && p=up
    echo "kafka: $k  postgres: $p" >&2
    [ "$k" = up ] && [ "$p" = up ] && cat "$ENV_FILE"
}

cmd_env() {
    [ -f "$ENV_FILE" ] || die "no env file ($ENV_FILE); run: $0 start"
    cat "$ENV_FILE"
}

cmd_restart_kafka() {
    load_env || die "not started (no $ENV_FILE)"
    [ -f "$TW_KAFKA_DIR/server.properties" ] || die "kafka dir $TW_KAFKA_DIR is gone"
    kafka_stop_process
    kafka_launch
}

cmd_restart_postgres() {
    load_env || die "not started (no $ENV_FILE)"
    [ -d "$TW_PG_DIR/data" ] || die "postgres dir $TW_PG_DIR is gone"
    pg_stop_process
    pg_launch
}

cmd_postgres_down() { load_env || die "not started (no $ENV_FILE)"; pg_stop_process; }
cmd_postgres_up() { load_env || die "not started (no $ENV_FILE)"; pg_running || pg_launch; }
cmd_kafka_down() { load_env || die "not started (no $ENV_FILE)"; kafka_stop_process; }
cmd_kafka_up() { load_env || die "not started (no $ENV_FILE)"; kafka_running || kafka_launch; }

main() {
    local cmd="${1:-}"
    case "$cmd" in
        install) cmd_install ;;
        start) lock; cmd_start ;;
        stop) lock; cmd_stop ;;
        status) cmd_status ;;
        env) cmd_env ;;
        restart-kafka) lock; cmd_restart_kafka ;;
        restart-postgres) lock; cmd_restart_postgres ;;
        postgres-down) lock; cmd_postgres_down ;;
        postgres-up) lock; cmd_postgres_up ;;
        kafka-down) lock; cmd_kafka_down ;;
        kafka-up) lock; cmd_kafka_up ;;
        *)
            sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
            exit 2
            ;;
    esac
}

main "$@"
