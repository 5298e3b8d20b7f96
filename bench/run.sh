#!/usr/bin/env bash
# The modelgate benchmark: modelgate against nginx and HAProxy doing the same job (route by Host
# to two upstreams split 80/20, pooled upstream connections), plus the upstream alone (the
# floor), interleaved over several rounds. Method and results: BENCHMARKS.md.
#
# Run from anywhere (installs nginx, haproxy, wrk with apt and oha with cargo when missing):
#   bench/run.sh
# Knobs (environment): ROUNDS=3 DURATION=10 (s per wrk run) RATE=2000 (req/s for the latency
#   runs) RATE_DURATION=10 CONNECTIONS=64 LARGE=1 (the 1 MiB POST scenario; 0 skips it)
#   LARGE_BYTES=1048576 LARGE_RATE=100 (req/s for its latency runs)
#   TARGETS="direct nginx haproxy pingora floor modelgate modelgate-auth" (pingora:
#   bench/pingora-floor, pingora-proxy with no hooks: the old engine's floor; floor:
#   gateway/examples/loop_floor.rs, modelgate's own loop with no routing: the new engine's floor)
#   SCALE=1 (the 10,000-InferenceService parts, from files and from the fake Kubernetes API;
#   0 skips them) SCALE_ISVCS=10000 MICRO=1 (criterion
#   benches; 0 skips) CALLGRIND=1 (instructions per request under callgrind; 0 skips)
#   CG_REQUESTS=5000 TARGET_DIR (cargo target dir, default <repo>/target) RESULTS (output dir,
#   default bench/results/<UTC time>) PROXY_CPU=1 LOAD_CPU=0 NO_INSTALL=1 (fail instead).
# Everything listens on 127.0.0.1 on ports picked free at start; every process started here is
# stopped on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
RATE_DURATION=${RATE_DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
LARGE=${LARGE:-1}
LARGE_BYTES=${LARGE_BYTES:-1048576}
LARGE_RATE=${LARGE_RATE:-100}
TARGETS=${TARGETS:-"direct nginx haproxy pingora floor modelgate modelgate-auth"}
SCALE=${SCALE:-1}
SCALE_ISVCS=${SCALE_ISVCS:-10000}
MICRO=${MICRO:-1}
CALLGRIND=${CALLGRIND:-1}
CG_REQUESTS=${CG_REQUESTS:-5000}
# A command the proxies are started under (valgrind, for the callgrind part); empty otherwise.
WRAP=()
TARGET_DIR=${TARGET_DIR:-$REPO/target}
RESULTS=${RESULTS:-$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)}
PROXY_CPU=${PROXY_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
HOST=bench-model.bench.example.com
PREDICT_PATH=/v1/models/bench-model:predict
# The large-payload scenario's path (KServe's v2 protocol, where tensors go): nginx streams it
# (no request or response buffering), as modelgate and HAProxy do.
INFER_PATH=/v2/models/bench-model/infer
CLK_TCK=$(getconf CLK_TCK)

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
RUN=""
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Bounded: 50 x 0.1 s, then SIGKILL.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    # Keep the processes' own logs with the results; drop the scratch directory.
    if [[ -n $RUN && -d $RUN ]]; then
        if [[ -n ${RESULTS:-} && -d $RESULTS ]]; then
            mkdir -p "$RESULTS/logs"
            cp "$RUN"/*.out "$RUN"/*.err "$RUN"/*.log "$RUN"/*.yaml "$RUN"/*.conf "$RUN"/*.cfg \
                "$RESULTS/logs/" 2>/dev/null || true
        fi
        rm -rf "$RUN"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process started here and forgets it.
stop() {
    local pid=$1 keep=() p
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# wait_for DESCRIPTION COMMAND...: retries every 0.1 s, TRIES times (default 200: 20 s).
wait_for() {
    local what=$1; shift
    for _ in $(seq "${TRIES:-200}"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "timed out waiting for $what"
}

# ---------------------------------------------------------------- install and build
install_tools() {
    local missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v node >/dev/null || missing+=(nodejs npm)
    [[ $CALLGRIND == 0 ]] || command -v callgrind_control >/dev/null || missing+=(valgrind)
    if ((${#missing[@]})); then
        [[ ${NO_INSTALL:-0} == 1 ]] && die "missing: ${missing[*]}"
        log "installing ${missing[*]} (apt)"
        local sudo=""
        [[ $(id -u) == 0 ]] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! command -v oha >/dev/null; then
        [[ ${NO_INSTALL:-0} == 1 ]] && die "missing: oha (cargo install oha --locked)"
        log "installing oha (cargo install oha --locked)"
        cargo install oha --locked
    fi
    if [[ ! -d $REPO/tests/oidc/node_modules/oidc-provider ]]; then
        log "installing the OIDC test provider (npm ci --prefix tests/oidc)"
        npm ci --prefix "$REPO/tests/oidc" --no-audit --no-fund >/dev/null
    fi
    export PATH=$PATH:/usr/sbin
}

build() {
    log "building modelgate, bench_upstream and the floors (release, CARGO_TARGET_DIR=$TARGET_DIR)"
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q -p gateway \
        --bin modelgate --example bench_upstream --example loop_floor)
    # The old engine's floor is a crate of its own, so pingora-proxy is not in the workspace.
    (cd "$BENCH_DIR/pingora-floor" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q)
    (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q -p fake-apiserver)
    FAKE_API=$TARGET_DIR/release/fake-apiserver
    MODELGATE=$TARGET_DIR/release/modelgate
    UPSTREAM=$TARGET_DIR/release/examples/bench_upstream
    FLOOR=$TARGET_DIR/release/pingora-floor
    LOOP_FLOOR=$TARGET_DIR/release/examples/loop_floor
}

# ---------------------------------------------------------------- measurements
# Pids of a process and its children (nginx: master + worker).
family() {
    local pid=$1
    echo "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null || true)
}

# utime+stime in ticks, summed over the given pids (all threads of each).
cpu_ticks() {
    local total=0 p t
    for p in "$@"; do
        t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

# The largest VmHWM (KiB) among the pids: the process that serves (nginx's worker).
peak_rss_kib() {
    local max=0 p v
    for p in "$@"; do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        ((v > max)) && max=$v
    done
    echo "$max"
}

# Requests served per upstream port so far: "A B".
counts() {
    curl -sf "http://127.0.0.1:$PORT_A/__counts" | python3 -c \
        'import json,sys; c=json.load(sys.stdin); print(c["a"], c["b"])'
}

# What else is running: load average and the top CPU consumers.
machine_state() {
    echo "loadavg: $(cat /proc/loadavg)"
    ps -eo pid,pcpu,rss,comm --sort=-pcpu | head -8
}

# measure TARGET SCENARIO PORT METHOD [HEADER...]: one wrk run (max throughput) then one oha
# run (latency at a fixed rate), appending one JSON line to runs.jsonl.
measure() {
    local target=$1 scenario=$2 port=$3 method=$4; shift 4
    local headers=("$@") wrk_h=() oha_h=() h
    for h in "${headers[@]}"; do wrk_h+=(-H "$h"); oha_h+=(-H "$h"); done
    # The large scenario: a LARGE_BYTES body on the v2 path, at LARGE_RATE for the latency run.
    local body=$BODY_FILE path=$PREDICT_PATH rate=$RATE
    if [[ $scenario == large ]]; then body=$LARGE_BODY_FILE path=$INFER_PATH rate=$LARGE_RATE; fi
    local body_args=()
    [[ $method == POST ]] && body_args=(-m POST -D "$body" -T application/json)
    local url="http://127.0.0.1:$port$path"
    local tag="r${ROUND}-${target}-${scenario}"
    local -a pids
    read -r -a pids <<<"$TARGET_PIDS"

    # Max throughput: wrk, CONNECTIONS keep-alive connections, one thread on the load core.
    local c0a c0b c1a c1b u0 t0 u1 t1
    read -r c0a c0b <<<"$(counts)"
    t0=$(cpu_ticks "${pids[@]}"); u0=$(cpu_ticks "$UPSTREAM_PID")
    METHOD=$method BODY_FILE=$body taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" \
        -d"${DURATION}s" --timeout 5s -s "$BENCH_DIR/wrk.lua" "${wrk_h[@]}" "$url" \
        >"$RAW/$tag.wrk.txt" 2>&1 || log "wrk exited non-zero ($tag)"
    t1=$(cpu_ticks "${pids[@]}"); u1=$(cpu_ticks "$UPSTREAM_PID")
    read -r c1a c1b <<<"$(counts)"

    # Latency at a fixed rate: oha with latency correction (no coordinated omission).
    local r0 r1 ra rb rc rd
    read -r ra rb <<<"$(counts)"
    r0=$(cpu_ticks "${pids[@]}")
    taskset -c "$LOAD_CPU" oha -z "${RATE_DURATION}s" -q "$rate" -c "$CONNECTIONS" \
        --latency-correction --no-tui --output-format json "${body_args[@]}" "${oha_h[@]}" \
        "$url" >"$RAW/$tag.oha.json" 2>"$RAW/$tag.oha.err" || log "oha exited non-zero ($tag)"
    r1=$(cpu_ticks "${pids[@]}")
    read -r rc rd <<<"$(counts)"

    local rss
    rss=$(peak_rss_kib "${pids[@]}")
    python3 "$BENCH_DIR/report.py" record \
        --round "$ROUND" --target "$target" --scenario "$scenario" \
        --wrk "$RAW/$tag.wrk.txt" --oha "$RAW/$tag.oha.json" \
        --proxy-ticks "$((t1 - t0))" --upstream-ticks "$((u1 - u0))" \
        --rate-proxy-ticks "$((r1 - r0))" --clk-tck "$CLK_TCK" \
        --split-wrk "$((c1a - c0a))" "$((c1b - c0b))" \
        --split-oha "$((rc - ra))" "$((rd - rb))" \
        --peak-rss-kib "$rss" --body-bytes "$(stat -c %s "$body")" --has-proxy "$([[ $target == direct ]] && echo 0 || echo 1)" \
        >>"$RESULTS/runs.jsonl"
    log "  $(tail -1 "$RESULTS/runs.jsonl" | python3 "$BENCH_DIR/report.py" brief)"
}

# A short unmeasured run so every target starts warm (connections pooled, caches filled).
warm() {
    local port=$1; shift
    local h wrk_h=()
    for h in "$@"; do wrk_h+=(-H "$h"); done
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "${wrk_h[@]}" \
        "http://127.0.0.1:$port$PREDICT_PATH" >/dev/null 2>&1 || true
}

fill() {
    # fill TEMPLATE OUT: replaces @RUN@ @PORT_A@ @PORT_B@ @PROXY_PORT@ @ADMIN_PORT@ @HOST@.
    sed -e "s#@RUN@#$RUN#g" -e "s#@PORT_A@#$PORT_A#g" -e "s#@PORT_B@#$PORT_B#g" \
        -e "s#@PROXY_PORT@#$PROXY_PORT#g" -e "s#@ADMIN_PORT@#$ADMIN_PORT#g" \
        -e "s#@HOST@#$HOST#g" "$1" >"$2"
}

# ---------------------------------------------------------------- the targets
start_nginx() {
    mkdir -p "$RUN/nginx-tmp"
    fill "$BENCH_DIR/nginx.conf" "$RUN/nginx.conf"
    # Under valgrind, one process: callgrind then measures the process that serves.
    ((${#WRAP[@]} == 0)) || sed -i 's/^master_process on;/master_process off;/' "$RUN/nginx.conf"
    taskset -c "$PROXY_CPU" "${WRAP[@]}" nginx -e "$RUN/nginx-error.log" -p "$RUN" -c "$RUN/nginx.conf" \
        >>"$RUN/nginx.out" 2>&1 &
    TARGET_PID=$!; PIDS+=("$TARGET_PID")
    wait_for nginx curl -sf -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$PROXY_PORT$PREDICT_PATH"
    TARGET_PIDS=$(family "$TARGET_PID")
}

# pingora alone (no routing: every request to the first upstream), the floor under modelgate.
start_pingora() {
    taskset -c "$PROXY_CPU" "${WRAP[@]}" "$FLOOR" "$PROXY_PORT" "127.0.0.1:$PORT_A" >>"$RUN/pingora.out" 2>&1 &
    TARGET_PID=$!; PIDS+=("$TARGET_PID")
    wait_for pingora_floor curl -sf -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$PROXY_PORT$PREDICT_PATH"
    TARGET_PIDS=$TARGET_PID
}

# modelgate's own loop and pool with no routing (every request to the first upstream).
start_floor() {
    taskset -c "$PROXY_CPU" "${WRAP[@]}" "$LOOP_FLOOR" "$PROXY_PORT" "127.0.0.1:$PORT_A" >>"$RUN/floor.out" 2>&1 &
    TARGET_PID=$!; PIDS+=("$TARGET_PID")
    wait_for loop_floor curl -sf -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$PROXY_PORT$PREDICT_PATH"
    TARGET_PIDS=$TARGET_PID
}

start_haproxy() {
    fill "$BENCH_DIR/haproxy.cfg" "$RUN/haproxy.cfg"
    taskset -c "$PROXY_CPU" "${WRAP[@]}" haproxy -db -f "$RUN/haproxy.cfg" >>"$RUN/haproxy.out" 2>&1 &
    TARGET_PID=$!; PIDS+=("$TARGET_PID")
    wait_for haproxy curl -sf -o /dev/null -H "Host: $HOST" "http://127.0.0.1:$PROXY_PORT$PREDICT_PATH"
    TARGET_PIDS=$(family "$TARGET_PID")
}

# start_modelgate AUTH(0|1) ISVC_DIR
start_modelgate() {
    local with_auth=$1 isvc_dir=$2 auth=""
    if [[ $with_auth == 1 ]]; then
        auth="auth:\n  issuer: $ISSUER\n  client_id: modelgate\n  client_secret: {file: $RUN/client-secret}\n  cookie_secrets: [{file: $RUN/cookie-secret}]"
    fi
    fill "$BENCH_DIR/modelgate.yaml" "$RUN/modelgate.yaml.tmp"
    sed -e "s#@AUTH@#$auth#" -e "s#directory: isvc#directory: $isvc_dir#" \
        "$RUN/modelgate.yaml.tmp" >"$RUN/modelgate.yaml"
    if [[ -n ${EXTRA_ENDPOINTS:-} ]]; then
        sed -i "/bench-model-predictor-00002:/r $EXTRA_ENDPOINTS" "$RUN/modelgate.yaml"
    fi
    "$MODELGATE" validate --config "$RUN/modelgate.yaml" >>"$RUN/modelgate.out" 2>&1 \
        || die "modelgate validate failed: $(tail -5 "$RUN/modelgate.out")"
    MG_START=$(date +%s.%N)
    taskset -c "$PROXY_CPU" "${WRAP[@]}" "$MODELGATE" --config "$RUN/modelgate.yaml" >>"$RUN/modelgate.out" 2>&1 &
    TARGET_PID=$!; PIDS+=("$TARGET_PID")
    TRIES=${READY_TRIES:-200} wait_for "modelgate /readyz" curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz"
    MG_READY=$(date +%s.%N)
    TARGET_PIDS=$TARGET_PID
}

start_provider() {
    local out=$RUN/provider.out
    taskset -c "$LOAD_CPU" node "$REPO/tests/oidc/provider.mjs" --port 0 >"$out" 2>"$RUN/provider.err" &
    PROVIDER_PID=$!; PIDS+=("$PROVIDER_PID")
    # A cold start of node and its packages can take tens of seconds on a fresh machine.
    TRIES=600 wait_for "the OIDC provider" grep -q '^listening ' "$out"
    ISSUER=$(sed -n 's/^listening //p' "$out" | head -1)
    local now; now=$(date +%s)
    TOKEN=$(curl -sf -X POST "${ISSUER%/dex}/__test/sign" -H 'content-type: application/json' \
        -d "{\"header\": {}, \"claims\": {\"iss\": \"$ISSUER\", \"aud\": \"modelgate\", \"sub\": \"bench\", \"email\": \"user@example.com\", \"email_verified\": true, \"groups\": [\"kubeflow-users\"], \"iat\": $now, \"exp\": $((now + 6 * 3600))}}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    printf 'modelgate-secret\n' >"$RUN/client-secret"
    printf 'bench-cookie-secret-%s\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$RUN/cookie-secret"
    COOKIE=$("$UPSTREAM" seal-cookie "$RUN/cookie-secret" user@example.com authservice_session)
    log "OIDC provider at $ISSUER; JWT ${#TOKEN} bytes, session cookie ${#COOKIE} bytes"
}

# run_target TARGET: start it, measure its scenarios, stop it.
run_target() {
    local target=$1 port
    TARGET_PIDS=""
    case $target in
        direct)
            port=$PORT_A; TARGET_PIDS=$UPSTREAM_PID ;;
        nginx) start_nginx; port=$PROXY_PORT ;;
        haproxy) start_haproxy; port=$PROXY_PORT ;;
        pingora) start_pingora; port=$PROXY_PORT ;;
        floor) start_floor; port=$PROXY_PORT ;;
        modelgate) start_modelgate 0 "$RUN/isvc"; port=$PROXY_PORT ;;
        modelgate-auth) start_modelgate 1 "$RUN/isvc"; port=$PROXY_PORT ;;
        *) die "unknown target $target" ;;
    esac
    log "round $ROUND: $target (pids $TARGET_PIDS)"
    if [[ $target == modelgate-auth ]]; then
        # Every request must be authenticated: without credentials an API client (not a browser:
        # a plain GET would be redirected to the login) gets 401.
        local code
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" -H 'Accept: application/json' "http://127.0.0.1:$port$PREDICT_PATH")
        [[ $code == 401 ]] || die "modelgate-auth answered $code without credentials, expected 401"
        warm "$port" "Host: $HOST" "Authorization: Bearer $TOKEN"
        measure "$target" jwt-get "$port" GET "Host: $HOST" "Authorization: Bearer $TOKEN"
        measure "$target" jwt-post "$port" POST "Host: $HOST" "Authorization: Bearer $TOKEN"
        measure "$target" cookie-get "$port" GET "Host: $HOST" "Cookie: authservice_session=$COOKIE"
        measure "$target" cookie-post "$port" POST "Host: $HOST" "Cookie: authservice_session=$COOKIE"
    else
        warm "$port" "Host: $HOST"
        measure "$target" get "$port" GET "Host: $HOST"
        measure "$target" post "$port" POST "Host: $HOST"
        if [[ $LARGE == 1 ]]; then measure "$target" large "$port" POST "Host: $HOST"; fi
    fi
    if [[ $target != direct ]]; then stop "$TARGET_PID"; fi
}

# ---------------------------------------------------------------- scale and hot reload
# SCALE_ISVCS InferenceServices (100 per file) plus bench-model: modelgate's start-up time to
# ready and its memory, then GET throughput without and with a reload every second.
run_scale() {
    local dir=$RUN/isvc-scale
    mkdir -p "$dir"
    cp "$RUN/isvc/bench-model.yaml" "$dir/"
    python3 "$BENCH_DIR/report.py" gen-isvcs --count "$SCALE_ISVCS" --per-file 100 --out "$dir" \
        --endpoints "$RUN/scale-endpoints.yaml" --endpoint "127.0.0.1:$PORT_A"
    log "scale: modelgate with $SCALE_ISVCS + 1 InferenceServices"
    EXTRA_ENDPOINTS=$RUN/scale-endpoints.yaml READY_TRIES=1200 start_modelgate 0 "$dir"
    EXTRA_ENDPOINTS=""
    local port=$PROXY_PORT ready_ms rss_ready
    ready_ms=$(python3 -c "print(round(($MG_READY - $MG_START) * 1000))")
    rss_ready=$(awk '/^VmRSS:/ {print $2}' "/proc/$TARGET_PID/status")
    local hosts peak_ready
    peak_ready=$(peak_rss_kib "$TARGET_PID")
    # From /metrics, not /routes: serialising 100,000 hosts would itself raise the peak.
    hosts=$(curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^modelgate_route_hosts / {print $2}')
    echo "{\"kind\": \"scale_start\", \"isvcs\": $((SCALE_ISVCS + 1)), \"hosts\": ${hosts:-0}, \"ready_ms\": $ready_ms, \"rss_kib_ready\": $rss_ready, \"peak_rss_kib\": $peak_ready}" >>"$RESULTS/scale.jsonl"
    warm "$port" "Host: $HOST"
    for ROUND in $(seq "$ROUNDS"); do
        measure scale-steady get "$port" GET "Host: $HOST"
        # The same run with bench-model.yaml rewritten (resourceVersion bumped, atomically,
        # as kubelet swaps a ConfigMap) every second: every rewrite rebuilds the whole table.
        local r0 r1 rewrites=$((DURATION + RATE_DURATION - 1))
        r0=$(reloads_ok)
        (
            for i in $(seq "$rewrites"); do
                sleep 1
                sed "s/@VERSION@/reload-$ROUND-$i/" "$BENCH_DIR/isvc/bench-model.yaml" >"$dir/.bench-model.tmp"
                mv "$dir/.bench-model.tmp" "$dir/bench-model.yaml"
            done
        ) &
        local writer=$!; PIDS+=("$writer")
        measure scale-reload get "$port" GET "Host: $HOST"
        wait "$writer" 2>/dev/null || true
        stop "$writer"
        sleep 1.5
        r1=$(reloads_ok)
        echo "{\"kind\": \"reloads\", \"round\": $ROUND, \"reloads_ok\": $((r1 - r0)), \"rewrites\": $rewrites}" >>"$RESULTS/scale.jsonl"
        log "  reloads during the runs: $((r1 - r0)) (rewrites: $rewrites)"
    done
    stop "$TARGET_PID"
}

# ---------------------------------------------------------------- scale from the Kubernetes API
# SCALE_ISVCS InferenceServices served by the fake API server (tests/fake-apiserver): how long
# after the last list page the first table is in (from the gateway's own log), the memory it
# takes (RSS against the same gateway watching an empty API), and how long one changed object
# takes to be routed (report.py api-changes).
run_api_scale() {
    local objects ready_rss empty_rss=0
    for objects in 0 "$SCALE_ISVCS"; do
        local out=$RUN/fake-apiserver-$objects.out
        taskset -c "$LOAD_CPU" "$FAKE_API" --objects "$objects" --kubeconfig "$RUN/api-$objects.kubeconfig" >"$out" 2>&1 &
        local fake=$!; PIDS+=("$fake")
        TRIES=600 wait_for "the fake API server" grep -q '^fake-apiserver: ' "$out"
        local control; control=$(sed -n 's/.* control //p' "$out")
        printf '%s\n' \
            "listeners: [{address: \"127.0.0.1:$PROXY_PORT\"}]" \
            "admin: {address: \"127.0.0.1:$ADMIN_PORT\"}" \
            "routes: {kubernetes: {kubeconfig: $RUN/api-$objects.kubeconfig}}" \
            "demo: true" \
            "threads: 1" \
            "log: {level: info, format: json}" \
            "shutdown: {grace_period: 0s, drain_timeout: 1s}" >"$RUN/modelgate-api.yaml"
        log "api scale: modelgate watching $objects InferenceServices"
        taskset -c "$PROXY_CPU" "$MODELGATE" --config "$RUN/modelgate-api.yaml" >"$RUN/modelgate-api-$objects.out" 2>&1 &
        TARGET_PID=$!; PIDS+=("$TARGET_PID")
        TRIES=1200 wait_for "modelgate /readyz (API)" curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz"
        if [[ $objects == 0 ]]; then
            empty_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$TARGET_PID/status")
        else
            ready_rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$TARGET_PID/status")
            local list_ms
            list_ms=$(curl -sf "http://$control/last-list" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ms"])')
            python3 "$BENCH_DIR/report.py" api-start --log "$RUN/modelgate-api-$objects.out" \
                --list-ms "$list_ms" --rss "$ready_rss" --rss-empty "$empty_rss" >>"$RESULTS/scale.jsonl"
            python3 "$BENCH_DIR/report.py" api-changes --gateway "127.0.0.1:$PROXY_PORT" \
                --control "$control" --isvcs "$objects" >>"$RESULTS/scale.jsonl"
            # After the changes the spent object copies have been freed (mimalloc returns pages
            # to the system lazily): the steady memory of the table and the watch.
            sleep 2
            echo "{\"kind\": \"api_rss\", \"rss_kib_settled\": $(awk '/^VmRSS:/ {print $2}' "/proc/$TARGET_PID/status"), \"peak_rss_kib\": $(peak_rss_kib "$TARGET_PID")}" >>"$RESULTS/scale.jsonl"
            tail -3 "$RESULTS/scale.jsonl" | while read -r l; do log "  $l"; done
        fi
        stop "$TARGET_PID"
        stop "$fake"
    done
}

# ---------------------------------------------------------------- instructions per request
# callgrind_target TARGET SCENARIO HEADER...: the proxy under callgrind, CG_REQUESTS keep-alive
# GETs (after 500 unmeasured ones), user-space instructions per request. Deterministic where
# the timed figures are not: it does not move with what else runs on the machine. Kernel work
# (the loopback TCP every proxy pays alike) is not counted.
callgrind_target() {
    local target=$1 scenario=$2; shift 2
    local out=$RUN/callgrind h oha_h=() url="http://127.0.0.1:$PROXY_PORT$PREDICT_PATH"
    local tag="callgrind-${target}-${scenario}"
    rm -rf "$out"; mkdir -p "$out"
    for h in "$@"; do oha_h+=(-H "$h"); done
    WRAP=(valgrind --tool=callgrind --dump-instr=no "--callgrind-out-file=$out/cg.%p")
    case $target in
        nginx) TRIES=600 start_nginx ;;
        haproxy) TRIES=600 start_haproxy ;;
        pingora) TRIES=600 start_pingora ;;
        floor) TRIES=600 start_floor ;;
        modelgate) READY_TRIES=600 start_modelgate 0 "$RUN/isvc" ;;
        modelgate-auth) READY_TRIES=600 start_modelgate 1 "$RUN/isvc" ;;
    esac
    WRAP=()
    taskset -c "$LOAD_CPU" oha -n 500 -c "$CONNECTIONS" --no-tui "${oha_h[@]}" "$url" >/dev/null 2>&1
    callgrind_control -z "$TARGET_PID" >/dev/null
    taskset -c "$LOAD_CPU" oha -n "$CG_REQUESTS" -c "$CONNECTIONS" --no-tui --output-format json \
        "${oha_h[@]}" "$url" >"$RAW/$tag.oha.json" 2>"$RAW/$tag.oha.err" || log "oha exited non-zero ($tag)"
    callgrind_control -d "$TARGET_PID" >/dev/null
    stop "$TARGET_PID"
    local dump ir
    dump=$(ls -t "$out"/cg.*.1 2>/dev/null | head -1)
    [[ -n $dump ]] || { log "no callgrind dump for $tag"; return; }
    ir=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    cp "$dump" "$RAW/$tag.callgrind"
    python3 "$BENCH_DIR/report.py" record-callgrind --target "$target" --scenario "$scenario" \
        --requests "$CG_REQUESTS" --instructions "${ir:-0}" --oha "$RAW/$tag.oha.json" \
        >>"$RESULTS/callgrind.jsonl"
    log "  $tag: $(tail -1 "$RESULTS/callgrind.jsonl")"
}

run_callgrind() {
    log "callgrind: instructions per request ($CG_REQUESTS GETs per target)"
    local t
    for t in $TARGETS; do
        case $t in
            nginx | haproxy | pingora | floor | modelgate) callgrind_target "$t" get "Host: $HOST" ;;
            modelgate-auth)
                callgrind_target "$t" jwt-get "Host: $HOST" "Authorization: Bearer $TOKEN"
                callgrind_target "$t" cookie-get "Host: $HOST" "Cookie: authservice_session=$COOKIE"
                ;;
        esac
    done
}

reloads_ok() {
    curl -sf "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^modelgate_reloads_total/ && /result="success"/ {s += $2} END {print s + 0}'
}

# ---------------------------------------------------------------- main
main() {
    install_tools
    build
    mkdir -p "$RESULTS/raw"
    RESULTS=$(cd "$RESULTS" && pwd)
    RAW=$RESULTS/raw
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/modelgate-bench.XXXXXX")
    mkdir -p "$RUN/isvc"
    sed "s/@VERSION@/1/" "$BENCH_DIR/isvc/bench-model.yaml" >"$RUN/isvc/bench-model.yaml"
    BODY_FILE=$RUN/body.json
    python3 "$BENCH_DIR/report.py" body --bytes 1024 >"$BODY_FILE"
    LARGE_BODY_FILE=$RUN/large.json
    python3 "$BENCH_DIR/report.py" body --bytes "$LARGE_BYTES" >"$LARGE_BODY_FILE"

    read -r PROXY_PORT ADMIN_PORT <<<"$("$UPSTREAM" free-ports 2)"
    taskset -c "$LOAD_CPU" "$UPSTREAM" serve >"$RUN/upstream.out" 2>&1 &
    UPSTREAM_PID=$!; PIDS+=("$UPSTREAM_PID")
    wait_for "bench_upstream" grep -q '^listening ' "$RUN/upstream.out"
    read -r PORT_A PORT_B <<<"$(sed -n 's/^listening //p' "$RUN/upstream.out")"
    if [[ " $TARGETS " == *" modelgate-auth "* ]]; then start_provider; fi

    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$REPO" && git diff --quiet HEAD -- 2>/dev/null || echo ' (dirty)')"
        echo "nproc: $(nproc)"
        echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
        echo "kernel: $(uname -r)"
        echo "nginx: $(nginx -v 2>&1 | sed 's/.*nginx\///')"
        echo "haproxy: $(haproxy -v | head -1 | awk '{print $3}')"
        echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
        echo "oha: $(oha --version | awk '{print $2}')"
        echo "rustc: $(rustc --version | awk '{print $2}')"
        echo "settings: ROUNDS=$ROUNDS DURATION=${DURATION}s RATE=$RATE/s RATE_DURATION=${RATE_DURATION}s CONNECTIONS=$CONNECTIONS LARGE=$LARGE LARGE_BYTES=$LARGE_BYTES LARGE_RATE=$LARGE_RATE/s PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU"
    } >"$RESULTS/machine.txt"
    machine_state >"$RESULTS/state-start.txt"
    log "results in $RESULTS; upstream ports $PORT_A $PORT_B, proxy port $PROXY_PORT"
    cat "$RESULTS/machine.txt" >&2

    local -a order
    read -r -a order <<<"$TARGETS"
    for ROUND in $(seq "$ROUNDS"); do
        machine_state >"$RESULTS/state-round-$ROUND.txt"
        log "round $ROUND/$ROUNDS, $(head -1 "$RESULTS/state-round-$ROUND.txt")"
        # Rotate the order each round so slow drift in the machine does not favour one target.
        local n=${#order[@]} i
        for ((i = 0; i < n; i++)); do
            run_target "${order[$(((i + ROUND - 1) % n))]}"
        done
    done

    if [[ $CALLGRIND == 1 ]]; then run_callgrind; fi
    if [[ $SCALE == 1 ]]; then
        (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR BENCH_ISVCS=$SCALE_ISVCS cargo bench -q -p routes --bench table_oneshot 2>/dev/null) \
            | grep '^{' | sed 's/^{/{"kind": "table_oneshot", /' >>"$RESULTS/scale.jsonl" || log "table_oneshot failed"
        run_scale
        run_api_scale
    fi
    machine_state >"$RESULTS/state-end.txt"
    stop "$UPSTREAM_PID"

    if [[ $MICRO == 1 ]]; then
        log "criterion: cargo bench -p routes, cargo bench -p auth"
        (cd "$REPO" && CARGO_TARGET_DIR=$TARGET_DIR cargo bench -q -p routes --bench table 2>&1 \
            && CARGO_TARGET_DIR=$TARGET_DIR cargo bench -q -p auth --bench verify 2>&1) \
            >"$RESULTS/criterion.txt" || log "criterion benches failed (see criterion.txt)"
    fi
    python3 "$BENCH_DIR/report.py" report "$RESULTS" >"$RESULTS/results.md"
    log "done: $RESULTS/results.md"
    cat "$RESULTS/results.md"
}

main "$@"
