#!/usr/bin/env bash
# Integration test: jobwire killed with SIGKILL in the middle of a job, started
# again on the same database, continues the job from PostgreSQL.
#
# Usage: DATABASE_URL=postgresql://... tests/integration/test_api_restart.sh JOBWIRE JW_MINT_TOKEN
#
# What the system guarantees, and what this checks (DESIGN.md "Durability rules"):
#   - After kill -9 and a restart on the same database the job continues from
#     what was committed: the same job id, its seq continuing from the last
#     committed seq (job_events stays exactly 1..N: no gap, no duplicate, no
#     committed row rewritten), OTP requests and steps as they were.
#   - It can then be driven to completed through the API alone (OTP answers
#     taken from the sim inbox, as a person would read their SMS).
#   - A payment that completed before a crash is never sent again (rule 4):
#     its step keeps its one row, key and attempt, and no later process charges it.
#
# Two crashes:
#   1. while the Amazon login OTP waits for the person (the Gyftr one answered);
#   2. while wait_for_vouchers of transaction 1 polls, its payment done.
#
# The OTP across a restart. engine/recover.c recover_job re-arms an OTP request that
# was 'requested' with its remaining time: the job waits for the same
# otp_request_id. The person holds the code the first process's sim sent. The
# sim provider lives inside jobwire, and it accepts only a code it has
# outstanding (docs/providers.md): its records died with the process. So the
# code from before the crash is refused (otp_not_accepted), the sim sends a
# fresh code under a new OTP request at once, and that one completes the
# login - without waiting for the re-armed request's timeout. A provider
# outside the process keeps its records and accepts the old code.
#
# Prints one line per check and "N passed, N failed" last; exits 1 on any failure.
# jq filters are single-quoted on purpose: their $names are jq variables.
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
jw_init test-api-restart "${1-}" "${2-}"

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
USER_A=$(random_uuid)
TOKEN_A=$(mint "$JWT_SECRET" "$USER_A" 3600)
[[ -n $TOKEN_A ]] || bail "jw-mint-token mints a token"
# wait_for_vouchers polls 20 times, 50 ms apart: a window of about a second to crash in.
SIM="latency_ms=5,voucher_polls=20,poll_after_ms=50"
ARGS=(--sim "$SIM" --retry-scale 0.01)

DB=$(jw_fresh_db jw_test_api_restart) || bail "create database jw_test_api_restart on DATABASE_URL"

# journal_digest JOB UPTO: md5 of the journal rows with seq <= UPTO.
journal_digest() {
  sql "$DB" "SELECT md5(string_agg(seq || '|' || table_name || '|' || op || '|' || row_data::text, E'\n' ORDER BY seq))
             FROM job_events WHERE job_run_id = :'id' AND seq <= :'upto'" -v id="$1" -v upto="$2"
}

# journal_shape JOB: "count|distinct|min|max|last_seq".
journal_shape() {
  sql "$DB" "SELECT count(*) || '|' || count(DISTINCT seq) || '|' || min(seq) || '|' || max(seq) || '|' ||
             (SELECT last_seq FROM job_runs WHERE id = :'id') FROM job_events WHERE job_run_id = :'id'" -v id="$1"
}

LOG1=$WORK/run1.log
start_jobwire "$DB" "$LOG1" "${ARGS[@]}" || bail "jobwire (run 1) starts" "$START_ERROR"
pass "jobwire (run 1) starts"
PID1=$SERVER_PID

api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":2}'
check "create a 2-transaction job (201)" [ "$STATUS" = 201 ]
JOB=$(j .job_id)
wait_otp_requests "$JOB" "$TOKEN_A" 30 2 || bail "both login OTPs are requested within 30 s" "$(printf '%.300s' "$BODY")"
job_get "$JOB" "$TOKEN_A"
G_ID=$(j '.otp_requests[] | select(.otp_type == "gyftr_login" and .status == "requested") | .id')
AM_ID=$(j '.otp_requests[] | select(.otp_type == "amazon_login" and .status == "requested") | .id')
inbox_for "$JOB"
AM_CODE=$(otp_code "$AM_ID")
api POST "/api/otp/$G_ID" "$TOKEN_A" "{\"otp\":\"$(otp_code "$G_ID")\"}"
check "the Gyftr login OTP is answered (200)" [ "$STATUS" = 200 ]
deadline=$((SECONDS + 30))
until job_get "$JOB" "$TOKEN_A" && jtrue '.steps[] | select(.step_name == "gyftr_login") | .status == "completed"'; do
  ((SECONDS < deadline)) || break
  sleep 0.05
