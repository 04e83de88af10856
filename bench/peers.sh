#!/usr/bin/env bash
# ticketd against its peers and this machine's limits, in one run
# (issue 12). One command on a fresh Debian machine:
#
#   bench/peers.sh
#
# It installs what is missing (etcd-server, redis-server from Debian),
# builds ticketd and the bench programs (release), and then, with the
# same load generator (bench/load.rs) at 32 and 64 connections:
#   - limits: the fsync floor (4 KiB appends + fdatasync to a
#     preallocated file in the data dirs' filesystem), the bare tiny_http
#     ceiling, the write ceiling (bare_server --handoff) and the same with
#     a pause per batch equal to the fsync floor;
#   - ticketd on 1 and 3 nodes: POST /, ?count=1000, session opens,
#     lock+unlock pairs (and pipelined pairs on one connection);
#   - etcd on 1 and 3 nodes: put (the revision is the ID), lease grants,
#     the lock recipe (txn put-if-absent with a lease, then delete);
#   - Redis with appendonly yes + appendfsync always: INCR, INCRBY 1000;
#   - failover: kill -9 of the 3-node leader, time to the first ID from
#     the new leader, 20 trials;
#   - scale: 100,000 live sessions each holding a lock: resident memory,
#     lock+unlock p99 and maximum, restart-to-serving time, and a wiped
#     follower's catch-up.
# Every system runs on 127.0.0.1 on free ports with its data in one temp
# dir; everything it started is stopped by PID on any exit.
#
# Output: a Markdown table (ticketd against peer or limit, with the
# ratio and the issue's target), `RESULT name value unit` lines, and a
# JSON file with the machine, the git commit and every figure. It exits 0
# only if every scenario served and none had an error or lost its leader.
#
# Environment:
#   BENCH_SECS      measured seconds per load scenario (default 5)
#   BENCH_WARMUP    unmeasured seconds before each (default 1)
#   TICKETD_BIN     the ticketd binary to measure (default: built from this tree)
#   BENCH_PARTS     which parts to run (default "limits ticketd etcd redis failover scale")
#   BENCH_TRIALS    failover trials (default 20)
#   BENCH_SESSIONS  live sessions (each holding a lock) of the scale part (default 100000)
#   BENCH_DIR       where the temp dir goes (default target/ of this tree; not tmpfs)
#   BENCH_OUT       path prefix of the .md and .json written (default target/bench-peers)
#   BENCH_KEEP      1: keep the temp dir (logs of every server)
#   BENCH_SKIP_BUILD 1: use the binaries already built
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
TICKETD=${TICKETD_BIN:-$ROOT/target/release/ticketd}
LOAD=$ROOT/target/release/examples/load
BARE=$ROOT/target/release/examples/bare_server
PARTS=${BENCH_PARTS:-limits ticketd etcd redis failover scale}
TRIALS=${BENCH_TRIALS:-20}
SESSIONS=${BENCH_SESSIONS:-100000}
OUT=${BENCH_OUT:-$ROOT/target/bench-peers}
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# The command as run: the knobs that were set, then the script.
COMMAND=$(
    for v in BENCH_SECS BENCH_WARMUP TICKETD_BIN BENCH_PARTS BENCH_TRIALS BENCH_SESSIONS BENCH_DIR; do
        [[ -n ${!v:-} ]] && printf '%s=%s ' "$v" "${!v}"
    done
    printf '%s' "bench/peers.sh${*:+ $*}"
)

mkdir -p "${BENCH_DIR:-$ROOT/target}"
WORK=$(mktemp -d "${BENCH_DIR:-$ROOT/target}/peers.XXXXXX")
PIDS=()          # every process this script started and has not reaped
FAILED=()        # scenarios that erred, lost a leader or served nothing
declare -A R     # every figure: R[name]=value
declare -A UNIT  # R's units
ORDER=()         # names in the order they were measured

log() { echo "peers: $*" >&2; }

# ---------------------------------------------------------------------
# Processes: started in the background, remembered, stopped by PID.

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# stop_pid PID [SIGNAL]: TERM (or SIGNAL), then KILL after 5 s; reaps it.
# (Its output goes to /dev/null: bash's "Killed" notice too.)
stop_pid() {
    local pid=$1 signal=${2:-TERM}
    {
        kill -"$signal" "$pid" || true
        for _ in $(seq 50); do
            kill -0 "$pid" || break
            sleep 0.1
        done
        kill -KILL "$pid" || true
        wait "$pid" || true
    } 2>/dev/null
    forget_pid "$pid"
}

