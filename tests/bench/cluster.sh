#!/usr/bin/env bash
# Durable deltas per second through real jobs with 1, 2, 3 ... jobwire nodes on
# one PostgreSQL (issue 14). For each node count: a fresh database, that many
# nodes (sim provider, loopback, distinct --node-id), JOBS jobs of 50
# transactions created round-robin over the nodes with the admin key, WARMUP
# seconds, then the deltas every node committed in SECONDS (the sum of their
# jobwire_db_deltas_committed_total), and PostgreSQL's CPU over the window
# (its processes' utime+stime from /proc). The nodes are stopped (SIGTERM,
# by PID) and the database dropped after each count.
#
# "handback" instead of node counts: the rolling-deploy figure. Two nodes
# (ttl 60 s, so only the hand-back can move jobs); ROUNDS times, node B runs
# JOBS/6 jobs and gets SIGTERM; the time from the signal until PostgreSQL
# shows every unfinished job of B claimed by A (polled every 10 ms), and until
# B's process exited.
#
# Usage: cluster.sh JOBWIRE [NODE_COUNTS (default "1 2 3") | handback]
#   env: DATABASE_URL (a server; databases jw_bench_cluster_N are made in it),
#        SECONDS_WINDOW (10), WARMUP (3), JOBS (600), SIM (latency_ms=50,otp=none,...)
# Prints one JSON line per node count.
set -euo pipefail
export PGOPTIONS='-c client_min_messages=warning'

BIN=${1:?usage: cluster.sh JOBWIRE [NODE_COUNTS]}
COUNTS=${2:-"1 2 3"}
WINDOW=${SECONDS_WINDOW:-10}
WARMUP=${WARMUP:-3}
JOBS=${JOBS:-600}
SIM=${SIM:-latency_ms=50,otp=none,voucher_polls=1,poll_after_ms=50}
ADMIN_KEY=bench-admin-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
JWT_SECRET=bench-jwt-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
SECRET_KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
: "${DATABASE_URL:?DATABASE_URL must name a PostgreSQL server}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/jw-bench-cluster.XXXXXX")
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '# %s\n' "$*" >&2; }

# The server's URL with another database name.
db_url() {
  local base=${DATABASE_URL%%\?*} q=
  [[ $DATABASE_URL == *\?* ]] && q="?${DATABASE_URL#*\?}"
  printf '%s/%s%s\n' "${base%/*}" "$1" "$q"
}

free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    if ! (: </dev/tcp/127.0.0.1/$p) 2>/dev/null; then
      printf '%s\n' "$p"
      return 0
    fi
  done
  return 1
}

metric() {
  curl -sf --max-time 10 -H "Authorization: Bearer $ADMIN_KEY" "$1/metrics" |
    awk -v m="$2" '$1 == m { print $2 }'
}

# CPU ticks (utime + stime) of the PostgreSQL server's processes: its
# postmaster (postmaster.pid in its data directory) and every child.
pg_cpu() {
  local dir pm total=0 pid
  dir=$(psql -qAt "$DATABASE_URL" -c "SHOW data_directory")
  pm=$(head -1 "$dir/postmaster.pid")
  for pid in "$pm" $(pgrep -P "$pm"); do
    [[ -r /proc/$pid/stat ]] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

run_count() {
  local n=$1 db=jw_bench_cluster_$1 url bases=() i t0 t1 d0 d1 c0 c1 hz
  psql -qAt "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  url=$(db_url "$db")
  PIDS=()
  for ((i = 1; i <= n; i++)); do
    local port
    port=$(free_port) || { log "no free port"; exit 1; }
    DATABASE_URL=$url "$BIN" --listen "127.0.0.1:$port" --admin-key "$ADMIN_KEY" \
      --jwt-secret "$JWT_SECRET" --secret-key "$SECRET_KEY" --node-id "n$i" --sim "$SIM" \
      --retry-scale 0.01 \
      --log-level warn >"$WORK/n$i-$n.log" 2>&1 &
    PIDS+=("$!")
    bases+=("http://127.0.0.1:$port")
    for _ in $(seq 300); do
      curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  for ((i = 0; i < JOBS; i++)); do
    local base=${bases[$((i % n))]} user
    user=$(cat /proc/sys/kernel/random/uuid)
    curl -sf -o /dev/null -X POST -H "Authorization: Bearer $ADMIN_KEY" \
      -H 'Content-Type: application/json' \
      --data-binary '{"user_id":"'"$user"'","transaction_amount":100,"transaction_count":50}' \
      "$base/api/jobs" || { log "creating job $i on $base failed"; exit 1; }
  done
  sleep "$WARMUP"
  sum() {
    local s=0 b v
    for b in "${bases[@]}"; do
      v=$(metric "$b" jobwire_db_deltas_committed_total)
      s=$((s + ${v%.*}))
    done
    echo "$s"
  }
  hz=$(getconf CLK_TCK)
  d0=$(sum)
  c0=$(pg_cpu)
  t0=$(date +%s%N)
  sleep "$WINDOW"
  d1=$(sum)
  c1=$(pg_cpu)
  t1=$(date +%s%N)
  local unfinished
  unfinished=$(psql -qAt "$url" -c "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')")
  jq -cn --argjson nodes "$n" --argjson deltas $((d1 - d0)) --argjson ns $((t1 - t0)) \
    --argjson cpu_ticks $((c1 - c0)) --argjson hz "$hz" --argjson jobs "$JOBS" \
    --argjson unfinished "$unfinished" \
    '{nodes: $nodes, jobs: $jobs, window_s: ($ns / 1e9), deltas: $deltas,
      deltas_per_s: (($deltas / ($ns / 1e9)) | floor),
      pg_cpu_s: ($cpu_ticks / $hz),
      pg_cpu_us_per_delta: (if $deltas > 0 then (($cpu_ticks / $hz) * 1e6 / $deltas * 10 | floor) / 10 else null end),
      jobs_unfinished_at_end: $unfinished}'
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
  psql -qAt "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null
}

