#!/usr/bin/env bash
# Commands from any node (issue 14): two jobwire nodes (sim mode) on one
# PostgreSQL; jobs run on node a, their commands are sent to node b, which
# does not hold them, and reach a through the jw_inbox table:
#
#   1. a job's login OTPs typed on b: a wrong code over HTTP gets a's verdict
#      (422 invalid_otp, attempts_left 2), the right one 200; the other login's
#      code over /ws otp.submit gets otp.result ok;
#   2. a payment OTP submitted twice at once on b is consumed once: one 200,
#      the other 409 (not waiting), one attempt used;
#   3. cancel on b stops a job running on a (200, then cancelled), a's owner
#      unchanged; a cancel of a finished job is 409, of an unknown job 404,
#      an OTP of another user 404;
#   4. a node without --secret-key refuses to forward a code (503, nothing
#      stored); a's TTL passes after kill -9 with an OTP already typed on b: b takes
#      the job over and answers the OTP as the new owner, or with the
#      documented bounded error (503/504) - never a hang;
#   4b. an owner killed after it took a code, before its verdict: the caller
#      gets 503 from the node that took the job over, the request waits again;
#   4c. a code sent as the owner stops cleanly (SIGTERM) is judged by the
#      node that takes the handed-back job over;
#   5. no OTP value in any log, response or database row (the jw_inbox table
#      dumped included), and no inbox row left open.
#
# Usage: test_inbox.sh JOBWIRE JW_MINT_TOKEN  (DATABASE_URL: a PostgreSQL server)
# shellcheck disable=SC2016
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"
jw_init test-inbox "${1-}" "${2-}"
command -v node >/dev/null || bail "node is installed (scripts/deps)" "node not found"

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
USER_A=$(random_uuid)
USER_B=$(random_uuid)
TOKEN_A=$(mint "$JWT_SECRET" "$USER_A" 3600)
TOKEN_B=$(mint "$JWT_SECRET" "$USER_B" 3600)
DB=$(jw_fresh_db jw_test_inbox) || bail "create database jw_test_inbox"
ARGS=(--sim "latency_ms=5,voucher_polls=1,poll_after_ms=20" --retry-scale 0.01 --node-ttl 3s
  --provider-timeout 5000 --log-level debug)

start_jobwire "$DB" "$WORK/a.log" "${ARGS[@]}" --node-id a || bail "node a starts" "$START_ERROR"
A_PID=$SERVER_PID
A=$BASE
start_jobwire "$DB" "$WORK/b.log" "${ARGS[@]}" --node-id b || bail "node b starts" "$START_ERROR"
B_PID=$SERVER_PID
B=$BASE
BASE=$A

# new_job TX: a job of user A created on a; sets JOB.
new_job() {
  BASE=$A api POST /api/jobs "$TOKEN_A" '{"transaction_amount":300,"transaction_count":'"$1"'}'
  [[ $STATUS == 201 ]] || bail "POST /api/jobs on a" "status=$STATUS body=$BODY"
  JOB=$(j .job_id)
}
# code_of OTP_ID: its code in a's sim inbox (the job's node sends the SMS).
code_of() {
  BASE=$A inbox_for "$JOB"
  otp_code "$1"
}
# a wrong code: the right one with its first digit changed.
wrong_of() { local c=$1; printf '%s%s' "$(((${c:0:1} + 1) % 10))" "${c:1}"; }
inbox_metric() { metric "jobwire_inbox_commands_total{outcome=\"$1\"}" "$2"; }
open_rows() { sql "$DB" "SELECT count(*) FROM jw_inbox WHERE answered_at IS NULL"; }

# --- 1. login OTPs typed on b ------------------------------------------------------
new_job 2
JOB1=$JOB
BASE=$A wait_otp_requests "$JOB1" "$TOKEN_A" 30 2 || bail "job 1 asks for its two login OTPs" "$BODY"
read -r OTP1 OTP2 <<<"$OTP_IDS"
check_eq "job 1 runs on a" a "$(sql "$DB" "SELECT owner_node FROM job_runs WHERE id = '$JOB1'")"
C1=$(code_of "$OTP1")
C2=$(code_of "$OTP2")
BASE=$B api POST "/api/otp/$OTP1" "$TOKEN_A" "{\"otp\":\"$(wrong_of "$C1")\"}"
check_eq "a wrong code on b gets a's verdict: 422" 422 "$STATUS"
check "...{ok:false, error:invalid_otp, attempts_left:2}" \
  jtrue '.ok == false and .error == "invalid_otp" and .attempts_left == 2'
