#!/usr/bin/env bash
# A PostgreSQL outage longer than --node-ttl kills no node (issue 14): during
# it no node can renew its heartbeat, so once PostgreSQL is back every
# heartbeat is old - and the first node whose takeover scan runs must not
# declare the others dead before they reconnected and renewed theirs.
#
#   two nodes (--node-ttl 2s) run jobs; PostgreSQL is stopped for 5 s (over
#   twice the TTL) and started again; then, over 12 s (the TTL plus the
#   reconnect backoff, past every node's grace): both nodes still run, neither
#   declared the other dead, neither logged "declared dead", and every job
#   completes with a gapless journal.
#
# It stops the cluster every other test uses: RUN_SERIAL in tests/CMakeLists.txt.
# Usage: test_nodes_outage.sh JOBWIRE JW_MINT_TOKEN  (DATABASE_URL, JW_PG_SCRIPT, JW_PG_DIR)
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
jw_init test-nodes-outage "${1-}" "${2-}"
[[ -n ${JW_PG_SCRIPT-} && -x ${JW_PG_SCRIPT-} ]] ||
  bail "JW_PG_SCRIPT names the cluster's script (run through scripts/test)" "'${JW_PG_SCRIPT-}'"

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
USER_A=$(random_uuid)
TOKEN_A=$(mint "$JWT_SECRET" "$USER_A" 3600)
JOBS=6

DB=$(jw_fresh_db jw_test_nodes_outage) || bail "create database jw_test_nodes_outage"
# A slow sim: the jobs are still running when PostgreSQL goes away.
ARGS=(--sim "latency_ms=300,otp=none" --retry-scale 0.01 --node-ttl 2s)
pg_up=1
restore_pg() { ((pg_up)) || "$JW_PG_SCRIPT" start >/dev/null 2>&1; }
trap 'restore_pg; jw_cleanup' EXIT

unfinished() { sql "$DB" "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')"; }

start_jobwire "$DB" "$WORK/a.log" "${ARGS[@]}" --node-id a || bail "node a starts" "$START_ERROR"
A_PID=$SERVER_PID
A_BASE=$BASE
start_jobwire "$DB" "$WORK/b.log" "${ARGS[@]}" --node-id b || bail "node b starts" "$START_ERROR"
B_PID=$SERVER_PID
B_BASE=$BASE
for i in $(seq "$JOBS"); do
  if ((i % 2)); then BASE=$A_BASE; else BASE=$B_BASE; fi
  api POST /api/jobs "$TOKEN_A" '{"transaction_amount":300,"transaction_count":8}'
  [[ $STATUS == 201 ]] || bail "POST /api/jobs" "status=$STATUS body=$BODY"
done
check_eq "each node owns half of the jobs" "$((JOBS / 2)) $((JOBS / 2))" \
  "$(sql "$DB" "SELECT count(*) FILTER (WHERE owner_node = 'a') || ' ' || count(*) FILTER (WHERE owner_node = 'b') FROM job_runs")"

"$JW_PG_SCRIPT" stop >/dev/null 2>&1 || bail "stop PostgreSQL"
pg_up=0
pass "PostgreSQL stopped with $JOBS jobs running"
sleep 5 # the outage itself: over twice the 2 s TTL
"$JW_PG_SCRIPT" start >/dev/null 2>&1 || bail "start PostgreSQL again"
pg_up=1
pass "PostgreSQL started again"
renewed() {
  local n
  n=$(sql "$DB" "SELECT count(*) FROM jw_nodes WHERE heartbeat_at > now() - interval '2 s' AND NOT dead" 2>/dev/null)
  [[ $n == 2 ]]
}
check "both nodes renew their heartbeats" wait_until 30 renewed
# Past every node's grace (TTL + 5 s of reconnect backoff from its reconnection):
# had a scan declared the other node dead, that node would have exited by now.
scans_after() { (($(metric jobwire_cluster_scans_total "$A_BASE") > a_scans + 5 && $(metric jobwire_cluster_scans_total "$B_BASE") > b_scans + 5)); }
a_scans=$(metric jobwire_cluster_scans_total "$A_BASE")
b_scans=$(metric jobwire_cluster_scans_total "$B_BASE")
sleep 8
check "both nodes kept scanning for dead nodes meanwhile" scans_after
check "node a still runs" kill -0 "$A_PID"
check "node b still runs" kill -0 "$B_PID"
check_eq "nobody was declared dead" 0 "$(sql "$DB" "SELECT count(*) FROM jw_nodes WHERE dead")"
check "neither logged 'declared dead'" bash -c "! grep -q 'declared dead' '$WORK/a.log' '$WORK/b.log'"
all_done() { [[ $(unfinished) == 0 ]]; }
check "every job completes (within 120 s)" wait_until 120 all_done
check_eq "every job completed" "$JOBS" "$(sql "$DB" "SELECT count(*) FROM job_runs WHERE status = 'completed'")"
check_eq "every journal is gapless: seq 1..last_seq, no duplicate" 0 "$(sql "$DB" "
  SELECT count(*) FROM job_runs j
   WHERE (SELECT count(*) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT count(DISTINCT seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq")"
check "a stops with exit status 0" stop_jobwire "$A_PID"
check "b stops with exit status 0" stop_jobwire "$B_PID"
jw_summary