# kill9 PID: kill -9 and reap, without bash's "Killed" notice.
kill9() {
    {
        kill -KILL "$1" || true
        wait "$1" || true
    } 2>/dev/null
    forget_pid "$1"
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------
# Recording

# record NAME VALUE UNIT: one figure, printed as a RESULT line.
record() {
    [[ -v "R[$1]" ]] || ORDER+=("$1")
    R[$1]=$2
    UNIT[$1]=$3
    echo "RESULT $1 $2 $3"
}

get() { echo "${R[$1]:--}"; }

fail() {
    FAILED+=("$1")
    log "FAILED: $1"
}

# measure NAME ADDRS SCENARIO CONNS [LOAD ARGS...]: runs the load
# generator, records its figures under NAME; a failed run is remembered.
measure() {
    local name=$1 addrs=$2 sc=$3 conns=$4 line kv rc=0
    shift 4
    local target=(--addr "$addrs")
    [[ $addrs == - ]] && target=()
    line=$("$LOAD" "${target[@]}" --scenario "$sc" --conns "$conns" \
        --label "$name" "$@" 2>"$WORK/last.err") || rc=$?
    echo "$line" >>"$WORK/load.out"
    cat "$WORK/last.err" >>"$WORK/load.err"
    local -A f=()
    for kv in $line; do
        [[ $kv == *=* ]] && f[${kv%%=*}]=${kv#*=}
    done
    if [[ -z ${f[ops]:-} ]]; then
        fail "$name: the load generator printed no result (exit $rc)"
        return 0
    fi
    local unit=${f[unit]}
    record "$name.ops_per_sec" "${f[ops_per_sec]}" "$unit/s"
    record "$name.reqs_per_sec" "${f[reqs_per_sec]}" "req/s"
    record "$name.mean_ms" "${f[mean_ms]}" ms
    record "$name.p50_ms" "${f[p50_ms]}" ms
    record "$name.p99_ms" "${f[p99_ms]}" ms
    record "$name.max_ms" "${f[max_ms]}" ms
    record "$name.errors" "${f[errors]}" count
    R[$name.end_unix_ns]=${f[end_unix_ns]}
    if ((f[redirects] + f[retries])); then
        record "$name.redirects" "${f[redirects]}" count
        record "$name.retries" "${f[retries]}" count
        record "$name.resent_gone" "${f[resent_gone]:-0}" count
    fi
    if ((rc != 0)); then
        fail "$name ($sc, $conns conns): ${f[errors]} errors, ${f[lost_leader]} lost leader, ${f[ops]} ops; $(grep 'first error' "$WORK/last.err" | head -n 1)"
    fi
}

# ---------------------------------------------------------------------
# Setup: packages, build, ports

install_peers() {
    local missing=() sudo=""
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || sudo=sudo
    log "installing ${missing[*]} from Debian"
    local p
    for p in "${missing[@]}"; do
        if ! apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
            $sudo apt-get update
            break
        fi
    done
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y "${missing[@]}"
}

build() {
    [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] && return
    log "building (release)"
    if [[ -n ${TICKETD_BIN:-} ]]; then
        (cd "$ROOT" && cargo build --release --examples)
    else
        (cd "$ROOT" && cargo build --release --bins --examples)
    fi
}

# ports N: N free loopback ports.
ports() { "$LOAD" --free-ports "$1"; }

# ---------------------------------------------------------------------
# HTTP helpers (curl)

http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }
http_body() { curl -s --max-time 2 "$@" || true; }

# json_num FIELD: a number field from the JSON on stdin.
json_num() { { grep -o "\"$1\":\"\{0,1\}[0-9.]*" || true; } | head -n 1 | sed 's/.*://; s/"//'; }

# ---------------------------------------------------------------------
# ticketd clusters: T_PIDS[i], T_HTTP[i], T_PEER[i], T_DIR[i] per node.

# t_start_node I [ARGS...]: (re)starts node I of the current cluster.
t_start_node() {
    local i=$1
    shift
    # shellcheck disable=SC2086
    "$TICKETD" "$@" --peer_port "${T_PEER[i]}" --http_port "${T_HTTP[i]}" \
        --path "${T_DIR[i]}" --loglevel 1 >>"${T_DIR[i]}.log" 2>&1 &
    T_PIDS[i]=$!
    PIDS+=($!)
}

# t_cluster NAME N: starts N fresh nodes.
t_cluster() {
    local name=$1 n=$2 p peers="" i
    read -r -a p <<<"$(ports $((2 * n)))"
    T_PIDS=(); T_HTTP=(); T_PEER=(); T_DIR=()
    for ((i = 0; i < n; i++)); do
        T_PEER[i]=${p[i]}
        T_HTTP[i]=${p[n + i]}
        T_DIR[i]=$WORK/$name/n$i
        peers+="${peers:+,}127.0.0.1:${p[i]}"
    done
    mkdir -p "$WORK/$name"
    T_BOOT=()
    # One node runs without a peer list: plain `ticketd` is a one-node
    # ID server (SPEC).
    ((n > 1)) && T_BOOT=("$peers")
    for ((i = 0; i < n; i++)); do t_start_node "$i" "${T_BOOT[@]}"; done
}

t_stop_cluster() {
    local pid
    for pid in "${T_PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid"; done
    T_PIDS=()
}

# t_addrs [EXCEPT]: the HTTP addresses of the nodes, comma-separated.
t_addrs() {
    local i out=""
    for i in "${!T_HTTP[@]}"; do
        [[ $i == "${1:-}" ]] || out+="${out:+,}127.0.0.1:${T_HTTP[i]}"
    done
    echo "$out"
}

# t_wait_leader [SECS]: sets T_LEADER (index) and LEADER (host:port) once
# a node leads and serves an ID.
t_wait_leader() {
    local i status deadline=$((SECONDS + ${1:-30}))
    while ((SECONDS < deadline)); do
        for i in "${!T_HTTP[@]}"; do
            [[ -n ${T_PIDS[i]:-} ]] || continue
            status=$(http_body "http://127.0.0.1:${T_HTTP[i]}/api/v1/status")
            if [[ $status == *'"Role":"leader"'* ]] &&
                [[ $(http_code -X POST "http://127.0.0.1:${T_HTTP[i]}/") == 200 ]]; then
                T_LEADER=$i
                LEADER=127.0.0.1:${T_HTTP[i]}
                return 0
            fi
        done
        sleep 0.1
    done
    return 1
}

# t_wait_ready I [SECS]: node I knows a leader and has applied its commit.
t_wait_ready() {
    local deadline=$((SECONDS + ${2:-30}))
    while ((SECONDS < deadline)); do
        [[ $(http_code "http://127.0.0.1:${T_HTTP[$1]}/readyz") == 200 ]] && return 0
        sleep 0.05
    done
    return 1
}

# t_status I FIELD: a number from node I's /api/v1/status.
t_status() { http_body "http://127.0.0.1:${T_HTTP[$1]}/api/v1/status" | json_num "$2"; }

# metric NAME: a sample from the leader's /metrics.
metric() {
    local value
    value=$(http_body "http://$LEADER/metrics" | awk -v m="$1" '$1 == m {print $2}')
    echo "${value:-0}"
}

# rss_mb PID: resident memory in MB.
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo -; }

