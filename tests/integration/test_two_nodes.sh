#!/usr/bin/env bash
# Two jobwire nodes on one PostgreSQL can never both advance a job, and a
# live node takes over the jobs of one that died or left (issue 14), with the
# real http provider, jobwire-sandbox (payments slow enough to be in flight)
# and PostgreSQL:
#
#   1. node A (--node-id a --node-ttl 3s) runs 10 jobs; node B (--node-id b)
#      starts meanwhile: it claims none of them (its log says they belong to a
#      live node) and A's jobs keep advancing on A;
#   2. A is paused (SIGSTOP) past its TTL; B, running all along, marks A dead,
#      takes A's jobs over at runtime and finishes them;
#   3. A, woken (SIGCONT), exits 1 with the "declared dead" line and commits
#      nothing after waking;
#   4. A and B start again, with a TTL (60 s) far longer than the test waits;
#      B runs 10 new jobs and is stopped (SIGTERM) mid-way: it hands its leases
#      back and A takes them over at once, long before any TTL could expire,
#      and finishes them;
#   every journal is gapless and every transaction was charged exactly once
#   (the sandbox's /charges);
#   5. two processes started under one --node-id: the older exits 1 and its log
#      says another process took its id (not that it was declared dead).
#
# Usage: test_two_nodes.sh JOBWIRE JW_MINT_TOKEN SANDBOX  (DATABASE_URL: a PostgreSQL server)
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
jw_init test-two-nodes "${1-}" "${2-}"
SANDBOX=${3-}
[[ -n $SANDBOX && -x $SANDBOX ]] || bail "jobwire-sandbox is executable: '$SANDBOX'"

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
USER_A=$(random_uuid)
TOKEN_A=$(mint "$JWT_SECRET" "$USER_A" 3600)
JOBS=10
TX=6 # transactions per job: enough work to be mid-way when a is paused

sb_port=$(free_port) || bail "a free port for the sandbox"
"$SANDBOX" --listen "127.0.0.1:$sb_port" \
  --sim "latency_ms=250,otp=none,voucher_polls=1,poll_after_ms=100" 2>>"$WORK/sandbox.log" &
PIDS+=("$!")
SB=http://127.0.0.1:$sb_port
deadline=$((SECONDS + 20))
until curl -sf "$SB/healthz" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || bail "the sandbox answers /healthz" "$(tail -5 "$WORK/sandbox.log")"
  sleep 0.05
done

DB=$(jw_fresh_db jw_test_two_nodes) || bail "create database jw_test_two_nodes"
ARGS=(--provider "$SB" --provider-timeout 5000 --retry-scale 0.01 --node-ttl 3s)

# progress: the sum of last_seq over every job (it grows while someone drives them).
progress() { sql "$DB" "SELECT coalesce(sum(last_seq), 0) FROM job_runs"; }
unfinished() { sql "$DB" "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')"; }

# --- 1. A runs the jobs; B starting meanwhile leaves them alone ----------------
start_jobwire "$DB" "$WORK/a.log" "${ARGS[@]}" --node-id a || bail "node a starts" "$START_ERROR"
A_PID=$SERVER_PID
for _ in $(seq "$JOBS"); do
  api POST /api/jobs "$TOKEN_A" '{"transaction_amount":300,"transaction_count":'"$TX"'}'
  [[ $STATUS == 201 ]] || bail "POST /api/jobs on a" "status=$STATUS body=$BODY"
done
check_eq "node a owns its $JOBS jobs" "$JOBS" "$(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node = 'a'")"

start_jobwire "$DB" "$WORK/b.log" "${ARGS[@]}" --node-id b || bail "node b starts" "$START_ERROR"
B_PID=$SERVER_PID
B_BASE=$BASE
check "node b claims none of a's jobs (its log: 'recovered 0 unfinished jobs')" \
  grep -q "recovered 0 unfinished jobs" "$WORK/b.log"
check "...and says they belong to a live node" \
  grep -qE "recovery: [0-9]+ unfinished jobs belong to live nodes; left to them" "$WORK/b.log"
