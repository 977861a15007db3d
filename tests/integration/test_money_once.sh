#!/usr/bin/env bash
# The two critical defects of issue 12, against the real binary, the real http
# provider, jobwire-sandbox and PostgreSQL:
#
#   1. One request must not kill the server: a 64 KB body whose metadata (or
#      start-payment's config) holds 16,300 times 0.1 grows past 256 KiB when
#      jansson writes it back. It is refused with 413 field_too_large naming the
#      limit; the server lives on and no job row is written.
#   2. Money moves once: a payment whose outcome is unknown (the provider timed
#      out on every attempt) fails the job. Retried after the job left memory
#      (--finished-job-ttl), and again after kill -9 and a restart, the payment
#      goes out under the same idempotency key: the sandbox charges it once.
#      A payment the provider refused (a non-retryable error reply) is retried
#      under a fresh key, so a retry after a definite refusal can still pay.
#
# Usage: test_money_once.sh JOBWIRE JW_MINT_TOKEN SANDBOX  (DATABASE_URL: a PostgreSQL server)
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
jw_init test-money-once "${1-}" "${2-}"
SANDBOX=${3-}
[[ -n $SANDBOX && -x $SANDBOX ]] || bail "jobwire-sandbox is executable: '$SANDBOX'"

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
USER_A=$(random_uuid)
TOKEN_A=$(mint "$JWT_SECRET" "$USER_A" 3600)

# start_sandbox: a jobwire-sandbox on a free port (SB, SB_PID); no OTPs.
start_sandbox() {
  local port deadline
  port=$(free_port) || bail "a free port for the sandbox"
  "$SANDBOX" --listen "127.0.0.1:$port" --sim "latency_ms=5,otp=none,voucher_polls=0" \
    2>>"$WORK/sandbox.log" &
  SB_PID=$!
  PIDS+=("$SB_PID")
  SB=http://127.0.0.1:$port
  deadline=$((SECONDS + 20))
  until curl -sf "$SB/healthz" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || bail "the sandbox answers /healthz" "$(tail -5 "$WORK/sandbox.log")"
    sleep 0.05
  done
}

fault() { curl -sf -X POST "$SB/faults" -H 'Content-Type: application/json' -d "$1" >/dev/null; }

# charges_of JOB TX: how many times the sandbox charged transaction TX of JOB, over every key.
charges_of() {
  curl -sf "$SB/charges" | jq --arg j "$1" --argjson t "$2" \
    '[.[] | select(.job_id == $j and .transaction_index == $t) | .charges] | add // 0'
}

# keys_of JOB TX: the distinct keys the sandbox saw for TX's payment.
keys_of() {
  curl -sf "$SB/charges" | jq --arg j "$1" --argjson t "$2" \
    '[to_entries[] | select(.value.job_id == $j and .value.transaction_index == $t
       and .value.step_name == "process_payment") | .key] | length'
}

new_job() { # -> JOB_ID
  api POST /api/jobs "$TOKEN_A" '{"transaction_amount":700,"transaction_count":1}'
  [[ $STATUS == 201 || $STATUS == 200 || $STATUS == 202 ]] || bail "POST /api/jobs" "status=$STATUS body=$BODY"
  JOB_ID=$(j .job_id)
}

retry_job() { api_raw POST "/api/jobs/$1/retry" "$TOKEN_A" --data-binary ''; }

evicted_count() {
  api GET /metrics "$ADMIN_KEY"
  awk '$1 == "jobwire_jobs_evicted_total" { print $2 }' <<<"$BODY"
}

