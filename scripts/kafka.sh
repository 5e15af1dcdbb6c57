#!/usr/bin/env bash
# Apache Kafka for the test suite and the load tools: one KRaft node (broker and controller in one
# JVM) on 127.0.0.1, its data and logs on disk. Needs Java 17+; Maven for `fetch` only.
#
#   scripts/kafka.sh fetch                                  # the broker's jars, once (later runs are offline)
#   scripts/kafka.sh start --port PORT --data DIR [--advertised HOST:PORT] [--timeout SECONDS] [--watch PID]
#   scripts/kafka.sh stop --data DIR [--timeout SECONDS]
#   scripts/kafka.sh version | libs                         # the pinned version, the jar folder
#
# `start` formats the storage when DIR is new (a restart on the same DIR keeps the data and the
# controller port), starts the broker in the background, waits until it reports itself started,
# then prints `bootstrap=127.0.0.1:PORT` and `pid=PID`. DIR holds server.properties, data/,
# broker.log and kafka.pid. With --watch PID the broker is stopped (SIGKILL) once process PID is
# gone, so a test run killed midway leaves no broker behind. The version is pinned in scripts/kafka-pom/pom.xml (kafka.version).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
POM="$ROOT/scripts/kafka-pom/pom.xml"
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
LIBS="${STREAMSCORE_KAFKA_LIBS:-$ROOT/.cache/kafka/$VERSION/libs}"

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
    [ -f "$LIBS/.complete" ] && return 0
    command -v mvn >/dev/null || die "mvn not found (needed once, to fetch Kafka $VERSION's jars)"
    local tmp="$LIBS.partial"
    rm -rf "$tmp"
    mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        || die "mvn could not resolve Kafka $VERSION (see above)"
    touch "$tmp/.complete"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    echo "kafka.sh: Kafka $VERSION jars in $LIBS" >&2
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# broker.session.timeout.ms (Kafka's default 9 s): on one combined node, a pause longer than it (GC,
# SIGSTOP) makes the controller fence its own broker on resume; metadata then lists no broker at all,
# and librdkafka 2.16 was seen to lose the cluster for minutes (docs/reliability.md, "b. Broker
# frozen"). With no other broker to fail over to, fencing buys nothing here.
write_properties() {  # DIR PORT CONTROLLER_PORT ADVERTISED
    cat > "$1/server.properties" <<EOF
# written by scripts/kafka.sh: one KRaft node, broker and controller, for tests
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$3
listeners=PLAINTEXT://127.0.0.1:$2,CONTROLLER://127.0.0.1:$3
advertised.listeners=PLAINTEXT://$4
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$1/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=30000
log.cleaner.dedupe.buffer.size=4194304
num.network.threads=2
num.io.threads=4
EOF
}

write_log4j() {  # DIR: everything INFO and up to stdout, which start sends to DIR/broker.log
    cat > "$1/log4j2.properties" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

alive() {  # PID: runs and is no zombie (an exited broker may wait unreaped)
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" && [ -n "$state" ] && [ "$state" != Z ]
}

running() {  # DIR: the broker's PID when it runs
    local pid
    [ -f "$1/kafka.pid" ] || return 1
    pid="$(cat "$1/kafka.pid")"
    alive "$pid" && grep -q kafka.Kafka "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

start() {
    local port="" dir="" advertised="" timeout=90 watch=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) port="$2"; shift 2 ;;
            --data) dir="$2"; shift 2 ;;
            --advertised) advertised="$2"; shift 2 ;;
            --timeout) timeout="$2"; shift 2 ;;
            --watch) watch="$2"; shift 2 ;;
            *) die "start: unknown argument $1" ;;
        esac
    done
    [ -n "$port" ] && [ -n "$dir" ] || die "start needs --port PORT --data DIR"
    [ -f "$LIBS/.complete" ] || die "no jars for Kafka $VERSION in $LIBS: run scripts/kafka.sh fetch"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if pid="$(running "$dir")"; then die "a broker already runs on $dir (pid $pid)"; fi
    [ -f "$dir/controller.port" ] || free_port > "$dir/controller.port"
    write_properties "$dir" "$port" "$(cat "$dir/controller.port")" "${advertised:-127.0.0.1:$port}"
    write_log4j "$dir"
    if [ ! -f "$dir/data/meta.properties" ]; then
        local id
        id="$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid)"
        java -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$LIBS/*" kafka.tools.StorageTool \
            format -t "$id" -c "$dir/server.properties" >> "$dir/broker.log" 2>&1 \
            || die "formatting $dir failed:$(printf '\n'; tail -20 "$dir/broker.log")"
    fi
    local offset
    offset=$(( $(stat -c %s "$dir/broker.log" 2>/dev/null || echo 0) + 1 ))
    KAFKA_HEAP_OPTS="" setsid java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
        >> "$dir/broker.log" 2>&1 < /dev/null &
    local pid=$!
    echo "$pid" > "$dir/kafka.pid"
    if [ -n "$watch" ]; then
        setsid bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done; kill -9 "$2" 2>/dev/null' \
            watch "$watch" "$pid" > /dev/null 2>&1 < /dev/null &
    fi
    local deadline=$(( SECONDS + timeout ))
    until tail -c +"$offset" "$dir/broker.log" | grep -q "Kafka Server started"; do
        alive "$pid" || die "the broker exited at start:$(printf '\n'; tail -c +"$offset" "$dir/broker.log" | tail -30)"
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -9 "$pid" 2>/dev/null || true
            die "the broker did not start within ${timeout}s:$(printf '\n'; tail -c +"$offset" "$dir/broker.log" | tail -30)"
        fi
        sleep 0.2
    done
    echo "bootstrap=127.0.0.1:$port"
    echo "pid=$pid"
}

stop() {
    local dir="" timeout=30 pid
    while [ $# -gt 0 ]; do
        case "$1" in
            --data) dir="$2"; shift 2 ;;
            --timeout) timeout="$2"; shift 2 ;;
            *) die "stop: unknown argument $1" ;;
        esac
    done
    [ -n "$dir" ] || die "stop needs --data DIR"
    pid="$(running "$dir")" || return 0
    kill "$pid"
    local deadline=$(( SECONDS + timeout ))
    while alive "$pid"; do
        if [ "$SECONDS" -ge "$deadline" ]; then kill -9 "$pid" 2>/dev/null || true; fi
        sleep 0.2
    done
}

case "${1:-}" in
    fetch) fetch ;;
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    version) echo "$VERSION" ;;
    libs) echo "$LIBS" ;;
    *) die "usage: scripts/kafka.sh fetch | start --port PORT --data DIR [--advertised HOST:PORT] | stop --data DIR | version | libs" ;;
esac
