#!/usr/bin/env bash
# Integration test of the job API (docs/api.md): the real jobwire binary with
# the sim provider, real curl over 127.0.0.1, real PostgreSQL checked with psql.
#
# Usage: DATABASE_URL=postgresql://... tests/integration/test_api.sh JOBWIRE JW_MINT_TOKEN
#
# DATABASE_URL names a PostgreSQL server; this script creates its own databases
# on it (jw_test_api, jw_test_api_otp, jw_test_api_retry), because ctest runs
# scripts in parallel. Servers:
#   main     every route's success path and bad inputs, a whole 4-transaction
#            job driven through the API, OTP handling, lists, cancel, retry
#            refusals, the original design's routes
#   otp      --otp-timeout-login 1: login OTPs nobody answers fail the job
#   fail     a sim that fails redeem_amazon_vouchers of the 2nd transaction
#            (not retryable), then the same database under a sim without the
#            failure: POST retry resumes without repeating a finished transaction
# Users: A (most jobs; once A's first job logged in, A's later jobs reuse both
# logins and ask only for payment OTPs), B (the other user of every 403/404),
# O and C (fresh users whose jobs must ask for login OTPs).
#
# Prints one line per check and "N passed, N failed" last; exits 1 on any failure.
#
# jq filters are single-quoted on purpose: their $names are jq variables.
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
jw_init test-api "${1-}" "${2-}"

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
USER_A=$(random_uuid)
USER_B=$(random_uuid)
USER_O=$(random_uuid) # owns the OTP test job
USER_C=$(random_uuid) # owns the job cancelled while it waits for its login OTPs
USER_P=$(random_uuid) # owns the jobs of the pipelined requests
TOKEN_A=$(mint "$JWT_SECRET" "$USER_A" 3600)
TOKEN_B=$(mint "$JWT_SECRET" "$USER_B" 3600)
TOKEN_O=$(mint "$JWT_SECRET" "$USER_O" 3600)
TOKEN_C=$(mint "$JWT_SECRET" "$USER_C" 3600)
TOKEN_P=$(mint "$JWT_SECRET" "$USER_P" 3600)
EXPIRED_A=$(mint "$JWT_SECRET" "$USER_A" -600)
FOREIGN_A=$(mint "other-secret-$(random_hex 8)" "$USER_A" 3600)
GARBAGE="garbage-$(random_hex 12)"
SECRETS=("$ADMIN_KEY" "$JWT_SECRET" "$SECRET_KEY" "$TOKEN_A" "$TOKEN_B" "$TOKEN_O" "$TOKEN_C"
  "$TOKEN_P" "$EXPIRED_A" "$FOREIGN_A" "$GARBAGE")
[[ -n $TOKEN_A && -n $TOKEN_B && -n $TOKEN_O && -n $TOKEN_C && -n $TOKEN_P && -n $EXPIRED_A &&
  -n $FOREIGN_A ]] || bail "jw-mint-token mints tokens"

SIM_FAST="latency_ms=5,voucher_polls=1,poll_after_ms=20"
MAX_BODY=2048

DB_MAIN=$(jw_fresh_db jw_test_api) || bail "create database jw_test_api on DATABASE_URL"
LOG_MAIN=$WORK/main.log
start_jobwire "$DB_MAIN" "$LOG_MAIN" --sim "$SIM_FAST" --retry-scale 0.01 --max-body "$MAX_BODY" ||
  bail "jobwire (main) starts and is ready within 30 s" "$START_ERROR"
pass "jobwire (main) starts and is ready within 30 s"
MAIN_PID=$SERVER_PID

VALID='{"transaction_amount":1500,"transaction_count":1}'

# raw_request FILE: sends FILE's bytes to the server in one write, so none of
# them comes after an answer that closes the connection (the close would reset
# it); sets STATUS, HEADERS (lower-case) and BODY from the answer.
raw_request() {
  : >"$WORK/raw"
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && cat "$1" >&3 && timeout 20 cat <&3 >"$WORK/raw") 2>/dev/null
  STATUS=$(head -1 "$WORK/raw" | cut -d' ' -f2)
  HEADERS=$(sed '/^\r$/q' "$WORK/raw" | tr -d '\r' | tr '[:upper:]' '[:lower:]')
  BODY=$(sed '1,/^\r$/d' "$WORK/raw")
}

# chunked_post PATH TOKEN BODY: a raw POST with Content-Type: application/json and
# Transfer-Encoding: chunked (raw_request). BODY is sent as it is written, chunk
# framing included, its \r and \n made bytes (printf %b).
chunked_post() {
  printf 'POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%b' \
    "$1" "$2" "$3" >"$WORK/raw-request"
  raw_request "$WORK/raw-request"
}

# chunk TEXT: TEXT (ASCII, no backslash) as one chunk, written for chunked_post.
chunk() { printf '%x\\r\\n%s\\r\\n' "${#1}" "$1"; }

# ==== authentication ==============================================================

api POST /api/jobs "" "$VALID"
expect_error "POST /api/jobs without Authorization is 401" 401 unauthorized
api POST /api/jobs "$GARBAGE" "$VALID"
expect_error "a garbage bearer token is 401" 401 unauthorized
api POST /api/jobs "$EXPIRED_A" "$VALID"
expect_error "an expired token is 401 and says it expired" 401 unauthorized expired
api POST /api/jobs "$FOREIGN_A" "$VALID"
expect_error "a token signed with another secret is 401" 401 unauthorized
api_raw POST /api/jobs "" -H "Authorization: Basic $(printf 'a:b' | base64)" \
  -H 'Content-Type: application/json' --data-binary "$VALID"
expect_error "a Basic Authorization header is 401" 401 unauthorized
api GET /api/jobs "admin-$(random_hex 16)"
expect_error "a wrong admin key is 401" 401 unauthorized
api GET /api/jobs/"$(random_uuid)" ""
expect_error "GET /api/jobs/{id} without Authorization is 401" 401 unauthorized

# ==== POST /api/jobs ================================================================

jobs_before=$(sql "$DB_MAIN" "SELECT count(*) FROM job_runs")

api POST /api/jobs "$TOKEN_A" "$VALID"
check "POST /api/jobs with a user token is 201" [ "$STATUS" = 201 ]
check "201 is application/json" contains "$CTYPE" application/json
JOB_CREATE=$(j .job_id)
check "201 carries job_id (a lower-case UUID)" is_uuid "$JOB_CREATE"
check "201 carries job.status (initiated or validating)" \
  jtrue '.job.status == "initiated" or .job.status == "validating"'
check "201 carries the job's steps (the 3 validation steps)" \
  jtrue '(.steps | type == "array") and ([.steps[].step_name] | sort == ["amazon_login","availability_check","gyftr_login"])'
check "201's job belongs to the token's user, with the amount and count sent" \
  jtrue '.job.id == $id and .job.user_id == $u and .job.transaction_amount == 1500 and .job.transaction_count == 1' \
  --arg id "$JOB_CREATE" --arg u "$USER_A"