BASE=$B api POST "/api/otp/$OTP1" "$TOKEN_A" "{\"otp\":\"$C1\"}"
check_eq "the right code on b: 200" 200 "$STATUS"
check "...{ok:true}" jtrue '.ok == true'
check_eq "...and a verified it" verified "$(sql "$DB" "SELECT status FROM otp_requests WHERE id = '$OTP1'")"
ws_answer=$(node "$HERE/ws_otp_submit.mjs" "ws://${B#http://}/ws" "$TOKEN_A" "$OTP2" "$C2")
printf '%s\n' "$ws_answer" >"$WORK/resp/ws-1.body"
BODY=$ws_answer
check "the other login's code over /ws otp.submit on b: otp.result ok ($ws_answer)" \
  jtrue '.type == "otp.result" and .ok == true and .ref == "o1"'
check_eq "...verified by a" verified "$(sql "$DB" "SELECT status FROM otp_requests WHERE id = '$OTP2'")"
ws_answer=$(node "$HERE/ws_otp_submit.mjs" "ws://${B#http://}/ws" "$TOKEN_A" "$OTP2" "$C2")
printf '%s\n' "$ws_answer" >"$WORK/resp/ws-2.body"
BODY=$ws_answer
check "the same code again over /ws: error otp_not_waiting" \
  jtrue '.type == "error" and .code == "otp_not_waiting"'
check "b counts its forwards (jobwire_inbox_commands_total{outcome=forwarded})" \
  test "$(inbox_metric forwarded "$B")" -ge 3
check "...and the owner's verdicts (answered)" test "$(inbox_metric answered "$B")" -ge 3
check "a counts the rows it took (taken)" test "$(inbox_metric taken "$A")" -ge 3

# --- 2. one payment OTP submitted twice at once ---------------------------------------
BASE=$A wait_otp_requests "$JOB1" "$TOKEN_A" 30 1 || bail "job 1 asks for a payment OTP" "$BODY"
OTP3=${OTP_IDS%% *}
C3=$(code_of "$OTP3")
twice=()
for k in 1 2; do
  curl -sS --max-time 60 -o "$WORK/resp/twice-$k.body" -w '%{http_code}' -X POST \
    -H "Authorization: Bearer $TOKEN_A" -H 'Content-Type: application/json' \
    --data-binary "{\"otp\":\"$C3\"}" "$B/api/otp/$OTP3" >"$WORK/twice-$k.status" &
  twice+=("$!")
done
wait "${twice[@]}"
statuses=$(for k in 1 2; do cat "$WORK/twice-$k.status"; echo; done | sort | paste -sd' ')
check_eq "the same payment OTP twice at once on b: one 200, the other 409 (consumed once)" \
  "200 409" "$statuses"
check_eq "...verified, no attempt used up" "verified 0" \
  "$(sql "$DB" "SELECT status || ' ' || attempts_count FROM otp_requests WHERE id = '$OTP3'")"
check_eq "...a's engine received the code once (its log)" 1 \
  "$(grep -c "engine: OTP received job=$JOB1 .* otp=$OTP3" "$WORK/a.log")"
check "...the other submission was refused by a as not waiting" \
  grep -q "OTP request $OTP3 is received, not waiting for a code\\|OTP request $OTP3 is verified, not waiting for a code" "$WORK"/resp/twice-*.body

# --- 3. cancel on b ----------------------------------------------------------------------
new_job 2
JOB2=$JOB
BASE=$A wait_otp_requests "$JOB2" "$TOKEN_A" 30 1 || bail "job 2 waits for an OTP" "$BODY"
BASE=$B api POST "/api/jobs/$JOB2/cancel" "$TOKEN_B" '{}'
check_eq "another user's cancel on b: 404" 404 "$STATUS"
BASE=$B api POST "/api/otp/${OTP_IDS%% *}" "$TOKEN_B" '{"otp":"123456"}'
check_eq "another user's OTP on b: 404" 404 "$STATUS"
BASE=$B api POST "/api/otp/${OTP_IDS%% *}" "$TOKEN_A" '{"otp":"12"}'
check_eq "a malformed code on b: 400 invalid_field (never forwarded)" "400 invalid_field" "$STATUS $(j .error.code)"
BASE=$B api POST "/api/jobs/$JOB2/cancel" "$TOKEN_A" '{}'
check_eq "cancel on b of a job running on a: 200" 200 "$STATUS"
check "...with the job after the cancel (cancel_requested)" \
  jtrue '.job_id == $id and .job.cancel_requested == true' --arg id "$JOB2"
cancelled() { [[ $(sql "$DB" "SELECT status FROM job_runs WHERE id = '$JOB2'") == cancelled ]]; }
check "...and a stops it (cancelled)" wait_until 30 cancelled
check_eq "...still owned by a" a "$(sql "$DB" "SELECT owner_node FROM job_runs WHERE id = '$JOB2'")"
BASE=$B api POST "/api/jobs/$JOB2/cancel" "$TOKEN_A" '{}'
check_eq "cancel of a cancelled job on b: 409" 409 "$STATUS"
BASE=$B api POST "/api/jobs/$(random_uuid)/cancel" "$TOKEN_A" '{}'
check_eq "cancel of an unknown job on b: 404" 404 "$STATUS"

