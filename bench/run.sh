#!/usr/bin/env bash
# Builds ticketd and the bench programs (release), starts a bare tiny_http
# server, a 1-node and a 3-node ticketd on free loopback ports with
# temporary data dirs, runs the load scenarios against each leader, and
# prints a table against the targets in bench/README.md.
#
# It stops only the processes it started, by PID, on any exit.
#
# Environment:
#   BENCH_SECS     measured seconds per scenario (default 5)
#   BENCH_WARMUP   unmeasured seconds before each (default 1)
#   BENCH_CONNS    connections for the main scenarios (default 32)
#   BENCH_KEEP     1: keep the temp dir (node logs) and print its path
#   BENCH_SKIP_BUILD 1: use the binaries already in target/release
#   BENCH_TICKETD  the ticketd binary to measure (default target/release/ticketd),
#                  e.g. a build of another branch for an A/B comparison
#   BENCH_RUN      which setups to run (default "bare 1node 3node ceiling";
#                  ceiling pauses as long as 3node's persist, or 0.6 ms)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
CONNS=${BENCH_CONNS:-32}
TICKETD=${BENCH_TICKETD:-$ROOT/target/release/ticketd}
LOAD=$ROOT/target/release/examples/load
BARE=$ROOT/target/release/examples/bare_server

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ticketd-bench.XXXXXX")
PIDS=()
declare -A R # results: R[label.scenario.conns.field]

log() { echo "bench: $*" >&2; }

