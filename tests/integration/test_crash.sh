#!/usr/bin/env bash
# Crash safety: 50 jobs run through the http provider against jobwire-sandbox
# while jobwire is killed with SIGKILL at random moments, 20 times, and
# restarted each time. Afterwards:
#   - every job reached a terminal state (completed: no failure is injected);
#   - no idempotency key was charged twice, and every transaction was
#     charged exactly once (the sandbox counts charges per key);
#   - every job's job_events seq runs 1..last_seq with no gap or duplicate;
#   - every row equals the replay of its events (its newest row_data).
#
# Usage: test_crash.sh JOBWIRE SANDBOX   (DATABASE_URL names a PostgreSQL server)
set -euo pipefail

JOBWIRE=${1:?usage: test_crash.sh JOBWIRE SANDBOX}
SANDBOX=${2:?usage: test_crash.sh JOBWIRE SANDBOX}
: "${DATABASE_URL:?DATABASE_URL must name a PostgreSQL server (scripts/test sets it)}"
JOBS=50
KILLS=20
ADMIN=crash-test-admin-key-0123456789
TMP=$(mktemp -d /tmp/jw-crash.XXXXXX)
JW_PID=
SB_PID=
passed=0
failed=0

cleanup() {
  [[ -n $JW_PID ]] && kill -9 "$JW_PID" 2>/dev/null || true
  [[ -n $SB_PID ]] && kill "$SB_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "not ok - $*"; }
check() { # check DESCRIPTION EXPECTED ACTUAL
  if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}

free_port() {
  local p
  for p in $(shuf -i 20000-39999 -n 50); do
    if ! ss -Hltn "sport = :$p" | grep -q .; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}

# A database of our own: ctest runs test programs side by side.
DB=jw_test_crash
psql "$DATABASE_URL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
URL=${DATABASE_URL%/*}/$DB
sql() { psql "$URL" -AtX -c "$1"; }

SB_PORT=$(free_port)
# Latency long enough that kills land while calls are in flight.
"$SANDBOX" --listen "127.0.0.1:$SB_PORT" --sim "latency_ms=120,otp=none,voucher_polls=1,poll_after_ms=100" \
  2>"$TMP/sandbox.log" &
SB_PID=$!

JW_PORT=$(free_port)
BASE=http://127.0.0.1:$JW_PORT
start_jobwire() {
  "$JOBWIRE" --listen "127.0.0.1:$JW_PORT" --database-url "$URL" --admin-key "$ADMIN" \
    --jwt-secret crash-test-jwt-secret-0123456789 --secret-key "$(printf '%064d' 7)" \
    --provider "http://127.0.0.1:$SB_PORT" --provider-timeout 2000 --retry-scale 0.01 \
    >>"$TMP/jobwire.log" 2>&1 &
  JW_PID=$!
  local deadline=$((SECONDS + 30))
  until curl -sf "$BASE/healthz" >/dev/null 2>&1; do
    if ((SECONDS > deadline)) || ! kill -0 "$JW_PID" 2>/dev/null; then
      echo "jobwire did not come up; log tail:" >&2
      tail -20 "$TMP/jobwire.log" >&2
      exit 1
    fi
    sleep 0.05
  done
}

for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$SB_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
start_jobwire

create_job() {
  local user count
  user=$(cat /proc/sys/kernel/random/uuid)
  count=$((RANDOM % 4 + 1))
  curl -sf -X POST "$BASE/api/jobs" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' \
    -d "{\"user_id\":\"$user\",\"transaction_amount\":1500,\"transaction_count\":$count}" >/dev/null || true
}

# Jobs arrive across the first half of the kills; kills land at random moments.
created=0
for k in $(seq 1 "$KILLS"); do
  while ((created < JOBS * k * 2 / KILLS && created < JOBS)); do
    create_job
    created=$((created + 1))
  done
  sleep "0.$((RANDOM % 5 + 1))$((RANDOM % 10))"
  kill -9 "$JW_PID"
  wait "$JW_PID" 2>/dev/null || true
  start_jobwire
done
check "jobwire was killed and restarted $KILLS times" "$((KILLS + 1))" "$(grep -c 'listening on' "$TMP/jobwire.log")"

# A create answered only after its commit may have been cut by a kill: count what exists.
njobs=$(sql "SELECT count(*) FROM job_runs")
if ((njobs >= JOBS - KILLS && njobs <= JOBS)); then pass "$njobs of $JOBS created jobs were committed"; else fail "job count $njobs"; fi

deadline=$((SECONDS + 180))
while (($(sql "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')") > 0)); do
  if ((SECONDS > deadline)); then break; fi
  sleep 0.5
done
check "every job reached a terminal state" 0 \
  "$(sql "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')")"
check "every job completed (no failure was injected)" "$njobs" \
  "$(sql "SELECT count(*) FROM job_runs WHERE status = 'completed' AND completed_transactions = transaction_count AND progress_percentage = 100")"

# Charges, as the provider saw them.
charges=$(curl -sf "http://127.0.0.1:$SB_PORT/charges")
check "no idempotency key was charged twice" 0 \
  "$(jq '[.[] | select(.charges > 1)] | length' <<<"$charges")"
transactions=$(sql "SELECT coalesce(sum(transaction_count), 0) FROM job_runs")
check "every transaction was charged exactly once" "$transactions" \
  "$(jq '[.[] | select(.step_name == "process_payment" and .charges == 1)] | length' <<<"$charges")"
check "one payment key per transaction (no new key for a retried payment)" "$transactions" \
  "$(jq '[.[] | select(.step_name == "process_payment")] | length' <<<"$charges")"
check "the sandbox saw calls repeated after kills (the test did crash mid-call)" yes \
  "$(jq 'if ([.[] | select(.calls > 1)] | length) > 0 then "yes" else "no" end' -r <<<"$charges")"

check "every job's seq is 1..last_seq without gap or duplicate" 0 "$(sql "
  SELECT count(*) FROM job_runs j
   WHERE (SELECT count(*) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT count(DISTINCT seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT min(seq) FROM job_events e WHERE e.job_run_id = j.id) <> 1
      OR (SELECT max(seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq")"

# The replay: each row's newest event, read back as the table's row type.
replay() { # TABLE
  sql "
  WITH newest AS (
    SELECT DISTINCT ON (e.row_data->>'id') e.row_data::jsonb AS r
      FROM job_events e WHERE e.table_name = '$1'
     ORDER BY e.row_data->>'id', e.job_run_id, e.seq DESC)
  SELECT (SELECT count(*) FROM $1)
       - (SELECT count(*) FROM newest n JOIN $1 t ON t.id = (n.r->>'id')::uuid
           WHERE jsonb_populate_record(t, n.r) IS NOT DISTINCT FROM t)"
}
check "job_runs rows equal the replay of their events" 0 "$(replay job_runs)"
check "job_steps rows equal the replay of their events" 0 "$(replay job_steps)"
check "otp_requests rows equal the replay of their events" 0 "$(replay otp_requests)"
check "no OTP or session token reached a row" 0 \
  "$(sql "SELECT count(*) FROM job_events WHERE row_data::text LIKE '%\"token\"%'")"

echo "$passed passed, $failed failed"
((failed == 0))