# --- 4. the owner killed with an OTP on its way ---------------------------------------------
new_job 2
JOB3=$JOB
BASE=$A wait_otp_requests "$JOB3" "$TOKEN_A" 30 1 || bail "job 3 waits for an OTP" "$BODY"
OTP4=${OTP_IDS%% *}
C4=$(code_of "$OTP4")
# A node without --secret-key (dev mode) cannot forward a code: a clear 503, nothing stored.
port=$(free_port) || bail "a free port for node c"
DATABASE_URL=$DB "$BIN" --listen "127.0.0.1:$port" --dev --admin-key "$ADMIN_KEY" \
  --jwt-secret "$JWT_SECRET" --node-id c "${ARGS[@]}" >>"$WORK/c.log" 2>&1 &
C_PID=$!
PIDS+=("$C_PID")
c_ready() { [[ $(curl -sS --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" 2>/dev/null) == 200 ]]; }
wait_until 30 c_ready || bail "node c (no --secret-key) starts" "$(tail -5 "$WORK/c.log")"
BASE=http://127.0.0.1:$port api POST "/api/otp/$OTP4" "$TOKEN_A" "{\"otp\":\"$C4\"}"
check_eq "an OTP sent to a node without --secret-key: 503 unavailable" "503 unavailable" "$STATUS $(j .error.code)"
check "...saying why (every node needs the same --secret-key)" contains "$(j .error.message)" "--secret-key"
check_eq "...and nothing was stored for it" 0 "$(sql "$DB" "SELECT count(*) FROM jw_inbox WHERE target = '$OTP4'")"
check_eq "...the request still waits for its code" requested "$(sql "$DB" "SELECT status FROM otp_requests WHERE id = '$OTP4'")"
kill -TERM "$C_PID"
wait "$C_PID" 2>/dev/null

kill -KILL "$A_PID"
wait "$A_PID" 2>/dev/null
pass "a killed (kill -9) with job 3 waiting for OTP $OTP4"
t0=$SECONDS
curl -sS --max-time 60 -o "$WORK/resp/killed.body" -w '%{http_code}' -X POST \
  -H "Authorization: Bearer $TOKEN_A" -H 'Content-Type: application/json' \
  --data-binary "{\"otp\":\"$C4\"}" "$B/api/otp/$OTP4" >"$WORK/killed.status" &
submit_pid=$!
# While nobody can take it (a is dead, b has not taken over yet) the row holds the code,
# sealed: never in the clear.
row_waits() { [[ $(sql "$DB" "SELECT count(*) FROM jw_inbox WHERE target = '$OTP4' AND sealed IS NOT NULL") == 1 ]]; }
if wait_until 10 row_waits; then
  sql "$DB" "SELECT *, encode(sealed, 'escape') FROM jw_inbox WHERE target = '$OTP4'" >"$WORK/inbox-waiting"
  check "the waiting row holds the code sealed, not in the clear (dumped raw and as text)" \
    bash -c '! grep -qE -- "$1" "$2"' _ "$(code_regex "$C4")" "$WORK/inbox-waiting"
  check_eq "...as nonce + ciphertext + tag (12 + ${#C4} + 16 bytes)" "$((28 + ${#C4}))" \
    "$(sql "$DB" "SELECT octet_length(sealed) FROM jw_inbox WHERE target = '$OTP4'")"
else
  pass "(the row was taken before it could be looked at)"
fi
wait "$submit_pid"
took=$((SECONDS - t0))
STATUS=$(cat "$WORK/killed.status")
BODY=$(cat "$WORK/resp/killed.body")
check "an OTP sent to b for the dead node's job is answered, not left hanging (status $STATUS after ${took}s: $BODY)" \
  contains " 200 422 503 504 " " $STATUS "
check_eq "b took the job over" b "$(sql "$DB" "SELECT owner_node FROM job_runs WHERE id = '$JOB3'")"
if [[ $STATUS == 200 || $STATUS == 422 ]]; then
  check "...and judged the code as its new owner (its log)" grep -q "inbox: took otp row" "$WORK/b.log"
else
  check "...the bounded error says why" jtrue '.error.code == "unavailable" or .error.code == "timeout"'
fi

# --- 4b. the owner dies after it took the code, before its verdict ----------------------------
# Node a2's provider answers after 4 s: it takes the row, hands the code to its sim and is
# killed meanwhile. b takes the job over and answers the row for it: 503, try again.
start_jobwire "$DB" "$WORK/a2.log" "${ARGS[@]}" --node-id a2 --sim "latency_ms=4000,voucher_polls=1,poll_after_ms=20" ||
  bail "node a2 starts" "$START_ERROR"
A2_PID=$SERVER_PID
A=$BASE # a is gone: a2 is where new jobs start
new_job 1
JOB4=$JOB
BASE=$A wait_otp_requests "$JOB4" "$TOKEN_A" 30 1 || bail "job 4 waits for an OTP on a2" "$BODY"
OTP5=${OTP_IDS%% *}
C5=$(code_of "$OTP5")
curl -sS --max-time 60 -o "$WORK/resp/stale.body" -w '%{http_code}' -X POST \
  -H "Authorization: Bearer $TOKEN_A" -H 'Content-Type: application/json' \
  --data-binary "{\"otp\":\"$C5\"}" "$B/api/otp/$OTP5" >"$WORK/stale.status" &
submit_pid=$!
a2_took() { [[ $(sql "$DB" "SELECT count(*) FROM jw_inbox WHERE target = '$OTP5' AND taken_by = 'a2' AND sealed IS NULL") == 1 ]]; }
check "a2 takes the row (and erases the code as it does)" wait_until 10 a2_took
kill -KILL "$A2_PID"
wait "$A2_PID" 2>/dev/null
pass "a2 killed with the code at its provider"
wait "$submit_pid"
STATUS=$(cat "$WORK/stale.status")
BODY=$(cat "$WORK/resp/stale.body")
check_eq "the caller gets b's answer for the dead owner: 503 unavailable" "503 unavailable" "$STATUS $(j .error.code)"
check "...saying the job's node stopped before it judged the code ($BODY)" \
  contains "$(j .error.message)" "stopped before it judged"
check "b counts it (owner_changed)" test "$(inbox_metric owner_changed "$B")" -ge 1
check_eq "...b owns the job now" b "$(sql "$DB" "SELECT owner_node FROM job_runs WHERE id = '$JOB4'")"
check_eq "...whose OTP request waits for a code again (never applied twice)" requested \
  "$(sql "$DB" "SELECT status FROM otp_requests WHERE id = '$OTP5'")"

# --- 4c. the owner stops cleanly (SIGTERM hands its leases back) as a code is sent ------------
start_jobwire "$DB" "$WORK/a3.log" "${ARGS[@]}" --node-id a3 || bail "node a3 starts" "$START_ERROR"
A3_PID=$SERVER_PID
A=$BASE
new_job 1
JOB5=$JOB
BASE=$A wait_otp_requests "$JOB5" "$TOKEN_A" 30 1 || bail "job 5 waits for an OTP on a3" "$BODY"
OTP6=${OTP_IDS%% *}
C6=$(code_of "$OTP6")
kill -TERM "$A3_PID"
BASE=$B api POST "/api/otp/$OTP6" "$TOKEN_A" "{\"otp\":\"$C6\"}"
check "a code sent as its node stops is judged by the node that takes the job over (status $STATUS: $BODY)" \
  contains " 200 422 " " $STATUS "
wait "$A3_PID" 2>/dev/null
check_eq "...b, which took the handed-back job" b "$(sql "$DB" "SELECT owner_node FROM job_runs WHERE id = '$JOB5'")"

# --- 5. no code anywhere, no row left ------------------------------------------------------
# The responses read outside api(): into the index, so bodies_with_codes reads them too.
for n in ws-1 ws-2 twice-1 twice-2 killed stale; do
  printf '%s\t%s\t%s\t%s\t%s\n' "$n" POST "(outside api)" 0 "" >>"$WORK/resp/index"
done
printf '%s\n' "$C1" "$(wrong_of "$C1")" "$C2" "$C3" "$C4" "$C5" "$C6" >"$WORK/typed"
sql "$DB" "SELECT * FROM jw_inbox" >"$WORK/inbox-dump"
check "the jw_inbox table holds no code (dumped)" \
  bash -c '! grep -qE -- "$1" "$2"' _ "$(codes_regex "$WORK/typed")" "$WORK/inbox-dump"
check_eq "...no sealed value is left in it" 0 "$(sql "$DB" "SELECT count(*) FROM jw_inbox WHERE sealed IS NOT NULL")"
check_eq "...and no row is left open" 0 "$(open_rows)"
check_eq "no job table row holds a typed code" "" "$(db_rows_with_codes "$DB" "$WORK/typed")"
check_eq "no response (HTTP or WebSocket) holds a typed code" "" "$(bodies_with_codes "$WORK/typed")"
check "no log line holds a typed code" \
  bash -c '! grep -hE -- "$1" "$2" "$3" "$4" "$5" "$6" | grep -v " INFO  sim: SMS to "' _ "$(codes_regex "$WORK/typed")" "$WORK/a.log" "$WORK/b.log" "$WORK/c.log" "$WORK/a2.log" "$WORK/a3.log"

kill -TERM "$B_PID" 2>/dev/null
wait "$B_PID" 2>/dev/null
jw_summary
