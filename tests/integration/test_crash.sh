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
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

cleanup() {
  [[ -n $JW_PID ]] && kill -9 "$JW_PID" 2>/dev/null || true
  [[ -n $SB_PID ]] && kill "$SB_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

# A database of our own: ctest runs test programs side by side.
URL=$(jw_fresh_db jw_test_crash)

SB_PORT=$(free_port)
# Latency long enough that kills land while calls are in flight.
"$SANDBOX" --listen "127.0.0.1:$SB_PORT" --sim "latency_ms=120,otp=none,voucher_polls=1,poll_after_ms=100" \
  2>"$TMP/sandbox.log" &
SB_PID=$!

JW_PORT=$(free_port)
BASE=http://127.0.0.1:$JW_PORT
relaunch_jobwire() { # on JW_PORT again: the clients keep their URL
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
relaunch_jobwire

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
  relaunch_jobwire
done
check_eq "jobwire was killed and restarted $KILLS times" "$((KILLS + 1))" "$(grep -c 'listening on' "$TMP/jobwire.log")"

# A create answered only after its commit may have been cut by a kill: count what exists.
njobs=$(sql "$URL" "SELECT count(*) FROM job_runs")
if ((njobs >= JOBS - KILLS && njobs <= JOBS)); then pass "$njobs of $JOBS created jobs were committed"; else fail "job count $njobs"; fi

deadline=$((SECONDS + 180))
while (($(sql "$URL" "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')") > 0)); do
  if ((SECONDS > deadline)); then break; fi
  sleep 0.5
done
check_eq "every job reached a terminal state" 0 \
  "$(sql "$URL" "SELECT count(*) FROM job_runs WHERE status NOT IN ('completed','failed','cancelled')")"
check_eq "every job completed (no failure was injected)" "$njobs" \
  "$(sql "$URL" "SELECT count(*) FROM job_runs WHERE status = 'completed' AND completed_transactions = transaction_count AND progress_percentage = 100")"

# Charges, as the provider saw them.
charges=$(curl -sf "http://127.0.0.1:$SB_PORT/charges")
check_eq "no idempotency key was charged twice" 0 \
  "$(jq '[.[] | select(.charges > 1)] | length' <<<"$charges")"
transactions=$(sql "$URL" "SELECT coalesce(sum(transaction_count), 0) FROM job_runs")
check_eq "every transaction was charged exactly once" "$transactions" \
  "$(jq '[.[] | select(.step_name == "process_payment" and .charges == 1)] | length' <<<"$charges")"
check_eq "one payment key per transaction (no new key for a retried payment)" "$transactions" \
  "$(jq '[.[] | select(.step_name == "process_payment")] | length' <<<"$charges")"
check_eq "the sandbox saw calls repeated after kills (the test did crash mid-call)" yes \
  "$(jq 'if ([.[] | select(.calls > 1)] | length) > 0 then "yes" else "no" end' -r <<<"$charges")"

check_eq "every job's seq is 1..last_seq without gap or duplicate" 0 "$(sql "$URL" "
  SELECT count(*) FROM job_runs j
   WHERE (SELECT count(*) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT count(DISTINCT seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq
      OR (SELECT min(seq) FROM job_events e WHERE e.job_run_id = j.id) <> 1
      OR (SELECT max(seq) FROM job_events e WHERE e.job_run_id = j.id) <> j.last_seq")"

# The replay: each row's newest event, read back as the table's row type.
replay() { # TABLE
  sql "$URL" "
  WITH newest AS (
    SELECT DISTINCT ON (e.row_data->>'id') e.row_data::jsonb AS r
      FROM job_events e WHERE e.table_name = '$1'
     ORDER BY e.row_data->>'id', e.job_run_id, e.seq DESC)
  SELECT (SELECT count(*) FROM $1)
       - (SELECT count(*) FROM newest n JOIN $1 t ON t.id = (n.r->>'id')::uuid
           WHERE jsonb_populate_record(t, n.r) IS NOT DISTINCT FROM t)"
}
check_eq "job_runs rows equal the replay of their events" 0 "$(replay job_runs)"
check_eq "job_steps rows equal the replay of their events" 0 "$(replay job_steps)"
check_eq "otp_requests rows equal the replay of their events" 0 "$(replay otp_requests)"
check_eq "no OTP or session token reached a row" 0 \
  "$(sql "$URL" "SELECT count(*) FROM job_events WHERE row_data::text LIKE '%\"token\"%'")"

jw_summary