done
jtrue '(.steps[] | select(.step_name == "gyftr_login") | .status == "completed")
       and (.steps[] | select(.step_name == "amazon_login") | .status == "waiting_otp")
       and (.otp_requests[] | select(.id == $am) | .status == "requested")' --arg am "$AM_ID"
verdict "gyftr_login completed, amazon_login waits for OTP $AM_ID" "${BODY:0:300}"
SEQ1=$(j .seq)

# ---- crash 1: SIGKILL while the Amazon OTP waits ------------------------------------------

kill9_jobwire "$PID1"
shape1=$(journal_shape "$JOB")
S1=${shape1##*|}
[ "$shape1" = "$S1|$S1|1|$S1|$S1" ] && ((S1 >= SEQ1))
verdict "after kill -9: job_events is exactly 1..last_seq (count|distinct|min|max|last_seq: $shape1), at least what was shown (seq $SEQ1)"
digest1=$(journal_digest "$JOB" "$S1")

LOG2=$WORK/run2.log
start_jobwire "$DB" "$LOG2" "${ARGS[@]}" || bail "jobwire (run 2) starts on the same database" "$START_ERROR"
pass "jobwire (run 2) starts on the same database"
PID2=$SERVER_PID
check "run 2 recovered the job at seq $S1" grep -q "engine: recovered job=$JOB status=validating seq=$S1 " "$LOG2"
job_get "$JOB" "$TOKEN_A"
check "the same job, validating, at the last committed seq $S1" \
  st_json 200 '.job_id == $id and .job.status == "validating" and .seq == ($s | tonumber)' --arg id "$JOB" --arg s "$S1"
check "its steps and OTP requests are as committed: Gyftr done, Amazon waiting for the same OTP request" \
  jtrue '(.steps[] | select(.step_name == "gyftr_login") | .status == "completed")
         and (.steps[] | select(.step_name == "amazon_login") | .status == "waiting_otp")
         and ([.otp_requests[] | select(.status == "requested") | .id] == [$am])' --arg am "$AM_ID"
inbox_for "$JOB"
echo "# run 2's sim inbox holds $(jq length <<<"$INBOX") message(s) for the job; the person holds the code from run 1"

# The person types the code received before the crash.
api POST "/api/otp/$AM_ID" "$TOKEN_A" "{\"otp\":\"$AM_CODE\"}"
check "the code from before the crash: the restarted sim has no record of it, 422 otp_not_accepted" \
  st_json 422 '.ok == false and .error == "otp_not_accepted"'
# ...and it sent a fresh code under a new request of the same step, at once.
target=
deadline=$((SECONDS + 10))
while :; do
  job_get "$JOB" "$TOKEN_A"
  ids=$(j '(.steps[] | select(.step_name == "amazon_login") | .id) as $s
           | .otp_requests[] | select(.job_step_id == $s and .status == "requested") | .id')
  inbox_for "$JOB"
  for id in $ids; do
    [[ $id != "$AM_ID" && -n $(otp_code "$id") ]] && target=$id && break
  done
  [[ -n $target ]] && break
  ((SECONDS < deadline)) || break
  sleep 0.1
done
check "a new OTP request of the Amazon login has a fresh code in the inbox" [ -n "$target" ]
if [[ -n $target ]]; then
  check "...a different code" [ "$(otp_code "$target")" != "$AM_CODE" ]
  api POST "/api/otp/$target" "$TOKEN_A" "{\"otp\":\"$(otp_code "$target")\"}"
  check "the fresh code completes the login after the restart: 200 {ok:true}" st_json 200 '.ok == true'
fi
job_get "$JOB" "$TOKEN_A"
check "the journal up to seq $S1 is unchanged by the restart" [ "$(journal_digest "$JOB" "$S1")" = "$digest1" ]

# Drive on until transaction 1's payment is done and its vouchers are being polled.
drive_job "$JOB" "$TOKEN_A" 60 \
  '.steps[] | select(.transaction_index == 1 and .step_name == "wait_for_vouchers") | .status == "in_progress"'
check "driven through the API to transaction 1's wait_for_vouchers (got $DRIVE_STATUS)" [ "$DRIVE_STATUS" = until ]
[[ -n $DRIVE_REJECTED ]] && printf '# refused on the way: %s\n' "$DRIVE_REJECTED"
SEQ2=$(j .seq)

# ---- crash 2: SIGKILL while vouchers are polled, the payment done ---------------------------

kill9_jobwire "$PID2"
shape2=$(journal_shape "$JOB")
S2=${shape2##*|}
[ "$shape2" = "$S2|$S2|1|$S2|$S2" ] && ((S2 >= SEQ2))
verdict "after the 2nd kill -9: job_events is exactly 1..last_seq ($shape2), at least what was shown (seq $SEQ2)"
digest2=$(journal_digest "$JOB" "$S2")
pay1=$(sql "$DB" "SELECT id || '|' || status || '|' || attempt || '|' || idempotency_key || '|' || updated_at
  FROM job_steps WHERE job_run_id = :'id' AND step_name = 'process_payment' AND transaction_index = 1" -v id="$JOB")
check "transaction 1's payment completed before the crash" contains "$pay1" "|completed|"
PAY1_ID=${pay1%%|*}

LOG3=$WORK/run3.log
start_jobwire "$DB" "$LOG3" "${ARGS[@]}" || bail "jobwire (run 3) starts on the same database" "$START_ERROR"
pass "jobwire (run 3) starts on the same database"
PID3=$SERVER_PID
check "run 3 recovered the job at seq $S2" grep -q "engine: recovered job=$JOB status=processing seq=$S2 " "$LOG3"
job_get "$JOB" "$TOKEN_A"
check "the same job, processing, at seq >= $S2" \
  st_json 200 '.job_id == $id and .job.status == "processing" and .seq >= ($s | tonumber)' --arg id "$JOB" --arg s "$S2"
if drive_job "$JOB" "$TOKEN_A" 90 && [[ $DRIVE_STATUS == completed ]]; then
  pass "the job is driven to completed through the API after two crashes"
else
  fail "the job is driven to completed within 90 s after two crashes (status $DRIVE_STATUS)" "$DRIVE_STALL"
fi
check "every OTP answer in run 3 was accepted" [ -z "$DRIVE_REJECTED" ]
job_get "$JOB" "$TOKEN_A"
N=$(j .seq)
check "completed: 2 of 2 transactions, 100 %, 3 + 8 steps completed" \
  jtrue '.job.status == "completed" and .job.completed_transactions == 2 and .job.progress_percentage == 100
         and (.steps | length) == 11 and all(.steps[]; .status == "completed")'
check "no OTP request is left open" jtrue 'all(.otp_requests[]; .status == "verified" or .status == "failed" or .status == "expired")'
check "job_events is exactly seq 1..$N, the snapshot's seq, with no gap or duplicate across both crashes" \
  [ "$(journal_shape "$JOB")" = "$N|$N|1|$N|$N" ]
check "the journal up to seq $S1 is unchanged" [ "$(journal_digest "$JOB" "$S1")" = "$digest1" ]
check "the journal up to seq $S2 is unchanged" [ "$(journal_digest "$JOB" "$S2")" = "$digest2" ]
pay1_after=$(sql "$DB" "SELECT id || '|' || status || '|' || attempt || '|' || idempotency_key || '|' || updated_at
  FROM job_steps WHERE job_run_id = :'id' AND step_name = 'process_payment' AND transaction_index = 1" -v id="$JOB")
check "transaction 1's payment row is the same after the crash: one row, same key, attempt, updated_at" \
  [ "$pay1_after" = "$pay1" ]
touched=$(sql "$DB" "SELECT count(*) FROM job_events WHERE job_run_id = :'id' AND seq > :'s'
  AND table_name = 'job_steps' AND row_data->>'id' = :'pay'" -v id="$JOB" -v s="$S2" -v pay="$PAY1_ID")
check "no delta after the crash touched transaction 1's payment" [ "$touched" = 0 ]
c1=$(grep -c "sim: charged 1500 (job=$JOB step=$PAY1_ID " "$LOG1" "$LOG2" "$LOG3" | awk -F: '{s += $2} END {print s}')
c3=$(grep -c "sim: charged 1500 (job=$JOB " "$LOG3")
all=$(cat "$LOG1" "$LOG2" "$LOG3" | grep -c "sim: charged 1500 (job=$JOB ")
check "transaction 1 was charged once in all three runs, run 3 charged only transaction 2 ($c1, $c3, $all in total)" \
  [ "$c1|$c3|$all" = "1|1|2" ]
stop_jobwire "$PID3"
check "jobwire (run 3) stops cleanly" [ $? = 0 ]

jw_summary