# wait_evicted N: until /metrics counts N evicted jobs (bounded).
wait_evicted() {
  local deadline=$((SECONDS + 20))
  while [[ $(evicted_count) != "$1" ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

DB=$(jw_fresh_db jw_test_money_once) || bail "create database jw_test_money_once"
start_sandbox
JW_ARGS=(--provider "$SB" --provider-timeout 500 --retry-scale 0.01 --finished-job-ttl 1)
start_jobwire "$DB" "$WORK/jobwire.log" "${JW_ARGS[@]}" || bail "jobwire starts" "$START_ERROR"
pass "jobwire starts against the sandbox"

# --- 1. a body whose encoding grows past the row limit ------------------------
python3 -c 'import json;print(json.dumps({"transaction_amount":1,"transaction_count":1,"metadata":{"a":[0.1]*16300}},separators=(",",":")))' >"$WORK/meta.json"
python3 -c 'import json;print(json.dumps({"userId":None,"config":{"transactionAmount":1,"transactionCount":1,"a":[0.1]*16300}},separators=(",",":")))' >"$WORK/config.json"
check "the metadata body is under --max-body (64 KiB) as sent" test "$(stat -c %s "$WORK/meta.json")" -lt 65536
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json' --data-binary @"$WORK/meta.json"
expect_error "metadata of 16,300 x 0.1: 413 naming the limit" 413 field_too_large metadata 16384
api_raw POST /api/jobs/start-payment "$TOKEN_A" -H 'Content-Type: application/json' --data-binary @"$WORK/config.json"
expect_error "start-payment's config of 16,300 x 0.1: 413 naming the limit" 413 field_too_large config 16384
check "the server is alive after both" kill -0 "$SERVER_PID"
api GET /healthz ""
check "...and answers /healthz" test "$STATUS" = 200
check "no job row was written" test "$(sql "$DB" 'SELECT count(*) FROM job_runs')" = 0
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1,"transaction_count":1,"metadata":{"a":[0.1,0.2],"note":"fine"}}'
check "metadata within the limit is taken" test "$STATUS" = 201
wait_job_status "$(j .job_id)" "$TOKEN_A" 30 completed >/dev/null
check "...and its job completes" test "$(j .job.status)" = completed
wait_evicted 1 || fail "the completed job leaves memory"

# --- 2. a payment whose outcome is unknown, retried after eviction --------------
# Three held replies: every attempt of the payment times out, the sandbox
# charges each time the held request completes (the first under this key).
fault '{"step":"process_payment","mode":"timeout","count":3,"delay_ms":1500}'
new_job
wait_job_status "$JOB_ID" "$TOKEN_A" 60 failed >/dev/null || fail "the payment's timeouts fail the job" "$BODY"
check "...its payment step is failed with its outcome unknown (on its row)" test \
  "$(sql "$DB" "SELECT status || ' ' || outcome_unknown FROM job_steps WHERE job_run_id = :'j' AND step_name = 'process_payment'" -v j="$JOB_ID")" = "failed true"
wait_evicted 2 || fail "the failed job leaves memory (--finished-job-ttl 1)"
# The sandbox performs a held call at once and only delays its answer.
check "the sandbox charged the held payment once" test "$(charges_of "$JOB_ID" 1)" = 1
retry_job "$JOB_ID"
check "retry of the evicted job is accepted" test "$STATUS" = 200
wait_job_status "$JOB_ID" "$TOKEN_A" 30 completed >/dev/null || fail "the retried job completes" "$BODY"
check "after eviction: the transaction is charged once" test "$(charges_of "$JOB_ID" 1)" = 1
check "...under one idempotency key" test "$(keys_of "$JOB_ID" 1)" = 1

# --- 2b. the same across kill -9 -----------------------------------------------
wait_evicted 3 || true
fault '{"step":"process_payment","mode":"timeout","count":3,"delay_ms":1500}'
new_job
wait_job_status "$JOB_ID" "$TOKEN_A" 60 failed >/dev/null || fail "kill -9 case: the job fails" "$BODY"
kill9_jobwire "$SERVER_PID"
start_jobwire "$DB" "$WORK/jobwire.log" "${JW_ARGS[@]}" || bail "jobwire restarts after kill -9" "$START_ERROR"
retry_job "$JOB_ID"
check "retry after kill -9 is accepted" test "$STATUS" = 200
wait_job_status "$JOB_ID" "$TOKEN_A" 30 completed >/dev/null || fail "kill -9 case: the retried job completes" "$BODY"
check "after kill -9: the transaction is charged once" test "$(charges_of "$JOB_ID" 1)" = 1
check "...under one idempotency key" test "$(keys_of "$JOB_ID" 1)" = 1

# --- 2c. a definite refusal gets a fresh key -----------------------------------
# The sandbox's http_400 fault is not a contract refusal (no error body): the
# outcome stays unknown. A sim-level refusal: fail_rate through a second sandbox.
kill -KILL "$SB_PID" 2>/dev/null
{ wait "$SB_PID"; } 2>/dev/null
stop_jobwire "$SERVER_PID" >/dev/null
port=$(free_port)
"$SANDBOX" --listen "127.0.0.1:$port" \
  --sim "latency_ms=5,otp=none,voucher_polls=0,fail_rate=1,fail_steps=process_payment,fail_retryable=0" \
  2>>"$WORK/sandbox.log" &
SB_PID=$!
PIDS+=("$SB_PID")
SB=http://127.0.0.1:$port
until curl -sf "$SB/healthz" >/dev/null 2>&1; do sleep 0.05; done
JW_ARGS=(--provider "$SB" --provider-timeout 500 --retry-scale 0.01 --finished-job-ttl 1)
start_jobwire "$DB" "$WORK/jobwire.log" "${JW_ARGS[@]}" || bail "jobwire starts on the refusing sandbox" "$START_ERROR"
new_job
wait_job_status "$JOB_ID" "$TOKEN_A" 30 failed >/dev/null || fail "a refused payment fails the job" "$BODY"
check "...its outcome is known (false on its row)" test \
  "$(sql "$DB" "SELECT outcome_unknown FROM job_steps WHERE job_run_id = :'j' AND step_name = 'process_payment'" -v j="$JOB_ID")" = f
key1=$(sql "$DB" "SELECT idempotency_key FROM job_steps WHERE job_run_id = :'j' AND step_name = 'process_payment'" -v j="$JOB_ID")
kill9_jobwire "$SERVER_PID"
start_jobwire "$DB" "$WORK/jobwire.log" "${JW_ARGS[@]}" || bail "jobwire restarts" "$START_ERROR"
retry_job "$JOB_ID"
check "retry of the refused payment is accepted" test "$STATUS" = 200
wait_job_status "$JOB_ID" "$TOKEN_A" 30 failed >/dev/null || fail "the retried refused payment fails again" "$BODY"
key2=$(sql "$DB" "SELECT idempotency_key FROM job_steps WHERE job_run_id = :'j' AND step_name = 'process_payment'" -v j="$JOB_ID")
check "a refused payment is retried under a fresh key ($key1 -> $key2)" test "$key1" != "$key2"

check "no jobwire process aborted (no 'Aborted' or signal in the log)" \
  bash -c "! grep -qiE 'abort|core dumped' '$WORK/jobwire.log'"
jw_summary