seq201=$(j .seq)
# The answer comes after the commit: what it shows is in PostgreSQL already.
committed=$(sql "$DB_MAIN" "SELECT last_seq, (SELECT count(*) FROM job_events WHERE job_run_id = r.id)
                            FROM job_runs r WHERE id = :'id'" -v id="$JOB_CREATE")
[ -n "$committed" ] && ((${committed%%|*} >= seq201 && ${committed##*|} >= seq201 && seq201 >= 1))
verdict "201 comes after the commit: job_runs.last_seq and job_events reach the answer's seq ($seq201; db: ${committed:-no row})"

api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json; charset=utf-8' --data-binary "$VALID"
check "Content-Type: application/json; charset=utf-8 is accepted (201)" [ "$STATUS" = 201 ]
! has_header "connection: close"
verdict "... and a body with Content-Length keeps the connection open"

# Chunked bodies (RFC 9112 section 7.1) are read as well as Content-Length ones.
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
  --data-binary '{"transaction_amount":1500,"transaction_count":1,"metadata":{"sent":"chunked"}}'
check "a chunked POST /api/jobs creates the job (201, its metadata as sent; got $STATUS)" \
  st_json 201 '.job.metadata == {"sent":"chunked"} and .job.user_id == $u' --arg u "$USER_A"
check "... and closes the connection (lws cannot be told where the body ended)" \
  has_header "connection: close"
# Several chunks, an extension and a trailer field, as curl does not send them.
chunked_post /api/jobs "$TOKEN_A" "$(chunk '{"transaction_amount":1500,')15;note=x\r\n\"transaction_count\":1\r\n$(
  chunk ',"metadata":{"chunks":3}}')0\r\nX-Checksum: none\r\n\r\n"
check "a body of three chunks with an extension and a trailer creates the job (got $STATUS)" \
  st_json 201 '.job.metadata == {"chunks":3} and .job.user_id == $u' --arg u "$USER_A"

# Requests in one write (pipelined, RFC 9112 section 9.3.2). What follows a body is the
# next request; a request with a body behind another one is not read (lws 4.1.6 takes
# its headers for its body and would spin): the connection closes, nothing run.
post_request() { # post_request PATH TOKEN BODY: a POST with Content-Length, to stdout
  printf 'POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "${#3}" "$3"
}
# The status codes of the answers raw_request got, in order.
statuses() { grep -ao 'HTTP/1\.1 [0-9][0-9][0-9]' "$WORK/raw" | cut -d' ' -f2 | paste -sd' '; }
p_jobs() { sql "$DB_MAIN" "SELECT count(*) FROM job_runs WHERE user_id = :'u'" -v u="$USER_P"; }
GET_HEALTH=$'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'
GET_HEALTH_CLOSE=$'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'

{ post_request /api/jobs "$TOKEN_P" "$VALID" && printf '\r\n'; } >"$WORK/raw-request"
raw_request "$WORK/raw-request"
check "a POST /api/jobs with a stray CRLF after its body is answered 201 (got: $(statuses))" \
  [ "$(statuses)" = 201 ]
check "... and creates one job, not one per pass over the CRLF (got $(p_jobs))" [ "$(p_jobs)" = 1 ]
{ post_request /api/jobs "$TOKEN_P" "$VALID" && printf '%s' "$GET_HEALTH_CLOSE"; } >"$WORK/raw-request"
raw_request "$WORK/raw-request"
check "a POST and a GET in one write are both answered, in order (got: $(statuses))" \
  [ "$(statuses)" = "201 200" ]
check "... the POST once (2 jobs now; got $(p_jobs))" [ "$(p_jobs)" = 2 ]
{ printf '%s' "$GET_HEALTH" && post_request /api/jobs "$TOKEN_P" "$VALID"; } >"$WORK/raw-request"
raw_request "$WORK/raw-request"
check "a GET then a POST with a body in one write: the GET answered, then closed (got: $(statuses))" \
  [ "$(statuses)" = 200 ]
{ post_request /api/jobs "$TOKEN_P" "$VALID" && post_request /api/jobs "$TOKEN_P" "$VALID"; } >"$WORK/raw-request"
raw_request "$WORK/raw-request"
check "two POSTs in one write: the first answered 201, then closed (got: $(statuses))" \
  [ "$(statuses)" = 201 ]
check "... the pipelined POSTs behind another did not run (3 jobs; got $(p_jobs))" [ "$(p_jobs)" = 3 ]
api GET /healthz ""
check "... and the server still answers (/healthz 200, got $STATUS)" [ "$STATUS" = 200 ]
check "... and logged why it closed" grep -q "a request with a body pipelined behind another" "$LOG_MAIN"
# curl --http2 on http:// asks for Upgrade: h2c; the routes speak HTTP/1.1 only.
h2c=$(curl -sS --http2 -m 10 -o /dev/null -w '%{http_code} %{http_version}' "$BASE/healthz" 2>&1)
check "Upgrade: h2c is ignored: the answer is HTTP/1.1 (got: $h2c)" [ "$h2c" = "200 1.1" ]

api POST /api/jobs "$TOKEN_A" '{"transaction_amount":2500,"transaction_count":2,"metadata":{"source":"test","n":1}}'
check "metadata object is accepted (201) and kept on the job" \
  st_json 201 '.job.metadata == {"source":"test","n":1} and .job.transaction_count == 2'

api POST /api/jobs "$TOKEN_A" "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":\"$USER_A\"}"
check "a user may name themselves as user_id (201)" [ "$STATUS" = 201 ]

api POST /api/jobs "$ADMIN_KEY" "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":\"$USER_B\"}"
check "admin key with user_id is 201, the job belongs to that user" \
  st_json 201 '.job.user_id == $u' --arg u "$USER_B"
JOB_B1=$(j .job_id)

api POST /api/jobs "$TOKEN_B" "$VALID"
check "user B creates a job of their own (201)" [ "$STATUS" = 201 ]
JOB_B2=$(j .job_id)

jobs_ok=$(sql "$DB_MAIN" "SELECT count(*) FROM job_runs")

api POST /api/jobs "$ADMIN_KEY" "$VALID"
expect_error "admin key without user_id is 400 naming user_id" 400 missing_field user_id
api POST /api/jobs "$ADMIN_KEY" '{"transaction_amount":1500,"transaction_count":1,"user_id":"nope"}'
expect_error "admin key with a user_id that is not a UUID is 400" 400 invalid_field user_id
api POST /api/jobs "$TOKEN_A" "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":\"$USER_B\"}"
expect_error "a user starting a job for another user is 403" 403 forbidden

for v in 0 1000001 '"1500"' 1.5 -1 null true '{}'; do
  api POST /api/jobs "$TOKEN_A" "{\"transaction_amount\":$v,\"transaction_count\":1}"
  expect_error "transaction_amount $v is 400 naming the field and 1..1000000" 400 invalid_field \
    transaction_amount 1..1000000
done
api POST /api/jobs "$TOKEN_A" '{"transaction_count":1}'
expect_error "missing transaction_amount is 400 missing_field" 400 missing_field transaction_amount
for v in 0 51 '"4"' 2.0; do
  api POST /api/jobs "$TOKEN_A" "{\"transaction_amount\":1500,\"transaction_count\":$v}"
  expect_error "transaction_count $v is 400 naming the field and 1..50" 400 invalid_field \
    transaction_count 1..50
done
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500}'
expect_error "missing transaction_count is 400 missing_field" 400 missing_field transaction_count
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":1,"colour":"red"}'
expect_error "an unknown field is 400 unknown_field naming it" 400 unknown_field colour
api POST /api/jobs "$TOKEN_A" '{"transactionAmount":1500,"transactionCount":1}'
expect_error "the original design's camelCase fields are unknown here (400)" 400 unknown_field
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":1'
expect_error "malformed JSON is 400 malformed_json" 400 malformed_json
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_amount":1,"transaction_count":1}'
check "a duplicate key is refused (400)" [ "$STATUS" = 400 ]
api POST /api/jobs "$TOKEN_A" '[{"transaction_amount":1500,"transaction_count":1}]'
expect_error "an array body is 400" 400 bad_request object
api POST /api/jobs "$TOKEN_A" '"hello"'
# jansson refuses a top-level scalar while parsing: malformed_json, not bad_request.
expect_error "a JSON string body is 400" 400 malformed_json
for m in '"x"' '[]' 7 null; do
  api POST /api/jobs "$TOKEN_A" "{\"transaction_amount\":1500,\"transaction_count\":1,\"metadata\":$m}"
  if [[ $m == null ]]; then
    # null is "not an object" too; either refusal or treating it as absent would be defensible,
    # but the contract says metadata must be an object.
    expect_error "metadata null is 400" 400 invalid_field metadata
  else
    expect_error "metadata $m (not an object) is 400" 400 invalid_field metadata
  fi
done
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type:' --data-binary "$VALID"
expect_error "no Content-Type is 415" 415 unsupported_media_type
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: text/plain' --data-binary "$VALID"
expect_error "Content-Type: text/plain is 415" 415 unsupported_media_type
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json' --data-binary ''
expect_error "an empty body (Content-Length: 0) is 400" 400 bad_request
empty_answer="$STATUS $BODY"
# RFC 9112 section 6.3: neither Content-Length nor Transfer-Encoding is an empty body.
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json'
check "POST without a body or Content-Length answers as an empty body does, not 411 (got $STATUS)" \
  [ "$STATUS $BODY" = "$empty_answer" ]
check "... and closes the connection (lws would take what follows for a body)" \
  has_header "connection: close"
chunked_post /api/jobs "$TOKEN_A" '0\r\n\r\n'
check "an empty chunked body answers as an empty body does (got $STATUS)" \
  [ "$STATUS $BODY" = "$empty_answer" ]
pad=$(head -c $((MAX_BODY + 100)) /dev/zero | tr '\0' 'x')
api POST /api/jobs "$TOKEN_A" "{\"transaction_amount\":1500,\"transaction_count\":1,\"metadata\":{\"pad\":\"$pad\"}}"
expect_error "a body over --max-body ($MAX_BODY) is 413" 413 body_too_large "$MAX_BODY"
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
  --data-binary "{\"transaction_amount\":1500,\"transaction_count\":1,\"metadata\":{\"pad\":\"$pad\"}}"
expect_error "a chunked body over --max-body ($MAX_BODY) is 413" 413 body_too_large "limit of $MAX_BODY bytes"
check "... and closes the connection" has_header "connection: close"
# The de-chunked body is held to the limit, not the bytes on the wire: two chunks
# of 2048 bytes in all are read.
half=$(head -c 987 /dev/zero | tr '\0' 'x')
chunked_post /api/jobs "$TOKEN_A" "$(chunk "{\"transaction_amount\":0,\"metadata\":{\"a\":\"$half\",")$(
  chunk "\"b\":\"${half}x\"},\"transaction_count\":1}")0\r\n\r\n"
expect_error "a chunked body of exactly --max-body ($MAX_BODY) bytes is read (400 for its amount, not 413)" \
  400 invalid_field transaction_amount
chunked_post /api/jobs "$TOKEN_A" "zz\r\n$VALID\r\n0\r\n\r\n"
expect_error "a chunk size that is not hex is 400" 400 bad_request "malformed chunked body" "hex digit"
check "... and closes the connection" has_header "connection: close"
chunked_post /api/jobs "$TOKEN_A" "$(printf '%x' $((${#VALID} - 2)))\r\n$VALID\r\n0\r\n\r\n"
expect_error "chunk data longer than its size is 400" 400 bad_request "malformed chunked body" CRLF
chunked_post /api/jobs "$TOKEN_A" "$(printf '%x' ${#VALID})\n$VALID\n0\n\n"
expect_error "bare LF line ends in a chunked body are 400" 400 bad_request "malformed chunked body"
# Both headers: refused whatever they say, as request smuggling defence (RFC 9112 section 6.3).
api_raw POST /api/jobs "$TOKEN_A" -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' \
  -H "Content-Length: ${#VALID}" --data-binary "$VALID"
expect_error "Content-Length with Transfer-Encoding is 400" 400 bad_request \
  "must not carry both Content-Length and Transfer-Encoding"
check "... and closes the connection" has_header "connection: close"
api POST /api/jobs "" '[1'
expect_error "authentication comes before the body is judged (401, not 400)" 401 unauthorized

jobs_after=$(sql "$DB_MAIN" "SELECT count(*) FROM job_runs")
check "no refused request created a job ($jobs_ok before, $jobs_after after)" [ "$jobs_ok" = "$jobs_after" ]
check "each 201 created exactly one job ($((jobs_ok - jobs_before)) jobs for 11 answers)" \
  [ $((jobs_ok - jobs_before)) = 11 ]

# ==== a whole 4-transaction job, driven through the API only =========================

api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":4}'
check "create the 4-transaction job (201)" [ "$STATUS" = 201 ]
JOB_FULL=$(j .job_id)
if drive_job "$JOB_FULL" "$TOKEN_A" 90; then
  check "the 4-transaction job completes, driven through the API (status $DRIVE_STATUS)" \
    [ "$DRIVE_STATUS" = completed ]
else
  fail "the 4-transaction job completes within 90 s" "$DRIVE_STALL; last: $(printf '%.400s' "$BODY")"
fi
check "every OTP the driver submitted was accepted (200)" [ -z "$DRIVE_REJECTED" ]
check "it took 6 OTPs: 2 logins and 4 payments (submitted $DRIVE_SUBMITTED)" [ "$DRIVE_SUBMITTED" = 6 ]
job_get "$JOB_FULL" "$TOKEN_A"
FULL_SEQ=$(j .seq)
check "completed job: progress_percentage 100, completed_transactions 4 of 4, phase complete, completed_at set" \
  jtrue '.job.status == "completed" and .job.progress_percentage == 100 and .job.completed_transactions == 4
         and .job.total_transactions == 4 and .job.current_phase == "complete" and .job.completed_at != null'
check "3 + 16 steps, all completed" \
  jtrue '(.steps | length) == 19 and all(.steps[]; .status == "completed")'
check "the steps are the workflow: 3 validation steps, 4 per transaction 1..4" \
  jtrue '([.steps[] | select(.transaction_index == null) | .step_name] | sort) == ["amazon_login","availability_check","gyftr_login"]
         and ([range(1;5) as $i | [.steps[] | select(.transaction_index == $i) | .step_name] | sort]
              | all(. == ["generate_payment_link","process_payment","redeem_amazon_vouchers","wait_for_vouchers"]))'
check "6 OTP requests, every one verified" \
  jtrue '(.otp_requests | length) == 6 and all(.otp_requests[]; .status == "verified")'
ev=$(sql "$DB_MAIN" "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM job_events WHERE job_run_id = :'id'" -v id="$JOB_FULL")
check "job_events holds exactly seq 1..$FULL_SEQ (count|distinct|min|max: $ev)" \
  [ "$ev" = "$FULL_SEQ|$FULL_SEQ|1|$FULL_SEQ" ]
db_job=$(sql "$DB_MAIN" "SELECT status, last_seq, completed_transactions, progress_percentage FROM job_runs WHERE id = :'id'" -v id="$JOB_FULL")
check "job_runs row: completed, last_seq $FULL_SEQ, 4 transactions, 100 % (got $db_job)" \
  [ "$db_job" = "completed|$FULL_SEQ|4|100" ]
db_steps=$(sql "$DB_MAIN" "SELECT count(*) FILTER (WHERE status = 'completed'), count(*) FROM job_steps WHERE job_run_id = :'id'" -v id="$JOB_FULL")
check "job_steps: 19 rows, all completed (got $db_steps)" [ "$db_steps" = "19|19" ]
db_otps=$(sql "$DB_MAIN" "SELECT count(*) FILTER (WHERE status = 'verified'), count(*) FROM otp_requests WHERE job_run_id = :'id'" -v id="$JOB_FULL")
check "otp_requests: 6 rows, all verified (got $db_otps)" [ "$db_otps" = "6|6" ]
last_ev=$(sql "$DB_MAIN" "SELECT row_data->>'status' FROM job_events WHERE job_run_id = :'id' AND table_name = 'job_runs' ORDER BY seq DESC LIMIT 1" -v id="$JOB_FULL")
check "the last journaled job row says completed" [ "$last_ev" = completed ]
pay_keys=$(sql "$DB_MAIN" "SELECT count(DISTINCT idempotency_key), count(*) FROM job_steps WHERE job_run_id = :'id' AND step_name = 'process_payment'" -v id="$JOB_FULL")
check "each payment has its own idempotency key (distinct|rows: $pay_keys)" [ "$pay_keys" = "4|4" ]
charges=$(grep -c "sim: charged 1500 (job=$JOB_FULL " "$LOG_MAIN")
check "the sim charged exactly 4 payments for the job (log: $charges)" [ "$charges" = 4 ]

# ==== OTP submission ===================================================================
# A user with no login session yet (user A's logins are reused from now on), so
# the job asks for both login OTPs.

api POST /api/jobs "$TOKEN_O" '{"transaction_amount":1500,"transaction_count":1}'
JOB_OTP=$(j .job_id)
if ! wait_otp_requests "$JOB_OTP" "$TOKEN_O" 30 2; then
  fail "the login OTPs of a new job are requested and in the inbox within 30 s" "$(printf '%.400s' "$BODY")"
else
  pass "the login OTPs of a new job are requested and in the inbox within 30 s"
fi
job_get "$JOB_OTP" "$TOKEN_O"
G_ID=$(j '.otp_requests[] | select(.otp_type == "gyftr_login" and .status == "requested") | .id')
AM_ID=$(j '.otp_requests[] | select(.otp_type == "amazon_login" and .status == "requested") | .id')
inbox_for "$JOB_OTP"
G_CODE=$(otp_code "$G_ID")
AM_CODE=$(otp_code "$AM_ID")
[[ -n $G_ID && -n $AM_ID && -n $G_CODE && -n $AM_CODE ]] ||
  bail "both login OTP requests have a code in the inbox" "G=$G_ID/$G_CODE AM=$AM_ID/$AM_CODE"
WRONG=$(printf '%06d' $(((10#$G_CODE + 1) % 1000000)))

otp_wrong0=$(metric jobwire_otp_wrong_total)
api POST "/api/otp/$G_ID" "$TOKEN_O" "{\"otp\":\"$WRONG\"}"
check "a wrong code is 422 {ok:false, error:invalid_otp, attempts_left:2}" \
  st_json 422 '.ok == false and .error == "invalid_otp" and .attempts_left == 2'
check "/metrics counts it: jobwire_otp_wrong_total $otp_wrong0 -> $((otp_wrong0 + 1))" \
  [ "$(metric jobwire_otp_wrong_total)" = $((otp_wrong0 + 1)) ]
otp_verified0=$(metric jobwire_otp_verified_total)
api POST "/api/otp/$G_ID" "$TOKEN_O" "{\"otp\":\"$G_CODE\"}"
check "/metrics counts the right code: jobwire_otp_verified_total $otp_verified0 -> $((otp_verified0 + 1))" \
  [ "$(metric jobwire_otp_verified_total)" = $((otp_verified0 + 1)) ]
check "then the right code is 200 {ok:true}" st_json 200 '.ok == true'
api POST "/api/otp/$G_ID" "$TOKEN_O" "{\"otp\":\"$G_CODE\"}"
expect_error "a verified OTP request is 409" 409 conflict verified

UNKNOWN=$(random_uuid)
api POST "/api/otp/$UNKNOWN" "$TOKEN_O" '{"otp":"123456"}'
expect_error "an unknown OTP request id is 404" 404 not_found
unknown_shape="$STATUS $(jq -c --arg id "$UNKNOWN" '.error.message |= sub($id; "ID")' <<<"$BODY")"
api POST "/api/otp/$AM_ID" "$TOKEN_B" "{\"otp\":\"$AM_CODE\"}"
foreign_shape="$STATUS $(jq -c --arg id "$AM_ID" '.error.message |= sub($id; "ID")' <<<"$BODY")"
check "user B submitting user O's OTP is 404, exactly like an unknown id" \
  [ "$foreign_shape" = "$unknown_shape" ]
api POST "/api/otp/$AM_ID" "$TOKEN_B" '{"otp":"12"}'
foreign_shape="$STATUS $(jq -c --arg id "$AM_ID" '.error.message |= sub($id; "ID")' <<<"$BODY")"
check "... even with a malformed code (404, not 400: nothing is revealed)" \
  [ "$foreign_shape" = "$unknown_shape" ]
api POST /api/otp/not-a-uuid "$TOKEN_O" '{"otp":"123456"}'
expect_error "an OTP request id that is not a UUID is 400" 400 invalid_parameter UUID
for v in '"12"' '"abcdef"' '"12345678901"' '"12 345"' '""' 123456 null; do
  api POST "/api/otp/$AM_ID" "$TOKEN_O" "{\"otp\":$v}"
  expect_error "otp $v is 400 (4 to 10 digits)" 400 invalid_field "4 to 10 digits"
done
api POST "/api/otp/$AM_ID" "$TOKEN_O" '{}'
expect_error "a missing otp field is 400" 400 invalid_field otp
api POST "/api/otp/$AM_ID" "$TOKEN_O" "{\"otp\":\"$AM_CODE\",\"remember\":true}"
expect_error "an unknown field next to otp is 400 unknown_field" 400 unknown_field remember
api_raw POST "/api/otp/$AM_ID" "$TOKEN_O" -H 'Content-Type: text/plain' --data-binary "{\"otp\":\"$AM_CODE\"}"
expect_error "an OTP body without Content-Type: application/json is 415" 415 unsupported_media_type
api POST "/api/otp/$AM_ID" "" "{\"otp\":\"$AM_CODE\"}"
expect_error "an OTP without Authorization is 401" 401 unauthorized
api GET "/api/otp/$AM_ID" "$TOKEN_O"
expect_error "GET /api/otp/{id} is 405" 405 method_not_allowed
check "... with Allow: POST" has_header "allow: post"
api POST "/api/otp/$AM_ID" "$TOKEN_O" "{\"otp\":\"$AM_CODE\"}"
check "after all those refusals the right code is still 200, with 3 attempts left" \
  st_json 200 '.ok == true and .attempts_left == 3'
db_g=$(sql "$DB_MAIN" "SELECT status, attempts_count FROM otp_requests WHERE id = :'id'" -v id="$G_ID")
check "otp_requests row of the wrong-then-right OTP: verified, attempts_count 1 (got $db_g)" \
  [ "$db_g" = "verified|1" ]

# The payment OTP through the original design's route.
if wait_otp_requests "$JOB_OTP" "$TOKEN_O" 30 1; then
  pass "the payment OTP is requested after the logins"
else
  fail "the payment OTP is requested after the logins within 30 s" "$(printf '%.400s' "$BODY")"
fi
P_ID=${OTP_IDS%% *}
P_CODE=$(otp_code "$P_ID")
P_WRONG=$(printf '%06d' $(((10#${P_CODE:-0} + 1) % 1000000)))
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpValue\":\"$P_CODE\"}"
expect_error "otp-received without otpRequestId is 400" 400 missing_field otpRequestId
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"nope\",\"otpValue\":\"$P_CODE\"}"
expect_error "otp-received with an otpRequestId that is not a UUID is 400" 400 invalid_field otpRequestId
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$P_ID\",\"otpValue\":123456}"
expect_error "otp-received with a number otpValue is 400" 400 invalid_field otpValue
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$P_ID\"}"
expect_error "otp-received without otpValue is 400" 400 invalid_field otpValue
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$P_ID\",\"otpValue\":\"$P_CODE\",\"jobId\":\"$JOB_OTP\"}"
expect_error "otp-received with an unknown field is 400" 400 unknown_field jobId
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$P_ID\",\"otpValue\":\"12\"}"
expect_error "otp-received with a 2-digit code is 400" 400 invalid_field
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$UNKNOWN\",\"otpValue\":\"$P_CODE\"}"
expect_error "otp-received for an unknown request is 404" 404 not_found
api POST /api/jobs/otp-received "$TOKEN_B" "{\"otpRequestId\":\"$P_ID\",\"otpValue\":\"$P_CODE\"}"
expect_error "otp-received for another user's request is 404" 404 not_found
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$P_ID\",\"otpValue\":\"$P_WRONG\"}"
check "otp-received with a wrong code is 422 {success:false, error:invalid_otp, attempts_left:2}" \
  st_json 422 '.success == false and .error == "invalid_otp" and .attempts_left == 2'
api POST /api/jobs/otp-received "$TOKEN_O" "{\"otpRequestId\":\"$P_ID\",\"otpValue\":\"$P_CODE\"}"
check "otp-received with the right code is 200 {success:true}" \
  st_json 200 '.success == true'
if drive_job "$JOB_OTP" "$TOKEN_O" 60 && [[ $DRIVE_STATUS == completed ]]; then
  pass "the OTP test job completes"
else
  fail "the OTP test job completes within 60 s (status $DRIVE_STATUS)" "$DRIVE_STALL"
fi

# A job the admin started for a user: the user answers its OTPs.
upper_a=$(tr '[:lower:]' '[:upper:]' <<<"$USER_A")
api POST /api/jobs "$ADMIN_KEY" "{\"transaction_amount\":1500,\"transaction_count\":1,\"user_id\":\"$upper_a\"}"
JOB_UPPER=$(j .job_id)
check "admin may name the user in upper case (201)" [ "$STATUS" = 201 ]
if wait_otp_requests "$JOB_UPPER" "$TOKEN_A" 30 1; then
  id=${OTP_IDS%% *}
  api POST "/api/otp/$id" "$TOKEN_A" "{\"otp\":\"$(otp_code "$id")\"}"
  check "the user answers the OTP of a job the admin started with its id in upper case (200)" \
    [ "$STATUS" = 200 ]
else
  fail "the user can read the job the admin started with its id in upper case" "$(printf '%.300s' "$BODY")"
fi

# ==== GET /api/jobs/{id} ==================================================================

job_get "$JOB_FULL" "$TOKEN_A"
check "GET /api/jobs/{id} by its owner is 200 with job_id, job, steps, otp_requests, seq" \
  st_json 200 '.job_id == $id and .job.id == $id and (.steps | length) == 19 and (.otp_requests | type == "array") and (.seq | type == "number")' --arg id "$JOB_FULL"
job_get "$JOB_FULL" "$TOKEN_B"
other_shape="$STATUS $(jq -c --arg id "$JOB_FULL" '.error.message |= sub($id; "ID")' <<<"$BODY")"
expect_error "GET another user's job is 404" 404 not_found
UNKNOWN_JOB=$(random_uuid)
job_get "$UNKNOWN_JOB" "$TOKEN_B"
expect_error "GET an unknown job id is 404" 404 not_found
unknown_shape="$STATUS $(jq -c --arg id "$UNKNOWN_JOB" '.error.message |= sub($id; "ID")' <<<"$BODY")"
check "another user's job answers exactly like an unknown one" [ "$other_shape" = "$unknown_shape" ]
job_get "$JOB_FULL" "$ADMIN_KEY"
check "the admin may GET any job (200)" st_json 200 '.job.user_id == $u' --arg u "$USER_A"
job_get not-a-uuid "$TOKEN_A"
expect_error "GET /api/jobs/not-a-uuid is 400" 400 invalid_parameter UUID
job_get "$(tr '[:lower:]' '[:upper:]' <<<"$JOB_FULL")" "$TOKEN_A"
check "a job id in upper case names the same job (200)" st_json 200 '.job_id == $id' --arg id "$JOB_FULL"
api POST "/api/jobs/$JOB_FULL" "$TOKEN_A" '{}'
expect_error "POST /api/jobs/{id} is 405" 405 method_not_allowed
check "... with Allow: GET, HEAD" has_header "allow: get, head"
api DELETE "/api/jobs/$JOB_FULL" "$TOKEN_A"
expect_error "DELETE /api/jobs/{id} is 405" 405 method_not_allowed
raw_head "/api/jobs/$JOB_FULL" "$TOKEN_A"
rc=$?
verdict_rc "$rc" "HEAD /api/jobs/{id} is 200 with Content-Length and no body" "$(head -c 300 "$WORK/head")"
api GET "/api/jobs/$JOB_FULL/steps" "$TOKEN_A"
expect_error "GET /api/jobs/{id}/steps (no such route) is 404" 404 not_found

# ==== GET /api/jobs (list) ===================================================================

api GET /api/jobs "$TOKEN_A"
check "GET /api/jobs as user A is 200 with jobs and next_before" \
  st_json 200 '(.jobs | type == "array") and has("next_before")'
check "user A sees only their own jobs, newest first" \
  jtrue 'all(.jobs[]; .user_id == $u) and ([.jobs[].created_at] == ([.jobs[].created_at] | sort | reverse))' --arg u "$USER_A"
check "... including the completed job, and none of user B's" \
  jtrue 'any(.jobs[]; .id == $f) and all(.jobs[]; .id != $b1 and .id != $b2)' \
  --arg f "$JOB_FULL" --arg b1 "$JOB_B1" --arg b2 "$JOB_B2"
check "list rows have no store bookkeeping (last_seq)" jtrue 'all(.jobs[]; has("last_seq") | not)'
A_ALL=$BODY
api GET "/api/jobs?user_id=$USER_B" "$TOKEN_A"
expect_error "user A listing user B's jobs is 403" 403 forbidden
api GET "/api/jobs?user_id=$USER_A" "$TOKEN_A"
check "user A naming themselves as user_id is 200" [ "$STATUS" = 200 ]
api GET "/api/jobs?status=completed" "$TOKEN_A"
check "status=completed returns only completed jobs, the finished one among them" \
  st_json 200 'all(.jobs[]; .status == "completed") and any(.jobs[]; .id == $f)' --arg f "$JOB_FULL"
api GET "/api/jobs?status=validating" "$TOKEN_A"
check "status=validating returns only validating jobs" st_json 200 'all(.jobs[]; .status == "validating") and (.jobs | length) >= 1'
api GET "/api/jobs?status=done" "$TOKEN_A"
expect_error "an unknown status is 400" 400 invalid_parameter status
for l in 0 101 abc -1 '' 1x; do
  api GET "/api/jobs?limit=$l" "$TOKEN_A"
  expect_error "limit=$l is 400 (1..100)" 400 invalid_parameter "1..100"
done
api GET "/api/jobs?user_id=nope" "$ADMIN_KEY"
expect_error "user_id that is not a UUID is 400" 400 invalid_parameter user_id
api GET "/api/jobs?before=nope" "$TOKEN_A"
expect_error "before that is not a UUID is 400" 400 invalid_parameter before
api GET "/api/jobs?limit=1" "$TOKEN_A"
first=$(j '.jobs[0].id')
check "limit=1 returns one job and next_before = its id" \
  st_json 200 '(.jobs | length) == 1 and .next_before == .jobs[0].id'
api GET "/api/jobs?limit=1&before=$first" "$TOKEN_A"
second=$(j '.jobs[0].id')
[ "$STATUS" = 200 ] && [ -n "$second" ] && [ "$second" != "$first" ] && [ "$second" != null ]
verdict "before=<next_before> returns the next job, a different one"
check "... the same as the second job of the unpaged list" \
  [ "$(jq -r '.jobs[1].id' <<<"$A_ALL")" = "$second" ]
n_a=$(jq '.jobs | length' <<<"$A_ALL")
api GET "/api/jobs?limit=$n_a" "$TOKEN_A"
last=$(j '.next_before')
api GET "/api/jobs?limit=$n_a&before=$last" "$TOKEN_A"
check "paging past the last job: an empty page with next_before null" \
  st_json 200 '.jobs == [] and .next_before == null'
api GET "/api/jobs?user_id=$USER_B" "$ADMIN_KEY"
check "the admin may filter by user_id: only user B's jobs, both of them" \
  st_json 200 'all(.jobs[]; .user_id == $u) and any(.jobs[]; .id == $b1) and any(.jobs[]; .id == $b2)' \
  --arg u "$USER_B" --arg b1 "$JOB_B1" --arg b2 "$JOB_B2"
api GET "/api/jobs?limit=100" "$ADMIN_KEY"
check "the admin's unfiltered list holds both users' jobs" \
  jtrue 'any(.jobs[]; .user_id == $a) and any(.jobs[]; .user_id == $b)' --arg a "$USER_A" --arg b "$USER_B"
api GET "/api/jobs?status=completed&user_id=$USER_B" "$ADMIN_KEY"
check "status and user_id combine (user B has no completed job)" st_json 200 '.jobs == []'
raw_head /api/jobs "$TOKEN_A"
rc=$?
verdict_rc "$rc" "HEAD /api/jobs is 200 with Content-Length and no body" "$(head -c 300 "$WORK/head")"

# ==== cancel ====================================================================================

api POST /api/jobs "$TOKEN_C" '{"transaction_amount":1500,"transaction_count":2}'
JOB_C=$(j .job_id)
wait_otp_requests "$JOB_C" "$TOKEN_C" 30 2 || fail "the job to cancel waits for its login OTPs" "$(printf '%.300s' "$BODY")"
C_OTP=${OTP_IDS%% *}
C_CODE=$(otp_code "$C_OTP")
api POST "/api/jobs/$JOB_C/cancel" "$TOKEN_B" '{}'
expect_error "user B cancelling user C's job is 404" 404 not_found
api POST "/api/jobs/$JOB_C/cancel" "$TOKEN_C" '{}'
check "cancelling a job that waits for its login OTP is 200" [ "$STATUS" = 200 ]
check "... answered with the job: cancel_requested true" jtrue '.job.cancel_requested == true and .job_id == $id' --arg id "$JOB_C"
if wait_job_status "$JOB_C" "$TOKEN_C" 20 cancelled; then
  pass "the job becomes cancelled"
else
  fail "the job becomes cancelled within 20 s" "$(printf '%.300s' "$BODY")"
fi
check "cancelled job: cancel_requested true, no step left running, no OTP left open" \
  jtrue '.job.cancel_requested == true
         and all(.steps[]; .status == "completed" or .status == "cancelled")
         and all(.otp_requests[]; .status != "requested" and .status != "received")'
db_c=$(sql "$DB_MAIN" "SELECT status, cancel_requested FROM job_runs WHERE id = :'id'" -v id="$JOB_C")
check "job_runs says cancelled, cancel_requested (got $db_c)" [ "$db_c" = "cancelled|t" ]
api POST "/api/otp/$C_OTP" "$TOKEN_C" "{\"otp\":\"$C_CODE\"}"
expect_error "the cancelled job's OTP no longer takes a code (409)" 409 conflict
api POST "/api/jobs/$JOB_C/cancel" "$TOKEN_C" '{}'
expect_error "cancelling it again is 409" 409 conflict cancelled

# User A's logins are reused now: a new job of A goes straight to its first payment OTP.
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":2}'
JOB_C2=$(j .job_id)
if wait_otp_requests "$JOB_C2" "$TOKEN_A" 30 1; then
  job_get "$JOB_C2" "$TOKEN_A"
  check "a later job of user A reuses both logins: no login OTP, the first OTP is the payment's" \
    jtrue '([.otp_requests[].otp_type] == ["payment"])
           and all(.steps[] | select(.step_name | test("_login$")); .status == "completed" and .step_data.reused_session == true)'
else
  fail "a later job of user A asks for its payment OTP within 30 s" "$(printf '%.300s' "$BODY")"
fi
api POST "/api/jobs/$JOB_C2/cancel" "$TOKEN_A" '{}'
check "cancelling a job that waits for its payment OTP is 200" [ "$STATUS" = 200 ]
if wait_job_status "$JOB_C2" "$TOKEN_A" 20 cancelled; then
  check "it is cancelled before paying: the payment step cancelled, nothing charged" \
    jtrue '(.steps[] | select(.step_name == "process_payment") | .status == "cancelled") and .job.completed_transactions == 0'
else
  fail "the job waiting for its payment OTP becomes cancelled within 20 s" "$(printf '%.300s' "$BODY")"
fi
check "... and the sim log shows no charge for it" [ "$(grep -c "sim: charged .*job=$JOB_C2 " "$LOG_MAIN")" = 0 ]
api POST "/api/jobs/$JOB_FULL/cancel" "$TOKEN_A" '{}'
expect_error "cancelling a completed job is 409" 409 conflict completed
api POST "/api/jobs/$UNKNOWN_JOB/cancel" "$TOKEN_A" '{}'
expect_error "cancelling an unknown job is 404" 404 not_found
# curl -X POST with no data sends no Content-Length: a cancel needs no body.
api_raw POST "/api/jobs/$JOB_B1/cancel" "$ADMIN_KEY"
check "the admin may cancel any user's running job, with no body and no Content-Length (200)" \
  st_json 200 '.job.cancel_requested == true and .job_id == $id' --arg id "$JOB_B1"
api GET "/api/jobs/$JOB_C/cancel" "$TOKEN_C"
expect_error "GET on /cancel is 405" 405 method_not_allowed
check "... with Allow: POST" has_header "allow: post"
api_raw POST "/api/jobs/$JOB_C/cancel" "$TOKEN_C"
expect_error "POST /cancel with no body and no Content-Length: 409 as with a body, not 411" \
  409 conflict cancelled
api GET "/api/jobs?status=cancelled" "$ADMIN_KEY"
check "status=cancelled lists the cancelled jobs only" \
  jtrue 'all(.jobs[]; .status == "cancelled") and any(.jobs[]; .id == $c) and any(.jobs[]; .id == $b)' \
  --arg c "$JOB_C" --arg b "$JOB_B1"

# ==== retry refusals (the retry itself is tested with the failing sim below) =================

api POST "/api/jobs/$JOB_FULL/retry" "$TOKEN_A" '{}'
expect_error "retrying a completed job is 409" 409 conflict "only a failed job"
api_raw POST "/api/jobs/$JOB_FULL/retry" "$TOKEN_A"
expect_error "... with no body and no Content-Length too (409, not 411)" 409 conflict "only a failed job"
api POST "/api/jobs/$JOB_C/retry" "$TOKEN_C" '{}'
expect_error "retrying a cancelled job is 409" 409 conflict "only a failed job"
api POST "/api/jobs/$JOB_CREATE/retry" "$TOKEN_A" '{}'
expect_error "retrying a running job is 409" 409 conflict "only a failed job"
api POST "/api/jobs/$JOB_FULL/retry" "$TOKEN_B" '{}'
expect_error "user B retrying user A's job is 404" 404 not_found
api POST "/api/jobs/$UNKNOWN_JOB/retry" "$ADMIN_KEY" '{}'
expect_error "retrying an unknown job is 404" 404 not_found
api GET "/api/jobs/$JOB_FULL/retry" "$TOKEN_A"
expect_error "GET on /retry is 405" 405 method_not_allowed

# ==== the original design's routes ==========================================================

api POST /api/jobs/start-payment "$TOKEN_A" \
  "{\"userId\":\"$USER_A\",\"config\":{\"transactionAmount\":1500,\"transactionCount\":2}}"
check "start-payment is 200 {jobId, message:\"Job started successfully\"}" \
  st_json 200 '(keys == ["jobId","message"]) and .message == "Job started successfully"'
JOB_SP=$(j .jobId)
job_get "$JOB_SP" "$TOKEN_A"
check "the started job has the config as its metadata, amount 1500, 2 transactions" \
  st_json 200 '.job.metadata == {"transactionAmount":1500,"transactionCount":2}
    and .job.transaction_amount == 1500 and .job.transaction_count == 2 and .job.user_id == $u' --arg u "$USER_A"
api POST /api/jobs/start-payment "$TOKEN_A" '{"config":{"transactionAmount":100,"transactionCount":1}}'
check "start-payment without userId uses the token's user (200)" [ "$STATUS" = 200 ]
api POST /api/jobs/start-payment "$ADMIN_KEY" \
  "{\"userId\":\"$USER_B\",\"config\":{\"transactionAmount\":1500,\"transactionCount\":1}}"
check "start-payment by the admin for user B is 200" [ "$STATUS" = 200 ]
JOB_SP_B=$(j .jobId)
job_get "$JOB_SP_B" "$TOKEN_B"
check "... and user B owns that job" st_json 200 '.job.user_id == $u' --arg u "$USER_B"
api POST /api/jobs/start-payment "$ADMIN_KEY" '{"config":{"transactionAmount":1500,"transactionCount":1}}'
expect_error "start-payment by the admin without userId is 400" 400 missing_field userId
api POST /api/jobs/start-payment "$TOKEN_A" \
  "{\"userId\":\"$USER_B\",\"config\":{\"transactionAmount\":1500,\"transactionCount\":1}}"
expect_error "start-payment for another user is 403" 403 forbidden
api POST /api/jobs/start-payment "$TOKEN_A" "{\"userId\":\"$USER_A\"}"
expect_error "start-payment without config is 400" 400 invalid_field config
api POST /api/jobs/start-payment "$TOKEN_A" "{\"userId\":\"$USER_A\",\"config\":[1500,2]}"
expect_error "start-payment with config not an object is 400" 400 invalid_field config
api POST /api/jobs/start-payment "$TOKEN_A" '{"userId":"nope","config":{"transactionAmount":1500,"transactionCount":1}}'
expect_error "start-payment with a bad userId is 400" 400 invalid_field userId
api POST /api/jobs/start-payment "$TOKEN_A" '{"userId":42,"config":{"transactionAmount":1500,"transactionCount":1}}'
expect_error "start-payment with a number userId is 400" 400 invalid_field userId
api POST /api/jobs/start-payment "$TOKEN_A" '{"config":{"transactionCount":1}}'
expect_error "start-payment without transactionAmount is 400" 400 missing_field transactionAmount
api POST /api/jobs/start-payment "$TOKEN_A" '{"config":{"transactionAmount":"1500","transactionCount":1}}'
expect_error "start-payment with transactionAmount \"1500\" is 400" 400 invalid_field transactionAmount
api POST /api/jobs/start-payment "$TOKEN_A" '{"config":{"transactionAmount":1500,"transactionCount":51}}'
expect_error "start-payment with transactionCount 51 is 400" 400 invalid_field transactionCount
api POST /api/jobs/start-payment "$TOKEN_A" '{"config":{"transactionAmount":1500,"transactionCount":1},"priority":1}'
expect_error "start-payment with an unknown field is 400" 400 unknown_field priority
api_raw POST /api/jobs/start-payment "$TOKEN_A" -H 'Content-Type:' \
  --data-binary '{"config":{"transactionAmount":1500,"transactionCount":1}}'
expect_error "start-payment without Content-Type is 415" 415 unsupported_media_type
api GET /api/jobs/start-payment "$TOKEN_A"
expect_error "GET /api/jobs/start-payment is 405" 405 method_not_allowed
check "... with Allow: POST" has_header "allow: post"
api GET /api/jobs/otp-received "$TOKEN_A"
expect_error "GET /api/jobs/otp-received is 405" 405 method_not_allowed

# ==== other routes ===============================================================================

api GET /api/sim/inbox "$TOKEN_A"
expect_error "GET /api/sim/inbox with a user token is 403" 403 forbidden
api GET /api/sim/inbox ""
expect_error "GET /api/sim/inbox without Authorization is 401" 401 unauthorized
api GET /api/sim/inbox "$ADMIN_KEY"
check "GET /api/sim/inbox with the admin key is 200 {messages:[…]} linking SMS to OTP requests" \
  st_json 200 '(.messages | length) > 0 and all(.messages[]; has("code") and has("otp_request_id") and has("job_id"))'
api PUT /api/jobs "$TOKEN_A" "$VALID"
expect_error "PUT /api/jobs is 405" 405 method_not_allowed
check "... with Allow: GET, HEAD, POST" has_header "allow: get, head, post"
api GET /api/nope "$TOKEN_A"
expect_error "GET /api/nope is 404 JSON" 404 not_found
api GET /api/nope ""
expect_error "an unknown /api route without a token is 401 (authentication first)" 401 unauthorized

MAIN_CODES=$(sort -u "$CODES_FILE" | grep -c .)
stop_jobwire "$MAIN_PID"
check "jobwire (main) stops cleanly on SIGTERM" [ $? = 0 ]

# ==== OTP timeout: nobody answers the login OTPs =============================================

DB_OTP=$(jw_fresh_db jw_test_api_otp) || bail "create database jw_test_api_otp"
LOG_OTP=$WORK/otp.log
start_jobwire "$DB_OTP" "$LOG_OTP" --sim latency_ms=5 --retry-scale 0.01 --otp-timeout-login 1 ||
  bail "jobwire (--otp-timeout-login 1) starts" "$START_ERROR"
OTP_PID=$SERVER_PID
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":1}'
JOB_T=$(j .job_id)
check "create a job whose login OTPs nobody answers (201)" [ "$STATUS" = 201 ]
if wait_job_status "$JOB_T" "$TOKEN_A" 60 failed completed cancelled; then
  check "the job fails once its login OTPs time out (got $(j .job.status))" jtrue '.job.status == "failed"'
else
  fail "the job ends within 60 s of unanswered 1 s login OTPs" "$(printf '%.400s' "$BODY")"
fi
check "its error_message says the OTP was not entered in time" \
  jtrue '.job.error_message | test("OTP not entered within 1 s")'
check "no transaction ran (completed_transactions 0, only validation steps)" \
  jtrue '.job.completed_transactions == 0 and all(.steps[]; .transaction_index == null)'
otp_states=$(sql "$DB_OTP" "SELECT string_agg(status || ':' || n, ',' ORDER BY status) FROM
  (SELECT status, count(*) n FROM otp_requests WHERE job_run_id = :'id' GROUP BY status) x" -v id="$JOB_T")
open=$(sql "$DB_OTP" "SELECT count(*) FROM otp_requests WHERE job_run_id = :'id' AND status NOT IN ('expired','failed')" -v id="$JOB_T")
check "no OTP request is left open: each expired or (the other login's, when the job failed) failed ($otp_states)" [ "$open" = 0 ]
per_step=$(sql "$DB_OTP" "SELECT count(*) FROM job_steps s WHERE s.job_run_id = :'id'
  AND s.step_name IN ('gyftr_login','amazon_login')
  AND EXISTS (SELECT 1 FROM otp_requests o WHERE o.job_step_id = s.id AND o.status = 'expired')" -v id="$JOB_T")
check "both logins had OTP requests expire" [ "$per_step" = 2 ]
early=$(sql "$DB_OTP" "SELECT count(*) FROM job_events WHERE job_run_id = :'id' AND table_name = 'otp_requests'
  AND row_data->>'status' = 'expired' AND ts < (row_data->>'timeout_at')::timestamptz" -v id="$JOB_T")
check "no OTP request expired before its timeout_at" [ "$early" = 0 ]
inbox_for "$JOB_T"
t_code=$(jq -r '.[0].code' <<<"$INBOX")
t_id=$(sql "$DB_OTP" "SELECT id FROM otp_requests WHERE job_run_id = :'id' AND status = 'expired' ORDER BY requested_at LIMIT 1" -v id="$JOB_T")
api POST "/api/otp/$t_id" "$TOKEN_A" "{\"otp\":\"$t_code\"}"
expect_error "a code for an expired OTP request is 409" 409 conflict
otp_rows=$(sql "$DB_OTP" "SELECT count(*) || '|' || count(*) FILTER (WHERE status = 'expired') FROM otp_requests")
check "/metrics: OTP requests and expiries = otp_requests rows, all and expired ($otp_rows)" \
  [ "$(metric jobwire_otp_requests_total)|$(metric jobwire_otp_expired_total)" = "$otp_rows" ]
check "/metrics: none of them verified" [ "$(metric jobwire_otp_verified_total)" = 0 ]
stop_jobwire "$OTP_PID"

# ==== retry: a job that failed in its 2nd transaction, resumed after a restart ==============

DB_RETRY=$(jw_fresh_db jw_test_api_retry) || bail "create database jw_test_api_retry"
LOG_FAIL=$WORK/fail.log
# fail_rate 0.5 with seed 6: the failure coin spares the 1st redeem_amazon_vouchers call
# and hits the 2nd (the coin is drawn only for fail_steps). No OTPs in this run.
FAIL_SPEC="latency_ms=5,voucher_polls=1,poll_after_ms=10,otp=none,fail_rate=0.5,fail_steps=redeem_amazon_vouchers,fail_retryable=0,seed=6"
start_jobwire "$DB_RETRY" "$LOG_FAIL" --sim "$FAIL_SPEC" --retry-scale 0.01 ||
  bail "jobwire with a failing sim starts" "$START_ERROR"
FAIL_PID=$SERVER_PID
api POST /api/jobs "$TOKEN_A" '{"transaction_amount":1500,"transaction_count":3}'
JOB_R=$(j .job_id)
check "create the 3-transaction job on the failing sim (201)" [ "$STATUS" = 201 ]
wait_job_status "$JOB_R" "$TOKEN_A" 60 failed completed cancelled ||
  fail "the job ends within 60 s on the failing sim" "$(printf '%.400s' "$BODY")"
check "it failed after 1 of 3 transactions (k >= 1 of n: seed 6 must spare the 1st redeem)" \
  jtrue '.job.status == "failed" and .job.completed_transactions == 1 and .job.total_transactions == 3'
check "the job's error names the failed step and the sim's error" \
  jtrue '.job.error_message | test("redeem_amazon_vouchers failed: simulated failure")'
check "the failed step is redeem_amazon_vouchers of transaction 2, not retried (not retryable)" \
  jtrue '[.steps[] | select(.status == "failed")] | length == 1 and .[0].step_name == "redeem_amazon_vouchers"
         and .[0].transaction_index == 2 and .[0].attempt == 1'
api POST "/api/jobs/$JOB_R/retry" "$TOKEN_B" '{}'
expect_error "user B retrying user A's failed job is 404" 404 not_found
stop_jobwire "$FAIL_PID"
check "the failing jobwire stops cleanly" [ $? = 0 ]
charges_fail=$(grep -c "sim: charged 1500 (job=$JOB_R " "$LOG_FAIL")
check "the first run charged 2 payments (transactions 1 and 2) (log: $charges_fail)" [ "$charges_fail" = 2 ]

STEP_COLS="id, step_name, coalesce(transaction_index, 0), status, attempt, coalesce(idempotency_key, ''), updated_at"
steps_before=$(sql "$DB_RETRY" "SELECT $STEP_COLS FROM job_steps WHERE job_run_id = :'id' ORDER BY created_at, id" -v id="$JOB_R")
seq_before=$(sql "$DB_RETRY" "SELECT last_seq FROM job_runs WHERE id = :'id'" -v id="$JOB_R")

LOG_RETRY=$WORK/retry.log
start_jobwire "$DB_RETRY" "$LOG_RETRY" --sim "$SIM_FAST" --retry-scale 0.01 ||
  bail "jobwire without the failure starts on the same database" "$START_ERROR"
RETRY_PID=$SERVER_PID
job_get "$JOB_R" "$TOKEN_A"
check "after the restart the failed job is read from PostgreSQL (200, failed, seq $seq_before)" \
  st_json 200 '.job.status == "failed" and .seq == ($s | tonumber)' --arg s "$seq_before"
job_get "$JOB_R" "$TOKEN_B"
expect_error "... and user B still gets 404 for it" 404 not_found
api GET "/api/jobs?status=failed" "$TOKEN_A"
check "the list shows it under status=failed" jtrue 'any(.jobs[]; .id == $id)' --arg id "$JOB_R"
api POST "/api/jobs/$JOB_R/retry" "$TOKEN_B" '{}'
expect_error "user B retrying it after the restart is 404" 404 not_found
api_raw POST "/api/jobs/$JOB_R/retry" "$TOKEN_A"
check "POST /api/jobs/{id}/retry of the failed job, with no body and no Content-Length, is 200" \
  [ "$STATUS" = 200 ]
check "... answered with the job running again, retry_count 1" \
  jtrue '(.job.status == "processing") and .job.retry_count == 1 and .job.error_message == null'
api POST "/api/jobs/$JOB_R/retry" "$TOKEN_A" '{}'
expect_error "retrying it again while it runs is 409" 409 conflict
if drive_job "$JOB_R" "$TOKEN_A" 90 && [[ $DRIVE_STATUS == completed ]]; then
  pass "the retried job completes (payment OTP of transaction 3 answered through the API)"
else
  fail "the retried job completes within 90 s (status $DRIVE_STATUS)" "$DRIVE_STALL"
fi
[ -z "$DRIVE_REJECTED" ] && [ "$DRIVE_SUBMITTED" = 1 ]
verdict "the driver's OTP answers were accepted; one payment OTP (transaction 3) (submitted $DRIVE_SUBMITTED)" "$DRIVE_REJECTED"
job_get "$JOB_R" "$TOKEN_A"
check "retried job: completed, 3 of 3 transactions, 100 %" \
  jtrue '.job.status == "completed" and .job.completed_transactions == 3 and .job.progress_percentage == 100'
R_SEQ=$(j .seq)
ev=$(sql "$DB_RETRY" "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM job_events WHERE job_run_id = :'id'" -v id="$JOB_R")
[ "$ev" = "$R_SEQ|$R_SEQ|1|$R_SEQ" ] && ((R_SEQ > seq_before))
verdict "job_events of the retried job: exactly seq 1..$R_SEQ, continuing from $seq_before ($ev)"
pay=$(sql "$DB_RETRY" "SELECT string_agg(transaction_index || ':' || status, ',' ORDER BY transaction_index)
  FROM job_steps WHERE job_run_id = :'id' AND step_name = 'process_payment'" -v id="$JOB_R")
check "process_payment: exactly one row per transaction, all completed ($pay)" [ "$pay" = "1:completed,2:completed,3:completed" ]
steps_after=$(sql "$DB_RETRY" "SELECT $STEP_COLS FROM job_steps WHERE job_run_id = :'id' AND transaction_index IN (1, 2)
  AND NOT (transaction_index = 2 AND step_name = 'redeem_amazon_vouchers') ORDER BY created_at, id" -v id="$JOB_R")
steps_expected=$(grep -v '|redeem_amazon_vouchers|2|' <<<"$steps_before" | awk -F'|' '$3 == 1 || $3 == 2')
[ -n "$steps_after" ] && [ "$steps_after" = "$steps_expected" ]
verdict "the finished steps of transactions 1 and 2 (payments included) are untouched: same key, attempt, updated_at" \
  "$(diff <(echo "$steps_expected") <(echo "$steps_after"))"
rerun=$(sql "$DB_RETRY" "SELECT DISTINCT coalesce((row_data->>'transaction_index'), '0') || ':' || (row_data->>'step_name')
  FROM job_events WHERE job_run_id = :'id' AND seq > :'s' AND table_name = 'job_steps'
  ORDER BY 1" -v id="$JOB_R" -v s="$seq_before" | tr '\n' ' ')
expected_rerun="2:redeem_amazon_vouchers 3:generate_payment_link 3:process_payment 3:redeem_amazon_vouchers 3:wait_for_vouchers "
check "after the retry only the failed step of transaction 2 and transaction 3 ran (journal: $rerun)" \
  [ "$rerun" = "$expected_rerun" ]
redeem2=$(sql "$DB_RETRY" "SELECT status, attempt, idempotency_key <> :'old' FROM job_steps
  WHERE job_run_id = :'id' AND step_name = 'redeem_amazon_vouchers' AND transaction_index = 2" \
  -v id="$JOB_R" -v old="$(grep '|redeem_amazon_vouchers|2|' <<<"$steps_before" | cut -d'|' -f6)")
check "the failed redeem of transaction 2 ran again under a new key and completed ($redeem2)" [ "$redeem2" = "completed|1|t" ]
charged_retry=$(grep "sim: charged 1500 (job=$JOB_R " "$LOG_RETRY")
tx3_pay=$(sql "$DB_RETRY" "SELECT id FROM job_steps WHERE job_run_id = :'id' AND step_name = 'process_payment' AND transaction_index = 3" -v id="$JOB_R")
[ "$(grep -c . <<<"$charged_retry")" = 1 ] && contains "$charged_retry" "step=$tx3_pay "
verdict "the second run charged exactly one payment, transaction 3's" "$charged_retry"
api POST "/api/jobs/$JOB_R/retry" "$TOKEN_A" '{}'
expect_error "retrying the now completed job is 409" 409 conflict
stop_jobwire "$RETRY_PID"

# ==== nothing secret in any answer, row or log ===============================================

sort -u -o "$CODES_FILE" "$CODES_FILE"
n_codes=$(grep -c . "$CODES_FILE")
check "OTP codes were seen in the inbox ($n_codes; main server: $MAIN_CODES)" [ "$n_codes" -ge 8 ]
leaks=$(bodies_with_codes "$CODES_FILE")
check "no OTP code appears in any HTTP response but the admin inbox ($REQ_N responses)" [ -z "$leaks" ]
[[ -n $leaks ]] && head -5 <<<"$leaks"
db_leaks=""
for url in "$DB_MAIN" "$DB_OTP" "$DB_RETRY"; do
  hit=$(db_rows_with_codes "$url" "$CODES_FILE")
  [[ -n $hit ]] && db_leaks+="${url##*/}: $hit"$'\n'
done
check "no OTP code appears in any row of job_events, job_steps, otp_requests, job_runs, auth_sessions" [ -z "$db_leaks" ]
[[ -n $db_leaks ]] && printf '%s' "$db_leaks" | sed 's/^/#   /'
log_leaks=$(grep -hE -- "$(codes_regex "$CODES_FILE")" "$WORK"/*.log | grep -v "sim: SMS to " | head -3)
check "OTP codes appear in the server logs only in the simulated SMS lines" [ -z "$log_leaks" ]
[[ -n $log_leaks ]] && printf '%s\n' "$log_leaks" | sed 's/^/#   /'
printf '%s\n' "${SECRETS[@]}" >"$WORK/secrets"
secret_leaks=$(bodies_with_strings "$WORK/secrets")
grep -qF -f "$WORK/secrets" "$WORK"/*.log && secret_leaks+=" and in a server log"
check "no response body or log holds a token, the admin key or a secret (${#SECRETS[@]} checked)" [ -z "$secret_leaks" ]
[[ -n $secret_leaks ]] && printf '%s\n' "$secret_leaks" | head -5
check_error_shapes "every error answer ($(awk -F'\t' '$4 ~ /^[45]/' "$WORK/resp/index" | wc -l)) is JSON {\"error\":{\"code\",\"message\"}} (the OTP verdict 422 excepted)"

jw_summary