stop_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    if ((${#PIDS[@]})); then stop_pids "${PIDS[@]}"; fi
    PIDS=()
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build() {
    if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then return; fi
    log "building (release)"
    (cd "$ROOT" && cargo build --release --bins --examples)
}

# start_bare [FLAGS...]: starts the bare server; sets BARE_ADDR.
start_bare() {
    "$BARE" --addr 127.0.0.1:0 "$@" >"$WORK/bare.out" 2>"$WORK/bare.err" &
    PIDS+=($!)
    for _ in $(seq 100); do
        BARE_ADDR=$(awk '/^LISTENING/ {print $2}' "$WORK/bare.out")
        [[ -n $BARE_ADDR ]] && return
        sleep 0.05
    done
    log "bare server did not start"; cat "$WORK/bare.err" >&2; exit 1
}

# start_cluster NAME N: starts N nodes; sets NODE_PIDS, HTTP_PORTS.
start_cluster() {
    local name=$1 n=$2 ports peers="" i
    read -r -a ports <<<"$("$LOAD" --free-ports $((2 * n)))"
    NODE_PIDS=(); HTTP_PORTS=()
    for ((i = 0; i < n; i++)); do
        peers+="${peers:+,}127.0.0.1:${ports[i]}"
        HTTP_PORTS+=("${ports[n + i]}")
    done
    # One node runs without a peer list: plain `ticketd` is a working
    # one-node ID server (SPEC).
    [[ $n == 1 ]] && peers=""
    for ((i = 0; i < n; i++)); do
        mkdir -p "$WORK/$name"
        # shellcheck disable=SC2086
        "$TICKETD" $peers --peer_port "${ports[i]}" --http_port "${HTTP_PORTS[i]}" \
            --path "$WORK/$name/n$i" --loglevel 1 2>"$WORK/$name/n$i.log" &
        PIDS+=($!); NODE_PIDS+=($!)
    done
}

# wait_leader: sets LEADER (host:port) and LEADER_PID once a node says
# it leads and serves an ID.
wait_leader() {
    local i port status
    for _ in $(seq 300); do
        for i in "${!HTTP_PORTS[@]}"; do
            port=${HTTP_PORTS[i]}
            status=$(curl -s --max-time 1 "http://127.0.0.1:$port/api/v1/status" || true)
            if [[ $status == *'"Role":"leader"'* ]] &&
                [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -X POST "http://127.0.0.1:$port/") == 200 ]]; then
                LEADER=127.0.0.1:$port
                LEADER_PID=${NODE_PIDS[i]}
                return
            fi
        done
        sleep 0.1
    done
    log "no leader after 30 s"; exit 1
}

# metric NAME: a counter from the leader's /metrics.
metric() {
    local value
    value=$(curl -s --max-time 2 "http://$LEADER/metrics" | awk -v m="$1" '$1 == m {print $2}' || true)
    echo "${value:-0}"
}

# scenario LABEL ADDR SCENARIO CONNS: runs load and records its fields.
scenario() {
    local label=$1 addr=$2 sc=$3 conns=$4 line kv
    # load exits 1 on any error, a lost leader or 0 operations: a
    # scenario that did not serve stops the run instead of printing
    # nonsense in the table.
    if ! line=$("$LOAD" --addr "$addr" --scenario "$sc" --conns "$conns" \
        --secs "$SECS" --warmup "$WARMUP" --label "$label" 2>>"$WORK/load.err"); then
        echo "$line"
        log "scenario $sc ($label, $conns conns) failed:"
        tail -n 3 "$WORK/load.err" >&2
        exit 1
    fi
    echo "$line"
    for kv in $line; do
        [[ $kv == *=* ]] || continue
        R[$label.$sc.$conns.${kv%%=*}]=${kv#*=}
    done
}

# fsync_window LABEL CMD...: runs CMD, records the leader's entries per
# fsync over just that window.
fsync_window() {
    local label=$1 f0 e0 s0 f1 e1 s1
    shift
    f0=$(metric ticketd_fsyncs_total); e0=$(metric ticketd_entries_persisted_total)
    s0=$(metric ticketd_fsync_seconds_total)
    "$@"
    f1=$(metric ticketd_fsyncs_total); e1=$(metric ticketd_entries_persisted_total)
    s1=$(metric ticketd_fsync_seconds_total)
    R[$label.persist_ms]=$(awk -v f=$((f1 - f0)) -v s0="$s0" -v s1="$s1" \
        'BEGIN {printf "%.2f", f ? 1000 * (s1 - s0) / f : 0}')
    R[$label.fsyncs]=$((f1 - f0))
    R[$label.entries_per_fsync]=$(awk -v f=$((f1 - f0)) -v e=$((e1 - e0)) \
        'BEGIN {printf "%.1f", f ? e / f : 0}')
}

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# machine_ticks: "busy idle" clock ticks of the whole machine.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }

# follower_ticks: clock ticks used by every node but the leader.
follower_ticks() {
    local pid sum=0
    for pid in "${NODE_PIDS[@]}"; do
        [[ $pid == "$LEADER_PID" ]] || sum=$((sum + $(cpu_ticks "$pid")))
    done
    echo "$sum"
}

# per_request TICKS REQS: microseconds of CPU per request.
per_request() {
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {if (n > 0) printf "%.0f", 1e6 * t / hz / n; else print "-"}'
}

# cpu_window LABEL SC CONNS CMD...: runs CMD (a scenario SC at CONNS) and
# records the CPU each process used per request: the leader, the other
# nodes, and the rest of the machine (mostly the load generator). The
# warmup is in the window too, at about the measured rate.
cpu_window() {
    local label=$1 sc=$2 conns=$3 leader0 others0 leader1 others1 busy0 idle0 busy1 idle1
    shift 3
    leader0=$(cpu_ticks "$LEADER_PID"); others0=$(follower_ticks)
    read -r busy0 idle0 <<<"$(machine_ticks)"
    "$@"
    leader1=$(cpu_ticks "$LEADER_PID"); others1=$(follower_ticks)
    read -r busy1 idle1 <<<"$(machine_ticks)"
    local reqs followers=$((${#NODE_PIDS[@]} - 1))
    reqs=$(awk -v r="${R[${label%%.*}.$sc.$conns.reqs_per_sec]:-0}" -v s="$SECS" -v w="$WARMUP" \
        'BEGIN {printf "%.0f", r * (s + w)}')
    R[$label.cpu_leader_us]=$(per_request $((leader1 - leader0)) "$reqs")
    if ((followers)); then
        R[$label.cpu_follower_us]=$(per_request $(((others1 - others0) / followers)) "$reqs")
    fi
    R[$label.cpu_rest_us]=$(per_request $((busy1 - busy0 - (leader1 - leader0) - (others1 - others0))) "$reqs")
    R[$label.idle_pct]=$(awk -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) \
        'BEGIN {if (b + i > 0) printf "%.0f%%", 100 * i / (b + i); else print "-"}')
}

stop_cluster() {
    stop_pids "${NODE_PIDS[@]}"
    local keep=() pid dead
    for pid in "${PIDS[@]}"; do
        dead=0
        for n in "${NODE_PIDS[@]}"; do [[ $pid == "$n" ]] && dead=1; done
        ((dead)) || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
}

run_bare() {
    start_bare
    log "bare server at $BARE_ADDR"
    scenario bare "$BARE_ADDR" ids "$CONNS"
    scenario bare "$BARE_ADDR" ids-count=1000 "$CONNS"
    stop_pids "${PIDS[@]}"; PIDS=()
}

# The ceiling for writes on this machine: every request waits for one
# hand-off to another thread and back, as a commit does, with no Raft
# and no disk; then with a pause per batch as long as the 3-node
# leader's measured persist (one fsync, where a commit needs two in
# parallel plus a network round trip).
run_ceiling() {
    local wait_us
    wait_us=$(awk -v ms="${R[3node.lock32.persist_ms]:-0.6}" 'BEGIN {printf "%.0f", 1000 * ms}')
    R[pause.wait_us]=$wait_us
    start_bare --handoff
    log "bare server (--handoff) at $BARE_ADDR"
    scenario handoff "$BARE_ADDR" ids 32
    scenario handoff "$BARE_ADDR" ids 64
    stop_pids "${PIDS[@]}"; PIDS=()
    start_bare --handoff --wait-us "$wait_us"
    log "bare server (--handoff --wait-us $wait_us) at $BARE_ADDR"
    scenario pause "$BARE_ADDR" ids 32
    scenario pause "$BARE_ADDR" ids 64
    stop_pids "${PIDS[@]}"; PIDS=()
}

run_ticketd() {
    local label=$1 n=$2
    start_cluster "$label" "$n"
    wait_leader
    log "$label: leader at $LEADER"
    scenario "$label" "$LEADER" ids "$CONNS"
    scenario "$label" "$LEADER" ids-count=1000 "$CONNS"
    cpu_window "$label.lock32" lock-unlock 32 \
        fsync_window "$label.lock32" scenario "$label" "$LEADER" lock-unlock 32
    if [[ $n -gt 1 ]]; then
        cpu_window "$label.lock64" lock-unlock 64 \
            fsync_window "$label.lock64" scenario "$label" "$LEADER" lock-unlock 64
        R[$label.status]=$(curl -s --max-time 2 "http://$LEADER/api/v1/status")
        R[$label.status_epf]=$(sed -n 's/.*"EntriesPerFsync":\([0-9.]*\).*/\1/p' <<<"${R[$label.status]}")
        fsync_window "$label.session" scenario "$label" "$LEADER" session-open "$CONNS"
    fi
    stop_cluster
}

# get KEY: a recorded field, or "-".
get() { echo "${R[$1]:--}"; }

# pct A B: A as a percentage of B.
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.0f%%", 100 * a / b}'; }

# si N: 12345678 -> 12.3M.
si() {
    awk -v n="$1" 'BEGIN {
        if (n == "-") print "-";
        else if (n >= 1e6) printf "%.1fM", n / 1e6;
        else if (n >= 1e3) printf "%.1fk", n / 1e3;
        else printf "%.0f", n }'
}

table() {
    local c=$CONNS b1 n1 n3
    b1=$(get bare.ids.$c.ops_per_sec); n1=$(get 1node.ids.$c.ops_per_sec); n3=$(get 3node.ids.$c.ops_per_sec)
    printf '\n%-34s %12s %16s %16s   %s\n' "measure ($c conns unless noted)" bare "1 node" "3 nodes" target
    printf '%-34s %12s %16s %16s   %s\n' "POST / req/s" "$(si "$b1")" \
        "$(si "$n1") ($(pct "$n1" "$b1"))" "$(si "$n3") ($(pct "$n3" "$b1"))" \
        "1n >= 70%, 3n >= 60% of bare"
    printf '%-34s %12s %16s %16s   %s\n' "POST / p50 / p99 ms" \
        "$(get bare.ids.$c.p50_ms)/$(get bare.ids.$c.p99_ms)" \
        "$(get 1node.ids.$c.p50_ms)/$(get 1node.ids.$c.p99_ms)" \
        "$(get 3node.ids.$c.p50_ms)/$(get 3node.ids.$c.p99_ms)" "p99 <= 5 ms"
    printf '%-34s %12s %16s %16s   %s\n' "?count=1000 IDs/s" \
        "$(si "$(get bare.ids-count=1000.$c.ops_per_sec)")" \
        "$(si "$(get 1node.ids-count=1000.$c.ops_per_sec)")" \
        "$(si "$(get 3node.ids-count=1000.$c.ops_per_sec)")" ">= 10M"
    printf '%-34s %12s %16s %16s   %s\n' "?count=1000 p99 ms" \
        "$(get bare.ids-count=1000.$c.p99_ms)" "$(get 1node.ids-count=1000.$c.p99_ms)" \
        "$(get 3node.ids-count=1000.$c.p99_ms)" ""
    printf '%-34s %12s %16s %16s   %s\n' "lock+unlock pairs/s (32 conns)" - \
        "$(si "$(get 1node.lock-unlock.32.ops_per_sec)")" \
        "$(si "$(get 3node.lock-unlock.32.ops_per_sec)")" "3n >= 20k"
    printf '%-34s %12s %16s %16s   %s\n' "lock+unlock p99 ms (32 conns)" - \
        "$(get 1node.lock-unlock.32.p99_ms)" "$(get 3node.lock-unlock.32.p99_ms)" "3n <= 20 ms"
    printf '%-34s %12s %16s %16s   %s\n' "lock+unlock pairs/s (64 conns)" - - \
        "$(si "$(get 3node.lock-unlock.64.ops_per_sec)")" "3n >= 20k"
    printf '%-34s %12s %16s %16s   %s\n' "lock+unlock p99 ms (64 conns)" - - \
        "$(get 3node.lock-unlock.64.p99_ms)" "3n <= 20 ms"
    printf '%-34s %12s %16s %16s   %s\n' "write ceiling req/s (32/64 conns)" \
        "$(si "$(get handoff.ids.32.ops_per_sec)")/$(si "$(get handoff.ids.64.ops_per_sec)")" - - \
        "bare --handoff: no Raft, no disk"
    printf '%-34s %12s %16s %16s   %s\n' "  with a persist-long pause" \
        "$(si "$(get pause.ids.32.ops_per_sec)")/$(si "$(get pause.ids.64.ops_per_sec)")" - - \
        "--wait-us $(get pause.wait_us) per batch (20k pairs = 40k req/s)"
    printf '%-34s %12s %16s %16s   %s\n' "lock mean ms, 32 conns (Little)" - \
        "$(little 1node.lock-unlock.32 32)" "$(little 3node.lock-unlock.32 32)" "(conns / req/s)"
    printf '%-34s %12s %16s %16s   %s\n' "lock mean ms, 64 conns (Little)" - - \
        "$(little 3node.lock-unlock.64 64)" ""
    printf '%-34s %12s %16s %16s   %s\n' "CPU us/req lock 32: leader/follower" - \
        "$(get 1node.lock32.cpu_leader_us)" \
        "$(get 3node.lock32.cpu_leader_us)/$(get 3node.lock32.cpu_follower_us)" \
        "rest (load): $(get 1node.lock32.cpu_rest_us) / $(get 3node.lock32.cpu_rest_us)"
    printf '%-34s %12s %16s %16s   %s\n' "CPU us/req lock 64: leader/follower" - - \
        "$(get 3node.lock64.cpu_leader_us)/$(get 3node.lock64.cpu_follower_us)" \
        "rest (load): $(get 3node.lock64.cpu_rest_us), idle $(get 3node.lock64.idle_pct)"
    printf '%-34s %12s %16s %16s   %s\n' "session opens/s" - - \
        "$(si "$(get 3node.session-open.$c.ops_per_sec)")" ">= 19k (5x etcd 3.8k)"
    printf '%-34s %12s %16s %16s   %s\n' "entries/fsync, leader, lock 32" - \
        "$(get 1node.lock32.entries_per_fsync)" "$(get 3node.lock32.entries_per_fsync)" "(group commit)"
    printf '%-34s %12s %16s %16s   %s\n' "entries/fsync, leader, lock 64" - - \
        "$(get 3node.lock64.entries_per_fsync)" ""
    printf '%-34s %12s %16s %16s   %s\n' "ms per persist, leader, lock 32" - \
        "$(get 1node.lock32.persist_ms)" "$(get 3node.lock32.persist_ms)" "(LMDB write + fsync)"
    printf '%-34s %12s %16s %16s   %s\n' "entries/fsync, leader, sessions" - - \
        "$(get 3node.session.entries_per_fsync)" ""
    printf '%-34s %12s %16s %16s   %s\n' "status EntriesPerFsync after locks" - - \
        "$(get 3node.status_epf)" "(cumulative since start)"
    printf '%-34s %12s %16s %16s   %s\n' "errors (all scenarios)" \
        "$(($(errors bare) + $(errors handoff) + $(errors pause)))" "$(errors 1node)" "$(errors 3node)" "0"
}

# little KEY CONNS: the mean latency in ms that CONNS closed-loop
# connections imply at KEY's request rate (Little's law).
little() {
    awk -v r="$(get "$1.reqs_per_sec")" -v c="$2" \
        'BEGIN {if (r == "-" || r == 0) print "-"; else printf "%.2f", 1000 * c / r}'
}

# errors LABEL: the sum of error counts of a label's scenarios.
errors() {
    local k sum=0
    for k in "${!R[@]}"; do
        [[ $k == "$1".*.errors ]] && sum=$((sum + ${R[$k]}))
    done
    echo "$sum"
}

main() {
    build
    for f in "$TICKETD" "$LOAD" "$BARE"; do
        [[ -x $f ]] || { log "missing $f"; exit 1; }
    done
    log "$(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg); ${SECS}s per scenario after ${WARMUP}s warmup"
    local setup
    for setup in ${BENCH_RUN:-bare 1node 3node ceiling}; do
        case $setup in
            bare) run_bare ;;
            ceiling) run_ceiling ;;
            1node) run_ticketd 1node 1 ;;
            3node) run_ticketd 3node 3 ;;
            *) log "unknown setup $setup (use bare, 1node, 3node, ceiling)"; exit 2 ;;
        esac
    done
    table
    if [[ -s $WORK/load.err ]]; then
        log "load generator messages (first 10):"
        head -n 10 "$WORK/load.err" >&2
    fi
}

main "$@"