start_node() { # start_node URL NAME LOGFILE [flags...]: sets NODE_PID, NODE_BASE
  local url=$1 name=$2 logf=$3 port
  shift 3
  port=$(free_port) || { log "no free port"; exit 1; }
  DATABASE_URL=$url "$BIN" --listen "127.0.0.1:$port" --admin-key "$ADMIN_KEY" \
    --jwt-secret "$JWT_SECRET" --secret-key "$SECRET_KEY" --node-id "$name" --sim "$SIM" \
    --retry-scale 0.01 --log-level warn "$@" >"$logf" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  NODE_BASE=http://127.0.0.1:$port
  for _ in $(seq 300); do
    curl -sf "$NODE_BASE/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "node $name did not get ready"
  exit 1
}

handback() {
  local db=jw_bench_handback url rounds=${ROUNDS:-10} r jobs=$((JOBS / 6)) a_pid b_pid b_base
  psql -qAt "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  url=$(db_url "$db")
  start_node "$url" a "$WORK/a.log" --node-ttl 60s
  a_pid=$NODE_PID
  for ((r = 1; r <= rounds; r++)); do
    start_node "$url" b "$WORK/b.log" --node-ttl 60s
    b_pid=$NODE_PID
    b_base=$NODE_BASE
    for ((i = 0; i < jobs; i++)); do
      curl -sf -o /dev/null -X POST -H "Authorization: Bearer $ADMIN_KEY" \
        -H 'Content-Type: application/json' \
        --data-binary '{"user_id":"'"$(cat /proc/sys/kernel/random/uuid)"'","transaction_amount":100,"transaction_count":50}' \
        "$b_base/api/jobs" || { log "creating a job on b failed"; exit 1; }
    done
    sleep 1
    local held t0 t_claim=0 t_exit=0 left
    held=$(psql -qAt "$url" -c "SELECT count(*) FROM job_runs WHERE owner_node = 'b' AND status NOT IN ('completed','failed','cancelled')")
    t0=$(date +%s%N)
    kill -TERM "$b_pid"
    for _ in $(seq 3000); do
      if ((t_exit == 0)) && ! kill -0 "$b_pid" 2>/dev/null; then t_exit=$(date +%s%N); fi
      left=$(psql -qAt "$url" -c "SELECT count(*) FROM job_runs WHERE owner_node IS DISTINCT FROM 'a' AND status NOT IN ('completed','failed','cancelled')")
      if ((left == 0)); then t_claim=$(date +%s%N); break; fi
      sleep 0.01
    done
    wait "$b_pid" 2>/dev/null || true
    ((t_exit == 0)) && t_exit=$(date +%s%N)
    jq -cn --argjson round "$r" --argjson jobs "$held" --argjson claim_ns $((t_claim ? t_claim - t0 : -1)) \
      --argjson exit_ns $((t_exit - t0)) \
      '{round: $round, jobs_handed_back: $jobs,
        sigterm_to_all_claimed_ms: (if $claim_ns < 0 then null else ($claim_ns / 1e6 | floor) end),
        sigterm_to_exit_ms: ($exit_ns / 1e6 | floor)}'
  done
  kill -TERM "$a_pid" 2>/dev/null || true
  wait "$a_pid" 2>/dev/null || true
  PIDS=()
  psql -qAt "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null
}

if [[ $COUNTS == handback ]]; then
  log "hand-back: ${ROUNDS:-10} rounds of $((JOBS / 6)) jobs on b, then SIGTERM to b"
  handback
  exit 0
fi

for n in $COUNTS; do
  log "$n node(s), $JOBS jobs, ${WARMUP}s warm-up, ${WINDOW}s window, sim $SIM"
  run_count "$n"
done