# ---------------------------------------------------------------------
# etcd clusters

# e_cluster NAME N: starts N etcd members; sets E_ADDRS and E_LEADER.
e_cluster() {
    local name=$1 n=$2 p initial="" i
    read -r -a p <<<"$(ports $((2 * n)))"
    E_PIDS=(); E_CLIENT=()
    for ((i = 0; i < n; i++)); do
        initial+="${initial:+,}e$i=http://127.0.0.1:${p[n + i]}"
        E_CLIENT[i]=127.0.0.1:${p[i]}
    done
    mkdir -p "$WORK/$name"
    for ((i = 0; i < n; i++)); do
        etcd --name "e$i" --data-dir "$WORK/$name/e$i" \
            --listen-client-urls "http://${E_CLIENT[i]}" --advertise-client-urls "http://${E_CLIENT[i]}" \
            --listen-peer-urls "http://127.0.0.1:${p[n + i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${p[n + i]}" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token "bench-$name" --logger zap --log-level error \
            >"$WORK/$name/e$i.log" 2>&1 &
        E_PIDS[i]=$!
        PIDS+=($!)
    done
    local deadline=$((SECONDS + 60)) status member leader
    while ((SECONDS < deadline)); do
        for i in "${!E_CLIENT[@]}"; do
            status=$(http_body -X POST -d '{}' "http://${E_CLIENT[i]}/v3/maintenance/status")
            member=$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$status")
            leader=$(sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p' <<<"$status")
            if [[ -n $member && $member == "$leader" ]] &&
                [[ $(http_code -X POST -d '{"key":"cmVhZHk=","value":"MQ=="}' "http://${E_CLIENT[i]}/v3/kv/put") == 200 ]]; then
                E_LEADER=${E_CLIENT[i]}
                E_ADDRS=$E_LEADER
                for member in "${E_CLIENT[@]}"; do
                    [[ $member == "$E_LEADER" ]] || E_ADDRS+=",$member"
                done
                return 0
            fi
        done
        sleep 0.2
    done
    fail "$name: etcd found no leader in 60 s (logs: $WORK/$name)"
    return 1
}

e_stop_cluster() {
    local pid
    for pid in "${E_PIDS[@]}"; do stop_pid "$pid"; done
    E_PIDS=()
}

# ---------------------------------------------------------------------
# Redis

redis_ping() {
    local fd reply=""
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'PING\r\n' >&"$fd"
    read -r -t 1 reply <&"$fd" || true
    exec {fd}>&-
    [[ $reply == +PONG* ]]
}

# ---------------------------------------------------------------------
# The parts

# A bare server with FLAGS; sets BARE_ADDR and BARE_PID.
start_bare() {
    "$BARE" --addr 127.0.0.1:0 "$@" >"$WORK/bare.out" 2>"$WORK/bare.err" &
    BARE_PID=$!
    PIDS+=($!)
    for _ in $(seq 100); do
        BARE_ADDR=$(awk '/^LISTENING/ {print $2}' "$WORK/bare.out")
        [[ -n $BARE_ADDR ]] && return 0
        sleep 0.05
    done
    fail "bare_server $*: did not start"
    return 1
}

fsync_floor() {
    local name=$1
    measure "$name" - fsync-floor 1 --dir "$WORK" --secs "$SECS" --warmup "$WARMUP"
}

part_limits() {
    log "limits: fsync floor in $WORK, bare tiny_http, write ceiling"
    fsync_floor floor.start
    local c
    start_bare && {
        for c in 32 64; do measure "bare.ids.c$c" "$BARE_ADDR" ids "$c" --secs "$SECS" --warmup "$WARMUP"; done
        stop_pid "$BARE_PID"
    }
    start_bare --handoff && {
        for c in 32 64; do measure "handoff.ids.c$c" "$BARE_ADDR" ids "$c" --secs "$SECS" --warmup "$WARMUP"; done
        stop_pid "$BARE_PID"
    }
}

# ceiling_at_floor: the fsync floor now, then the write ceiling with a
# pause per batch as long as its mean: run right before ticketd's lock
# runs, since this machine's disk cost drifts with the other work on it.
ceiling_at_floor() {
    fsync_floor floor.lock
    local wait_us c
    wait_us=$(awk -v ms="$(get floor.lock.mean_ms)" 'BEGIN {printf "%.0f", ms == "-" ? 300 : 1000 * ms}')
    record ceiling.wait_us "$wait_us" us
    start_bare --handoff --wait-us "$wait_us" && {
        run_cpu handoff_floor.ids.c32 "$BARE_ADDR" ids 32 "server:$BARE_PID"
        run handoff_floor.ids.c64 "$BARE_ADDR" ids 64
        stop_pid "$BARE_PID"
    }
}

run() { measure "$@" --secs "$SECS" --warmup "$WARMUP"; }

# run_cpu NAME ADDRS SCENARIO CONNS ROLE:PID...: `run`, and the CPU each
# process spent per request over the measured window (the load
# generator reads /proc at both ends): NAME.cpu_us_per_req.ROLE, summed
# over the processes of one role, .load for the generator itself, and
# .total. Where the CPU goes says what a run could reach on these cores.
run_cpu() {
    local name=$1 addrs=$2 sc=$3 conns=$4 r kv pid_ms
    shift 4
    local -A role_of=() spent=()
    local pids=()
    for r in "$@"; do
        role_of[${r#*:}]=${r%%:*}
        pids+=("${r#*:}")
    done
    run "$name" "$addrs" "$sc" "$conns" --cpu-of "$(IFS=,; echo "${pids[*]}")"
    local -A f=()
    for kv in $(tail -n 1 "$WORK/load.out"); do
        [[ $kv == *=* ]] && f[${kv%%=*}]=${kv#*=}
    done
    local reqs=${f[reqs]:-0} own=${f[cpu_self_ms]:-?}
    if ((reqs == 0)) || [[ -z ${f[cpu_ms]:-} || $own == "?" || ${f[cpu_ms]} == *"?"* ]]; then
        fail "$name: no CPU figures (requests ${reqs}, cpu ${f[cpu_ms]:-none})"
        return 0
    fi
    spent[load]=$own
    for pid_ms in ${f[cpu_ms]//\// }; do
        r=${role_of[${pid_ms%%:*}]}
        spent[$r]=$((${spent[$r]:-0} + ${pid_ms#*:}))
    done
    local total=0
    for r in "${!spent[@]}"; do
        total=$((total + spent[$r]))
        record "$name.cpu_us_per_req.$r" "$(awk -v ms="${spent[$r]}" -v n="$reqs" 'BEGIN {printf "%.1f", 1000 * ms / n}')" us
    done
    record "$name.cpu_us_per_req.total" "$(awk -v ms="$total" -v n="$reqs" 'BEGIN {printf "%.1f", 1000 * ms / n}')" us
}

# persist_mark, then persist_record NAME: the leader's mean persist per
# batch between the two (its persist histogram's sum and count), the
# fdatasync alone (ticketd_persist_sync_seconds) and entries per batch.
persist_mark() {
    P0=("$(metric ticketd_persist_seconds_sum)" "$(metric ticketd_persist_seconds_count)"
        "$(metric ticketd_entries_persisted_total)" "$(metric ticketd_persist_sync_seconds_sum)"
        "$(metric ticketd_persist_sync_seconds_count)")
}
persist_record() {
    local name=$1 p1
    p1=("$(metric ticketd_persist_seconds_sum)" "$(metric ticketd_persist_seconds_count)"
        "$(metric ticketd_entries_persisted_total)" "$(metric ticketd_persist_sync_seconds_sum)"
        "$(metric ticketd_persist_sync_seconds_count)")
    record "$name.persists" "$(awk -v a="${P0[1]}" -v b="${p1[1]}" 'BEGIN {print b - a}')" count
    record "$name.persist_mean_ms" \
        "$(awk -v s0="${P0[0]}" -v s1="${p1[0]}" -v a="${P0[1]}" -v b="${p1[1]}" 'BEGIN {printf "%.3f", (b > a) ? 1000 * (s1 - s0) / (b - a) : 0}')" ms
    record "$name.sync_mean_ms" \
        "$(awk -v s0="${P0[3]}" -v s1="${p1[3]}" -v a="${P0[4]}" -v b="${p1[4]}" 'BEGIN {printf "%.3f", (b > a) ? 1000 * (s1 - s0) / (b - a) : 0}')" ms
    record "$name.entries_per_persist" \
        "$(awk -v e0="${P0[2]}" -v e1="${p1[2]}" -v a="${P0[1]}" -v b="${p1[1]}" 'BEGIN {printf "%.1f", (b > a) ? (e1 - e0) / (b - a) : 0}')" entries
}

part_ticketd() {
    local c
    log "ticketd, 1 node"
    t_cluster t1 1
    if t_wait_leader; then
        for c in 32 64; do run "ticketd1.ids.c$c" "$LEADER" ids "$c"; done
    else
        fail "ticketd1: no leader in 30 s (logs: $WORK/t1)"
    fi
    t_stop_cluster

    log "ticketd, 3 nodes"
    t_cluster t3 3
    if ! t_wait_leader; then
        fail "ticketd3: no leader in 30 s (logs: $WORK/t3)"
        t_stop_cluster
        return
    fi
    local addrs
    addrs=$LEADER,$(t_addrs "$T_LEADER")
    for c in 32 64; do run "ticketd3.ids.c$c" "$addrs" ids "$c"; done
    for c in 32 64; do run "ticketd3.count1000.c$c" "$addrs" ids-count=1000 "$c"; done
    for c in 32 64; do run "ticketd3.session.c$c" "$addrs" session-open "$c"; done
    # The leader's persist time per batch over the 32-connection lock
    # run, from its persist histogram's sum and count, against the fsync
    # floor measured just before (the disk is shared and its cost drifts).
    ceiling_at_floor
    persist_mark
    local i roles=()
    for i in "${!T_PIDS[@]}"; do
        if [[ $i == "$T_LEADER" ]]; then roles+=("leader:${T_PIDS[i]}"); else roles+=("followers:${T_PIDS[i]}"); fi
    done
    run_cpu ticketd3.lock.c32 "$addrs" lock-unlock 32 "${roles[@]}"
    persist_record ticketd3.lock.c32
    # The same lock run once more, with the fsync floor measured during
    # it: that floor pays the same CPU and disk contention as the
    # leader's persist (on 2 cores, a sync's wake-up waits for a CPU
    # behind the other threads), where the one just before pays none.
    local lock_secs bg rc=0
    lock_secs=$(awk -v s="$SECS" -v w="$WARMUP" 'BEGIN {print s + 2 * w}')
    "$LOAD" --addr "$addrs" --scenario lock-unlock --conns 32 --secs "$lock_secs" \
        --label ticketd3.lock_with_floor.c32 >"$WORK/lock_with_floor.out" 2>>"$WORK/load.err" &
    bg=$!
    PIDS+=("$bg")
    sleep "$WARMUP"
    persist_mark
    fsync_floor floor.during_lock
    persist_record ticketd3.lock_with_floor.c32
    wait "$bg" || rc=$?
    forget_pid "$bg"
    ((rc == 0)) || fail "ticketd3.lock_with_floor.c32: the load generator exited $rc (see $WORK/load.err)"
    run ticketd3.lock.c64 "$addrs" lock-unlock 64
    run ticketd3.lock_pipelined.c1 "$LEADER" lock-unlock 1 --pipeline 64
    t_stop_cluster
}

part_etcd() {
    local c
    log "etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}'), 1 member"
    if e_cluster e1 1; then
        for c in 32 64; do run "etcd1.put.c$c" "$E_ADDRS" etcd-put "$c"; done
    fi
    e_stop_cluster
    log "etcd, 3 members"
    if e_cluster e3 3; then
        for c in 32 64; do run "etcd3.put.c$c" "$E_ADDRS" etcd-put "$c"; done
        for c in 32 64; do run "etcd3.lease.c$c" "$E_ADDRS" etcd-lease "$c"; done
        for c in 32 64; do run "etcd3.lock.c$c" "$E_ADDRS" etcd-lock "$c"; done
    fi
    e_stop_cluster
}

part_redis() {
    local port c pid
    port=$(ports 1)
    mkdir -p "$WORK/redis"
    log "redis $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'), appendonly yes, appendfsync always"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes \
        --appendfsync always --save '' --daemonize no --logfile "$WORK/redis/redis.log" &
    pid=$!
    PIDS+=($!)
    for _ in $(seq 100); do redis_ping "$port" 2>/dev/null && break; sleep 0.1; done
    if ! redis_ping "$port" 2>/dev/null; then
        fail "redis: not answering PING (log: $WORK/redis/redis.log)"
        stop_pid "$pid"
        return
    fi
    for c in 32 64; do run "redis.incr.c$c" "127.0.0.1:$port" redis-incr "$c"; done
    for c in 32 64; do run "redis.incrby1000.c$c" "127.0.0.1:$port" redis-incrby=1000 "$c"; done
    for c in 32 64; do run "redis.incrby1000_p16.c$c" "127.0.0.1:$port" redis-incrby=1000 "$c" --pipeline 16; done
    stop_pid "$pid"
}

# first_id NAME T0_NS ADDRS: sets FIRST_MS to the time from T0 to the
# first ID served by any of ADDRS (following redirects), in ms, or "".
first_id() {
    local name=$1 t0=$2 addrs=$3
    FIRST_MS=""
    measure "$name" "$addrs" ids 1 --ops 1 --leader-wait 60 --retry-max-ms 10 >/dev/null
    local end=${R[$name.end_unix_ns]:-}
    [[ -n $end && $(get "$name.errors") == 0 ]] || return 1
    FIRST_MS=$(awk -v a="$t0" -v b="$end" 'BEGIN {printf "%.0f", (b - a) / 1e6}')
}

part_failover() {
    log "failover: $TRIALS trials of kill -9 of the 3-node leader"
    t_cluster tf 3
    if ! t_wait_leader; then
        fail "failover: no leader in 30 s"
        t_stop_cluster
        return
    fi
    local trial ms times=() killed t0 i
    for ((trial = 1; trial <= TRIALS; trial++)); do
        for i in "${!T_HTTP[@]}"; do
            t_wait_ready "$i" || fail "failover trial $trial: node $i not ready in 30 s"
        done
        t_wait_leader || { fail "failover trial $trial: no leader"; break; }
        killed=$T_LEADER
        t0=$(date +%s%N)
        kill9 "${T_PIDS[killed]}"
        first_id "failover.trial$trial" "$t0" "$(t_addrs "$killed")" || true
        ms=$FIRST_MS
        if [[ -z $ms ]]; then
            fail "failover trial $trial: no ID from a new leader"
        else
            times+=("$ms")
            log "failover trial $trial: $ms ms"
        fi
        t_start_node "$killed" "${T_BOOT[@]}"
    done
    if ((${#times[@]})); then
        local sorted
        sorted=$(printf '%s\n' "${times[@]}" | sort -n)
        record failover.trials "${#times[@]}" count
        record failover.median_ms "$(awk '{v[NR] = $1} END {printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}' <<<"$sorted")" ms
        record failover.max_ms "$(tail -n 1 <<<"$sorted")" ms
        record failover.min_ms "$(head -n 1 <<<"$sorted")" ms
    fi
    t_stop_cluster
}

part_scale() {
    log "scale: $SESSIONS live sessions holding a lock each, 3 nodes"
    t_cluster ts 3
    if ! t_wait_leader; then
        fail "scale: no leader in 30 s"
        t_stop_cluster
        return
    fi
    local addrs i
    addrs=$LEADER,$(t_addrs "$T_LEADER")
    measure scale.fill "$addrs" session-lock 64 --ops "$SESSIONS"
    # The status's counts trail the state a little: wait for them.
    local sessions locks deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
        sessions=$(t_status "$T_LEADER" Sessions)
        locks=$(t_status "$T_LEADER" Locks)
        ((${sessions:-0} >= SESSIONS && ${locks:-0} >= SESSIONS)) && break
        sleep 0.2
    done
    record scale.sessions "$sessions" count
    record scale.locks "$locks" count
    run scale.lock.c32 "$addrs" lock-unlock 32
    record scale.rss_leader_mb "$(rss_mb "${T_PIDS[T_LEADER]}")" MB
    for i in "${!T_PIDS[@]}"; do
        [[ $i == "$T_LEADER" ]] || record "scale.rss_node$i.mb" "$(rss_mb "${T_PIDS[i]}")" MB
    done

    # Restart with that state: kill -9 every node, start them again,
    # time to the first ID.
    local t0
    for i in "${!T_PIDS[@]}"; do kill9 "${T_PIDS[i]}"; done
    t0=$(date +%s%N)
    for i in "${!T_HTTP[@]}"; do t_start_node "$i" "${T_BOOT[@]}"; done
    if first_id scale.restart "$t0" "$(t_addrs)"; then
        record scale.restart_to_serving_ms "$FIRST_MS" ms
    else
        fail "scale: no ID after a restart with $SESSIONS sessions"
    fi
    t_wait_leader 60 || { fail "scale: no leader after the restart"; t_stop_cluster; return; }
    record scale.sessions_after_restart "$(t_status "$T_LEADER" Sessions)" count

    # A wiped follower: removed, its data deleted, joined again as a new
    # member; time until it has applied the leader's commit index.
    local f=-1 id commit joined=""
    for i in "${!T_HTTP[@]}"; do [[ $i == "$T_LEADER" ]] || { f=$i; break; }; done
    for i in "${!T_HTTP[@]}"; do t_wait_ready "$i" 60 || true; done
    id=$(t_status "$f" Id)
    stop_pid "${T_PIDS[f]}" KILL
    T_PIDS[f]=""
    if [[ $(http_code -X DELETE "http://$LEADER/api/v1/cluster/members/$id") != 200 ]]; then
        fail "scale: the leader did not remove node $id"
        t_stop_cluster
        return
    fi
    rm -rf "${T_DIR[f]}"
    commit=$(t_status "$T_LEADER" CommitIndex)
    t0=$(date +%s%N)
    t_start_node "$f" join "127.0.0.1:${T_PEER[T_LEADER]}"
    local deadline=$((SECONDS + 120)) applied first
    while ((SECONDS < deadline)); do
        applied=$(t_status "$f" AppliedIndex)
        if [[ -n $applied ]] && ((applied >= commit)); then
            joined=$(($(date +%s%N) - t0))
            break
        fi
        sleep 0.02
    done
    if [[ -n $joined ]]; then
        first=$(t_status "$f" FirstIndex)
        record scale.wiped_catch_up_ms "$((joined / 1000000))" ms
        record scale.wiped_first_index "$first" index
        record scale.wiped_target_commit "$commit" index
        record scale.wiped_sessions "$(t_status "$f" Sessions)" count
    else
        fail "scale: the wiped follower did not catch up in 120 s (log: ${T_DIR[f]}.log)"
    fi
    t_stop_cluster
}

# ---------------------------------------------------------------------
# The table and the JSON

# si N: 12345678 -> 12.3M.
si() {
    awk -v n="$1" 'BEGIN {
        if (n == "-" || n == "") print "-";
        else if (n >= 1e6) printf "%.1fM", n / 1e6;
        else if (n >= 1e3) printf "%.1fk", n / 1e3;
        else printf "%.3g", n }'
}

TABLE=()   # Markdown rows
TARGETS=() # JSON objects

json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# row MEASURE TICKETD_KEY TICKETD_UNIT OTHER_NAME OTHER_KEY|=VALUE [OP BOUND]:
# one table row: ticketd's figure, the peer's or limit's, their ratio
# and, with OP (>= or <=) and BOUND, whether the target holds.
row() {
    local measure=$1 tkey=$2 unit=$3 oname=$4 okey=$5 op=${6:-} bound=${7:-}
    local t o ratio met="" shown_t shown_o
    t=$(get "$tkey")
    if [[ $okey == =* ]]; then o=${okey#=}; else o=$(get "$okey"); fi
    ratio=$(awk -v a="$t" -v b="$o" 'BEGIN {if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b}')
    if [[ -n $op ]]; then
        met=$(awk -v r="$ratio" -v op="$op" -v b="$bound" 'BEGIN {
            if (r == "-") print "not measured";
            else if ((op == ">=" && r >= b) || (op == "<=" && r <= b)) print "met";
            else print "MISSED" }')
    fi
    if [[ $unit == ms ]]; then shown_t="$t ms"; shown_o="$o ms"; else shown_t="$(si "$t") $unit"; shown_o="$(si "$o") $unit"; fi
    [[ $o == - ]] && shown_o="-"
    [[ $t == - ]] && shown_t="-"
    TABLE+=("| $measure | $shown_t | $oname: $shown_o | ${ratio}× | ${op:+$op $bound×} | $met |")
    if [[ -n $op ]]; then
        TARGETS+=("{\"measure\":$(json_str "$measure"),\"ticketd\":$(json_str "$t"),\"other\":$(json_str "$oname"),\"other_value\":$(json_str "$o"),\"ratio\":$(json_str "$ratio"),\"target\":$(json_str "$op $bound"),\"met\":$(json_str "$met")}")
    fi
}

# info MEASURE VALUE: a row with no comparison.
info() { TABLE+=("| $1 | $2 | | | | |"); }

table() {
    local c
    TABLE=("| measure | ticketd | peer or limit | ratio | target | |" "| --- | --- | --- | --- | --- | --- |")
    for c in 32 64; do
        row "single ID, 3 nodes, $c conns" "ticketd3.ids.c$c.ops_per_sec" req/s "etcd 3-node put" "etcd3.put.c$c.ops_per_sec" ">=" 10
    done
    for c in 32 64; do
        row "single ID, 3 nodes, $c conns" "ticketd3.ids.c$c.ops_per_sec" req/s "Redis INCR, fsync always" "redis.incr.c$c.ops_per_sec" ">=" 2
    done
    for c in 32 64; do
        row "single ID, 1 node, $c conns" "ticketd1.ids.c$c.ops_per_sec" req/s "etcd 1-node put" "etcd1.put.c$c.ops_per_sec"
    done
    for c in 32 64; do
        row "single ID, 3 nodes, $c conns" "ticketd3.ids.c$c.ops_per_sec" req/s "bare tiny_http" "bare.ids.c$c.ops_per_sec"
    done
    for c in 32 64; do
        row "single ID p99, 3 nodes, $c conns" "ticketd3.ids.c$c.p99_ms" ms "etcd 3-node put p99" "etcd3.put.c$c.p99_ms"
    done
    for c in 32 64; do
        row "batches ?count=1000, 3 nodes, $c conns" "ticketd3.count1000.c$c.ops_per_sec" IDs/s "Redis INCRBY 1000" "redis.incrby1000.c$c.ops_per_sec"
        row "batches ?count=1000, 3 nodes, $c conns" "ticketd3.count1000.c$c.ops_per_sec" IDs/s "Redis INCRBY 1000, 16 pipelined" "redis.incrby1000_p16.c$c.ops_per_sec"
    done
    for c in 32 64; do
        row "session opens, 3 nodes, $c conns" "ticketd3.session.c$c.ops_per_sec" /s "etcd lease grants" "etcd3.lease.c$c.ops_per_sec" ">=" 5
    done
    row "lock+unlock, 3 nodes, 32 conns" ticketd3.lock.c32.ops_per_sec pairs/s "etcd lock recipe" etcd3.lock.c32.ops_per_sec ">=" 3
    row "lock+unlock, 3 nodes, 64 conns" ticketd3.lock.c64.ops_per_sec pairs/s "etcd lock recipe" etcd3.lock.c64.ops_per_sec
    row "lock+unlock requests, 3 nodes, 32 conns" ticketd3.lock.c32.reqs_per_sec req/s "write ceiling, wait $(get ceiling.wait_us) µs" handoff_floor.ids.c32.ops_per_sec ">=" 0.75
    row "lock+unlock requests, 3 nodes, 64 conns" ticketd3.lock.c64.reqs_per_sec req/s "write ceiling, wait $(get ceiling.wait_us) µs" handoff_floor.ids.c64.ops_per_sec
    row "lock+unlock requests, 3 nodes, 32 conns" ticketd3.lock.c32.reqs_per_sec req/s "write ceiling, no wait" handoff.ids.c32.ops_per_sec
    row "lock+unlock p99, 3 nodes, 32 conns" ticketd3.lock.c32.p99_ms ms "etcd lock recipe p99" etcd3.lock.c32.p99_ms
    row "lock+unlock, 64 pipelined on 1 conn" ticketd3.lock_pipelined.c1.ops_per_sec pairs/s "turbosquid (quoted, other machine)" "=21400"
    row "leader persist per batch (lock run, mean)" ticketd3.lock.c32.persist_mean_ms ms "fsync floor mean, just before" floor.lock.mean_ms "<=" 1.5
    row "leader persist per batch, lock run with the floor measured during it" ticketd3.lock_with_floor.c32.persist_mean_ms ms "fsync floor mean, during that run" floor.during_lock.mean_ms
    info "leader's fdatasync alone per batch (lock run; with the floor during it)" "$(get ticketd3.lock.c32.sync_mean_ms); $(get ticketd3.lock_with_floor.c32.sync_mean_ms) ms"
    info "entries per persist (lock run)" "$(get ticketd3.lock.c32.entries_per_persist)"
    local l=ticketd3.lock.c32.cpu_us_per_req h=handoff_floor.ids.c32.cpu_us_per_req
    info "CPU per request, lock run, 32 conns (µs)" "leader $(get $l.leader), followers $(get $l.followers), load generator $(get $l.load): $(get $l.total)"
    info "CPU per request, write ceiling with the floor's pause, 32 conns (µs)" "server $(get $h.server), load generator $(get $h.load): $(get $h.total)"
    info "fsync floor, 4 KiB + fdatasync: mean / p99 (start; before the lock run; end)" "$(get floor.start.mean_ms) / $(get floor.start.p99_ms); $(get floor.lock.mean_ms) / $(get floor.lock.p99_ms); $(get floor.end.mean_ms) / $(get floor.end.p99_ms) ms"
    row "lock+unlock max latency, $(si "$SESSIONS") sessions" scale.lock.c32.max_ms ms "target" "=20" "<=" 1
    info "lock+unlock with $(si "$SESSIONS") sessions: pairs/s, p99" "$(si "$(get scale.lock.c32.ops_per_sec)")/s, $(get scale.lock.c32.p99_ms) ms"
    info "resident memory, leader, $(si "$SESSIONS") sessions + locks" "$(get scale.rss_leader_mb) MB"
    info "restart to serving, $(si "$SESSIONS") sessions" "$(get scale.restart_to_serving_ms) ms"
    info "wiped follower catch-up (first index $(get scale.wiped_first_index))" "$(get scale.wiped_catch_up_ms) ms"
    row "failover, median of $(get failover.trials)" failover.median_ms ms "target" "=1500" "<=" 1
    row "failover, max of $(get failover.trials)" failover.max_ms ms "target" "=3000" "<=" 1
    printf '%s\n' "${TABLE[@]}"
}

json() {
    local k first=1
    printf '{\n  "date": %s,\n  "command": %s,\n' "$(json_str "$STARTED_AT")" "$(json_str "$COMMAND")"
    printf '  "git_commit": %s,\n' "$(json_str "$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo -)")"
    printf '  "git_dirty": %s,\n' "$([[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && echo true || echo false)"
    printf '  "ticketd_bin": %s,\n' "$(json_str "$TICKETD")"
    printf '  "machine": {"cores": %s, "cpu_model": %s, "kernel": %s, "load_average_start": %s, "load_average_end": %s, "data_dir_fs": %s},\n' \
        "$(nproc)" "$(json_str "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)")" \
        "$(json_str "$(uname -sr)")" "$(json_str "$LOAD_START")" "$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")" \
        "$(json_str "$(stat -f -c %T "$WORK")")"
    printf '  "versions": {"etcd": %s, "redis": %s},\n' \
        "$(json_str "$(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}')")" \
        "$(json_str "$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')")"
    printf '  "secs_per_scenario": %s, "warmup_secs": %s,\n  "results": {' "$SECS" "$WARMUP"
    for k in "${ORDER[@]}"; do
        ((first)) || printf ','
        first=0
        if [[ ${R[$k]} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then
            printf '\n    %s: {"value": %s, "unit": %s}' "$(json_str "$k")" "${R[$k]}" "$(json_str "${UNIT[$k]}")"
        else
            printf '\n    %s: {"value": %s, "unit": %s}' "$(json_str "$k")" "$(json_str "${R[$k]}")" "$(json_str "${UNIT[$k]}")"
        fi
    done
    printf '\n  },\n  "targets": [\n    '
    local IFS=,
    printf '%s' "${TARGETS[*]}" | sed 's/},{/},\n    {/g'
    printf '\n  ],\n  "failures": ['
    first=1
    for k in "${FAILED[@]}"; do
        ((first)) || printf ','
        first=0
        printf '\n    %s' "$(json_str "$k")"
    done
    printf '\n  ]\n}\n'
}

main() {
    install_peers
    build
    local f
    for f in "$TICKETD" "$LOAD" "$BARE"; do
        [[ -x $f ]] || { log "missing $f"; exit 1; }
    done
    for f in etcd redis-server curl; do
        command -v "$f" >/dev/null || { log "missing $f"; exit 1; }
    done
    [[ $(stat -f -c %T "$WORK") == tmpfs ]] &&
        log "warning: $WORK is on tmpfs: fsyncs cost nothing there; set BENCH_DIR to a disk"
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    log "$(nproc) cores, load average $LOAD_START; ${SECS} s per scenario after ${WARMUP} s warm-up; data in $WORK ($(stat -f -c %T "$WORK"))"
    local part
    for part in $PARTS; do
        case $part in
            limits | ticketd | etcd | redis | failover | scale)
                record "loadavg.$part" "$(cut -d' ' -f1 /proc/loadavg)" load1
                "part_$part"
                ;;
            *) log "unknown part $part (use limits ticketd etcd redis failover scale)"; exit 2 ;;
        esac
    done
    [[ " $PARTS " == *" limits "* ]] && fsync_floor floor.end
    log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    {
        echo "ticketd vs peers and limits, $STARTED_AT, \`$COMMAND\`, $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -sr), load average $LOAD_START at the start; commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo -)"
        echo
        table
    } | tee "$OUT.md"
    json >"$OUT.json"
    log "wrote $OUT.md and $OUT.json"
    if ((${#FAILED[@]})); then
        log "${#FAILED[@]} scenario(s) failed:"
        printf '  %s\n' "${FAILED[@]}" >&2
        exit 1
    fi
}

main "$@"