before=$(progress)
advanced() { (($(progress) > before)); }
check "a's jobs keep advancing on a while b runs" wait_until 20 advanced
# b's takeover scans run every second: several have passed by now.
scanned() { (($(metric jobwire_cluster_scans_total "$B_BASE") >= 3)); }
check "b ran its takeover scans meanwhile" wait_until 20 scanned
check_eq "...and took none of a's jobs (a is alive)" 0 "$(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node = 'b'")"

# --- 2. A paused past its TTL; B, running, takes its jobs over -------------------
left=$(unfinished)
((left > 0)) || bail "some of a's jobs are still running when a is paused" "all finished already"
kill -STOP "$A_PID"
pass "a paused (SIGSTOP) with $left jobs unfinished"
a_dead() { [[ $(sql "$DB" "SELECT dead FROM jw_nodes WHERE id = 'a'") == t ]]; }
check "b marks a dead once its heartbeat is older than the TTL" wait_until 30 a_dead
none_of_a() { [[ $(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node = 'a' AND status NOT IN ('completed','failed','cancelled')") == 0 ]]; }
check "b takes over every unfinished job of a, without a restart" wait_until 30 none_of_a
# What b claimed, not $left: a job of a may have finished between the count and the pause.
# b created no job of its own. Its loop resumes a claim after the claim commits: waited for.
took=$(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node = 'b'")
check "b holds the jobs it took over ($took)" test "$took" -ge 1
resumed_logged() { grep -q "takeover: resumed" "$WORK/b.log"; }
check "b's log says so" wait_until 10 resumed_logged
counted() { (($(metric jobwire_takeovers_total "$B_BASE") >= took)); }
check "b counts them (jobwire_takeovers_total)" wait_until 10 counted
all_done() { [[ $(unfinished) == 0 ]]; }
check "b finishes them (within 120 s)" wait_until 120 all_done
check_eq "every job completed" "$JOBS" "$(sql "$DB" "SELECT count(*) FROM job_runs WHERE status = 'completed'")"
journals() { sql "$DB" "SELECT job_run_id || ':' || count(*) || ':' || max(seq) FROM job_events GROUP BY job_run_id ORDER BY 1"; }
journal=$(journals)
check_eq "the journal has every job" "$JOBS" "$(wc -l <<<"$journal")"

# --- 3. A wakes up: it exits and commits nothing ----------------------------------
kill -CONT "$A_PID"
a_gone() { ! kill -0 "$A_PID" 2>/dev/null; }
check "a exits within 10 s of waking" wait_until 10 a_gone
wait "$A_PID" 2>/dev/null
a_status=$?
check_eq "...with status 1" 1 "$a_status"
check "...saying it was declared dead" grep -q "this node was declared dead (paused or cut off past --node-ttl); exiting without committing" "$WORK/a.log"
check_eq "a committed nothing after it woke (every job's journal as before)" "$journal" "$(journals)"

# --- 4. B stops cleanly mid-way: A takes its jobs over at once ---------------------
# Both nodes now run with a 60 s TTL (nodes of one cluster share their TTL: each
# judges the others by its own), far longer than this part waits.
check "b stops with exit status 0 (nothing left to hand back)" stop_jobwire "$B_PID"
start_jobwire "$DB" "$WORK/a2.log" "${ARGS[@]}" --node-id a --node-ttl 60s || bail "node a starts again" "$START_ERROR"
A_PID=$SERVER_PID
start_jobwire "$DB" "$WORK/b2.log" "${ARGS[@]}" --node-id b --node-ttl 60s || bail "node b starts again" "$START_ERROR"
B_PID=$SERVER_PID
B_BASE=$BASE
for _ in $(seq "$JOBS"); do
  BASE=$B_BASE api POST /api/jobs "$TOKEN_A" '{"transaction_amount":300,"transaction_count":'"$TX"'}'
  [[ $STATUS == 201 ]] || bail "POST /api/jobs on b" "status=$STATUS body=$BODY"
done
b_started() { (($(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node = 'b' AND last_seq > 20") >= JOBS)); }
check "b runs the $JOBS new jobs" wait_until 30 b_started
left=$(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node = 'b' AND status NOT IN ('completed','failed','cancelled')")
((left > 0)) || bail "some of b's jobs are still running when b is stopped" "all finished already"
# Its engine's timers keep firing while it stops: none may reach a freed provider.
check "b stops mid-way with exit status 0" stop_jobwire "$B_PID"
check "b handed its leases back as it stopped" grep -qE "node b: [1-9][0-9]* leases handed back" "$WORK/b2.log"
# The TTL is 60 s: only b's hand-back can make a claim b's jobs within this wait.
check "a takes over b's $left unfinished jobs at once (its TTL, 60 s, has not passed)" \
  wait_until 20 test "$(sql "$DB" "SELECT count(*) FROM job_runs WHERE owner_node IS DISTINCT FROM 'a' AND status NOT IN ('completed','failed','cancelled')")" = 0
check "a finishes them (within 120 s)" wait_until 120 all_done
check_eq "every job completed" "$((JOBS * 2))" "$(sql "$DB" "SELECT count(*) FROM job_runs WHERE status = 'completed'")"
check_eq "every journal is gapless: seq 1..last_seq, no duplicate" 0 "$(sql "$DB" "
  SELECT count(*) FROM job_runs j
   WHERE (SELECT count(*) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT count(DISTINCT seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT min(seq) FROM job_events e WHERE e.job_run_id = j.id) <> 1
      OR (SELECT max(seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq")"
charges=$(curl -sf "$SB/charges")
check_eq "no key was charged twice" 0 "$(jq '[.[] | select(.charges > 1)] | length' <<<"$charges")"
check_eq "each of the $((2 * JOBS * TX)) transactions was charged exactly once" "$((2 * JOBS * TX))" \
  "$(jq '[.[] | select(.step_name == "process_payment" and .charges == 1)] | length' <<<"$charges")"
check_eq "...under one key each" "$((2 * JOBS * TX))" \
  "$(jq '[.[] | select(.step_name == "process_payment")] | length' <<<"$charges")"
# Informational: payments sent again under the same key by the node that took over.
echo "# payments sent twice under one key (in flight at a pause or stop, re-sent): $(jq '[.[] | select(.step_name == "process_payment" and .calls > 1)] | length' <<<"$charges")"
check "a stops with exit status 0" stop_jobwire "$A_PID"
check_eq "a's clean stop marks it dead" t "$(sql "$DB" "SELECT dead FROM jw_nodes WHERE id = 'a'")"

# --- 5. Two processes started under one --node-id: the older exits, and says why ------
# Processes under one id are one node (docs/operations.md): the newest registers a new
# incarnation, the older one's heartbeat finds it and the older one exits. Its last line
# must name that cause, not a pause past the TTL that never happened.
start_jobwire "$DB" "$WORK/c1.log" "${ARGS[@]}" --node-id c || bail "c starts" "$START_ERROR"
C1_PID=$SERVER_PID
start_jobwire "$DB" "$WORK/c2.log" "${ARGS[@]}" --node-id c || bail "a second c starts" "$START_ERROR"
C2_PID=$SERVER_PID
c1_gone() { ! kill -0 "$C1_PID" 2>/dev/null; }
check "the older process under id c exits within 10 s of the newer one's start" wait_until 10 c1_gone
wait "$C1_PID" 2>/dev/null
check_eq "...with status 1" 1 "$?"
check "...saying another process took its node id" \
  grep -q "another jobwire process started with this --node-id (c) on the same database and took over its jobs; exiting without committing" "$WORK/c1.log"
check "...and not that it was declared dead" bash -c "! grep -q 'declared dead' '$WORK/c1.log'"
api GET /healthz ""
check_eq "the newer one answers /healthz" 200 "$STATUS"
check "the newer one stops with exit status 0" stop_jobwire "$C2_PID"

check "no jobwire process aborted" bash -c "! grep -qiE 'abort|core dumped' '$WORK/a.log' '$WORK/a2.log' '$WORK/b.log' '$WORK/b2.log' '$WORK/c1.log' '$WORK/c2.log'"
jw_summary
