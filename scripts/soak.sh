#!/usr/bin/env bash
# Soak test of the release server: load while versions and models come and go.
#
#   bash scripts/soak.sh DURATION_SECONDS
#
# Serves a copy of examples/models/mnist from a temporary directory through a
# model config file, and runs the bundled client's load mode against it
# (64 concurrent callers for DURATION seconds). Meanwhile, every 3 seconds,
# it alternately drops in a new version of `mnist` (a copy of the newest one,
# renamed into place from a hidden name, keeping the last 3 on disk) and
# rewrites the config file (renamed into place) to list `mnist` alone or
# `mnist` and `mnist_b`, so the server polls, loads, unloads and reloads all
# along. It reads the server's resident memory after a warm-up (20% of
# DURATION, at least 5 s; 2 s for runs under 10 s) and at the end of the load.
#
# Fails when a request failed, the server died or did not exit cleanly, the
# resident memory grew by 10% or more, or the server log does not show every
# new version loaded and every config change reloaded. Prints `soak_*=value`
# lines. Needs the release build (`cargo build --release --bins --examples`)
# and Python 3 (PYTHON, default python3; for free ports and the REST calls).
# The server and client output stays in target/soak/server.log and
# target/soak/client.log.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() {
    echo "usage: bash scripts/soak.sh DURATION_SECONDS" >&2
    exit 64
}
[[ $# -eq 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
DURATION=$1

PYTHON=${PYTHON:-python3}
SERVER_BIN=target/release/ferroserve
CLIENT_BIN=target/release/examples/predict_client
IMAGE=examples/digits/3.png
MODEL_SRC=examples/models/mnist/1
OUT_DIR=target/soak
SERVER_LOG=$OUT_DIR/server.log
CLIENT_LOG=$OUT_DIR/client.log
CONCURRENCY=64
READY_TIMEOUT_S=60
CHANGE_INTERVAL_S=3
KEEP_VERSIONS=3
MAX_RSS_GROWTH_PCT=10
# How long the server gets, after the load, to pick up the last change.
SETTLE_TIMEOUT_S=10
STOP_TIMEOUT_S=30
LOG_TAIL_LINES=40

STARTED=$SECONDS
TMP=""
SERVER_PID=""
CLIENT_PID=""

# Stops what this script started (only those processes, by PID) and removes
# the temporary directory.
cleanup() {
    local pid
    for pid in "$CLIENT_PID" "$SERVER_PID"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" "$STOP_TIMEOUT_S" || kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n $TMP ]]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_gone PID SECONDS: true once PID has exited, false after SECONDS.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.2
    done
}

tails() {
    local file
    for file in "$SERVER_LOG" "$CLIENT_LOG"; do
        if [[ -f $file ]]; then
            printf -- '--- last %s lines of %s ---\n' "$LOG_TAIL_LINES" "$file"
            tail -n "$LOG_TAIL_LINES" "$file"
        fi
    done
    printf -- '--- end of logs ---\n'
}

# die MESSAGE: prints the message and the log tails, then fails.
die() {
    printf 'soak: FAILED: %s\n' "$1" >&2
    tails >&2
    printf 'soak: took %ss\n' "$((SECONDS - STARTED))"
    exit 1
}

server_alive() {
    kill -0 "$SERVER_PID" 2>/dev/null
}

# server_died WHEN: fails, saying how the server ended.
server_died() {
    local status=0
    wait "$SERVER_PID" || status=$?
    SERVER_PID=""
    if ((status > 128)); then
        die "the server died $1 (killed by signal $((status - 128)))"
    fi
    die "the server died $1 (exit status $status)"
}

# median N...: the middle value of integers.
median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# rss_kib PID: the process's resident set size in KiB.
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# write_config WITH_B: writes the model config file atomically (temp + mv),
# listing mnist, and mnist_b too when WITH_B is true.
write_config() {
    local with_b=$1
    {
        echo "model_config_list {"
        printf '  config { name: "mnist" base_path: "%s" model_platform: "onnx" }\n' "$TMP/models/mnist"
        if $with_b; then
            printf '  config { name: "mnist_b" base_path: "%s" model_platform: "onnx" }\n' "$TMP/models/mnist_b"
        fi
        echo "}"
    } >"$CFG.tmp"
    mv "$CFG.tmp" "$CFG"
}

# drop_version: copies the newest version of mnist to version N+1 (under a
# hidden name, then one rename), and deletes all but the newest
# KEEP_VERSIONS. Sets LATEST_VERSION.
drop_version() {
    local base=$TMP/models/mnist
    local next=$((LATEST_VERSION + 1))
    cp -r "$base/$LATEST_VERSION" "$base/.incoming-$next"
    mv "$base/.incoming-$next" "$base/$next"
    LATEST_VERSION=$next
    local version
    for version in $(find "$base" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' -printf '%f\n' \
        | sort -n | head -n "-$KEEP_VERSIONS"); do
        rm -rf "${base:?}/$version"
    done
}

# http_get URL: prints the body of a successful GET (fails otherwise).
http_get() {
    "$PYTHON" - "$1" 2>/dev/null <<'EOF'
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
    sys.stdout.write(answer.read().decode())
EOF
}

# Numbers the server log shows.
versions_loaded() {
    { grep -oE 'version available model=mnist version=[0-9]+' "$SERVER_LOG" || true; } \
        | sort -u | awk -F= '$NF > 1' | wc -l
}
config_reloads() {
    grep -c 'model config file reloaded' "$SERVER_LOG" || true
}

for file in "$SERVER_BIN" "$CLIENT_BIN"; do
    [[ -x $file ]] || die "$file is missing: build it with cargo build --release --bins --examples"
done

mkdir -p "$OUT_DIR"
: >"$CLIENT_LOG"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ferroserve-soak.XXXXXX")
mkdir -p "$TMP/models/mnist" "$TMP/models/mnist_b"
cp -r "$MODEL_SRC" "$TMP/models/mnist/1"
cp -r "$MODEL_SRC" "$TMP/models/mnist_b/1"
LATEST_VERSION=1
CFG=$TMP/models.config
write_config false

# pick_ports: sets GRPC_PORT and REST_PORT to two distinct TCP ports that were
# free a moment ago (held open together while chosen).
pick_ports() {
    read -r GRPC_PORT REST_PORT < <("$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
    [[ -n ${REST_PORT:-} ]] || die "could not pick free ports"
}

# start_server: starts the server on fresh ports and waits until mnist is
# AVAILABLE over REST. A port taken by another process between the choice
# and the bind means another try on other ports.
start_server() {
    local attempt deadline
    for attempt in 1 2 3; do
        pick_ports
        server_args=(
            "--port=$GRPC_PORT"
            "--rest_api_port=$REST_PORT"
            "--model_config_file=$CFG"
            --model_config_file_poll_wait_seconds=1
            --file_system_poll_wait_seconds=1
            --shutdown_delay_seconds=0
        )
        echo "soak: $SERVER_BIN ${server_args[*]}"
        echo "$ $SERVER_BIN ${server_args[*]}" >"$SERVER_LOG"
        "$SERVER_BIN" "${server_args[@]}" </dev/null >>"$SERVER_LOG" 2>&1 &
        SERVER_PID=$!
        STATUS_URL=http://127.0.0.1:$REST_PORT/v1/models/mnist
        deadline=$((SECONDS + READY_TIMEOUT_S))
        until http_get "$STATUS_URL" | grep -q '"state":"AVAILABLE"'; do
            if ! server_alive; then
                wait "$SERVER_PID" || true
                if grep -q 'Address already in use' "$SERVER_LOG" && ((attempt < 3)); then
                    echo "soak: a port was taken meanwhile; trying other ports"
                    continue 2
                fi
                die "the server exited during start-up"
            fi
            ((SECONDS < deadline)) || die "mnist not AVAILABLE at $STATUS_URL after ${READY_TIMEOUT_S}s"
            sleep 0.2
        done
        return 0
    done
}

start_server
echo "soak: server pid $SERVER_PID ready (gRPC 127.0.0.1:$GRPC_PORT, REST 127.0.0.1:$REST_PORT)"

# Memory climbs for the first half minute of load (buffers, allocator
# arenas), then stays flat: the baseline is taken after a fifth of the run,
# but not before 30 s or half the run, whichever is sooner.
if ((DURATION < 10)); then
    WARMUP_S=2
else
    half=$((DURATION / 2 < 30 ? DURATION / 2 : 30))
    WARMUP_S=$((DURATION / 5 > half ? DURATION / 5 : half))
fi
# Each figure is the median of this many readings, one a second: single
# readings swing by about a megabyte.
RSS_SAMPLES=$((DURATION < 20 ? 1 : 5))

echo "soak: load for ${DURATION}s, concurrency $CONCURRENCY; a change every ${CHANGE_INTERVAL_S}s; RSS baseline at ${WARMUP_S}s"
"$CLIENT_BIN" --server "127.0.0.1:$GRPC_PORT" --model mnist --concurrency "$CONCURRENCY" \
    --duration "$DURATION" "$IMAGE" </dev/null >"$CLIENT_LOG" 2>&1 &
CLIENT_PID=$!

load_start=$SECONDS
next_change=$CHANGE_INTERVAL_S
change=0
versions_dropped=0
config_rewrites=0
with_b=false
rss_start=""
rss_end=""
rss_peak=0
rss_readings=()
while kill -0 "$CLIENT_PID" 2>/dev/null; do
    sleep 1
    server_alive || server_died "during the load"
    elapsed=$((SECONDS - load_start))
    # Memory is read only while the load runs: the last reading before the
    # client's end is the end figure.
    if ((elapsed < DURATION)) && kill -0 "$CLIENT_PID" 2>/dev/null; then
        rss=$(rss_kib "$SERVER_PID" 2>/dev/null || true)
        [[ -n $rss ]] || die "cannot read the server's RSS"
        if ((rss > rss_peak)); then
            rss_peak=$rss
        fi
        if ((elapsed >= WARMUP_S)); then
            rss_readings+=("$rss")
            if ((${#rss_readings[@]} == RSS_SAMPLES)); then
                rss_start=$(median "${rss_readings[@]}")
                echo "soak: ${elapsed}s: RSS baseline ${rss_start} KiB (median of $RSS_SAMPLES readings)"
            fi
        fi
    fi
    # No change in the last interval: the server gets to pick up the last
    # one while the load still runs.
    if ((elapsed >= next_change && elapsed + CHANGE_INTERVAL_S <= DURATION)); then
        next_change=$((elapsed + CHANGE_INTERVAL_S))
        if ((change % 2 == 0)); then
            drop_version
            versions_dropped=$((versions_dropped + 1))
        else
            if $with_b; then with_b=false; else with_b=true; fi
            write_config "$with_b"
            config_rewrites=$((config_rewrites + 1))
        fi
        change=$((change + 1))
    fi
done
client_status=0
wait "$CLIENT_PID" || client_status=$?
if ((${#rss_readings[@]} >= RSS_SAMPLES)); then
    rss_end=$(median "${rss_readings[@]: -RSS_SAMPLES}")
fi
CLIENT_PID=""
server_alive || server_died "during the load"

# The server has SETTLE_TIMEOUT_S to show the last change in its log.
deadline=$((SECONDS + SETTLE_TIMEOUT_S))
while (($(versions_loaded) < versions_dropped || $(config_reloads) < config_rewrites)) \
    && ((SECONDS < deadline)); do
    sleep 0.5
done
versions_seen=$(versions_loaded)
reloads_seen=$(config_reloads)
latest_status=$(http_get "$STATUS_URL" || true)

kill -TERM "$SERVER_PID"
server_status=0
if wait_gone "$SERVER_PID" "$STOP_TIMEOUT_S"; then
    wait "$SERVER_PID" || server_status=$?
else
    server_status="none (still running ${STOP_TIMEOUT_S}s after SIGTERM)"
fi
SERVER_PID_STOPPED=$SERVER_PID
if ! server_alive; then
    SERVER_PID=""
fi

summary=$(grep -E '^requests=[0-9]+ ' "$CLIENT_LOG" | tail -n 1 || true)
field() {
    sed -nE "s/.*(^| )$1=([^ ]+).*/\2/p" <<<"$summary"
}
requests=$(field requests)
failed=$(field failed)
rate=$(field requests_per_sec)
[[ -z $rss_start ]] && rss_start=0
[[ -z $rss_end ]] && rss_end=0
growth=$(awk -v a="$rss_start" -v b="$rss_end" 'BEGIN { if (a > 0) printf "%.1f", (b - a) * 100 / a; else print "nan" }')
log_errors=$(grep -cE '^[^ ]+ +(ERROR|WARN) ' "$SERVER_LOG" || true)

echo
echo "soak_duration_s=$DURATION"
echo "soak_failed_requests=${failed:-unknown}"
echo "soak_requests=${requests:-unknown}"
echo "soak_requests_per_sec=${rate:-unknown}"
echo "soak_latency_ms=$(sed -nE 's/.*(p50_ms=[^ ]+ p90_ms=[^ ]+ p99_ms=[^ ]+ max_ms=[^ ]+).*/\1/p' <<<"$summary")"
echo "soak_versions_dropped=$versions_dropped"
echo "soak_versions_loaded=$versions_seen"
echo "soak_config_rewrites=$config_rewrites"
echo "soak_config_reloads=$reloads_seen"
echo "soak_rss_start_kib=$rss_start"
echo "soak_rss_end_kib=$rss_end"
echo "soak_rss_peak_kib=$rss_peak"
echo "soak_rss_growth_pct=$growth"
echo "soak_server_log_warnings_and_errors=$log_errors"
echo "soak_server_exit_status=$server_status (pid $SERVER_PID_STOPPED)"
grep '^error code=' "$CLIENT_LOG" || true

problems=()
if [[ -z $summary ]]; then
    problems+=("the client printed no summary (exit status $client_status)")
elif [[ $failed != 0 ]]; then
    problems+=("$failed of $requests requests failed (client exit status $client_status)")
elif [[ $client_status -ne 0 ]]; then
    problems+=("the client exited with status $client_status")
fi
if [[ $rss_start -eq 0 || $rss_end -eq 0 ]]; then
    problems+=("the server's RSS was not read")
elif awk -v g="$growth" -v max="$MAX_RSS_GROWTH_PCT" 'BEGIN { exit !(g >= max) }'; then
    problems+=("the server's RSS grew by ${growth}% (>= ${MAX_RSS_GROWTH_PCT}%): $rss_start -> $rss_end KiB")
fi
if [[ $server_status != 0 ]]; then
    problems+=("the server's exit status after SIGTERM was $server_status, not 0")
fi
if ((versions_dropped == 0 || config_rewrites == 0)); then
    problems+=("no change was made: the run is too short (${DURATION}s)")
fi
if ((versions_seen < versions_dropped)); then
    problems+=("the server log shows $versions_seen new mnist versions available, $versions_dropped were dropped in")
fi
if ((reloads_seen < config_rewrites)); then
    problems+=("the server log shows $reloads_seen config reloads, the config file was rewritten $config_rewrites times")
fi
if ! grep -q "\"version\":\"$LATEST_VERSION\",\"state\":\"AVAILABLE\"" <<<"$latest_status"; then
    problems+=("the newest version $LATEST_VERSION is not AVAILABLE at the end: ${latest_status:-no answer}")
fi

if [[ ${#problems[@]} -ne 0 ]]; then
    printf 'soak: problem: %s\n' "${problems[@]}" >&2
    die "${#problems[@]} problem(s); logs: $SERVER_LOG, $CLIENT_LOG"
fi
printf 'soak: passed; took %ss\n' "$((SECONDS - STARTED))"
