#!/usr/bin/env bash
# Integration test of jobwire's HTTP side and start-up: the real binary against
# the real PostgreSQL in DATABASE_URL, driven with curl over 127.0.0.1.
#
# Usage: DATABASE_URL=postgresql://... tests/integration/test_server.sh path/to/jobwire
# Prints one line per check and "N passed, N failed" last; exits 1 on any failure.
set -uo pipefail

BIN=${1:?usage: test_server.sh path/to/jobwire}
: "${DATABASE_URL:?DATABASE_URL must point at a PostgreSQL database (scripts/test sets it)}"
[[ -x $BIN ]] || { echo "not executable: $BIN" >&2; exit 2; }
for tool in curl ss; do
  command -v "$tool" >/dev/null || { echo "test_server.sh needs $tool" >&2; exit 2; }
done

# Settings from the caller's environment would change what is tested.
unset JOBWIRE_LISTEN JOBWIRE_ADMIN_KEY JOBWIRE_JWT_SECRET JOBWIRE_SECRET_KEY JOBWIRE_PROVIDER \
  JOBWIRE_ORIGINS JOBWIRE_DEV JOBWIRE_LOG_LEVEL JOBWIRE_DB_MAX_GROUP JOBWIRE_MAX_BODY \
  JOBWIRE_TLS_CERT JOBWIRE_TLS_KEY

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jw-test-server.XXXXXX")
PIDS=()

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# The password in a libpq URI (user:password@) or key=value string, if any.
db_password() {
  local url=$1
  if [[ $url =~ ^[a-z]+://[^/@:]*:([^@/]*)@ ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}"
  elif [[ $url =~ password=\'?([^\' ]*) ]]; then
    printf '%s\n' "${BASH_REMATCH[1]}"
  fi
}

# Waits up to $2 seconds for pid $1 to exit; sets EXIT_CODE (or returns 1).
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
  wait "$pid"
  EXIT_CODE=$?
  return 0
}

BASE=
SERVER_PID=
# start_server LOGFILE ARGS...: starts jobwire on a free port, waits up to 20 s
# for /healthz. Retries with another port if it lost a race for the first.
start_server() {
  local log=$1 deadline port
  shift
  for _ in 1 2 3; do
    port=$(free_port) || return 1
    "$BIN" --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=$port
    BASE="http://127.0.0.1:$port"
    deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)); do
      if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        break
      fi
      if curl -fsS --max-time 1 -o /dev/null "$BASE/healthz" 2>/dev/null; then
        return 0
      fi
      sleep 0.2
    done
    if kill -0 "$SERVER_PID" 2>/dev/null || ! grep -q "cannot listen" "$log"; then
      return 1
    fi
  done
  return 1
}

# request METHOD PATH [CURL ARGS...]: sets STATUS, HEADERS (lower-case names), BODY.
request() {
  local method=$1 path=$2
  shift 2
  local -a how=(-X "$method")
  [[ $method == HEAD ]] && how=(-I)
  STATUS=$(curl -sS --max-time 10 "${how[@]}" -o "$WORK/body" -D "$WORK/headers" \
    -w '%{http_code}' "$@" "$BASE$path" 2>"$WORK/curl.err") || STATUS="curl-failed"
  HEADERS=$(tr -d '\r' <"$WORK/headers" | tr '[:upper:]' '[:lower:]')
  BODY=$(cat "$WORK/body")
}

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
SECRETS=("$ADMIN_KEY" "$JWT_SECRET" "$SECRET_KEY")

# With trust authentication any password is accepted: give the server one, so
# the log is checked for a password even when DATABASE_URL carries none.
DB_URL=$DATABASE_URL
if [[ -z $(db_password "$DB_URL") && $DB_URL =~ ^(postgres(ql)?://)([^@/:]+)@(.*)$ ]] \
  && command -v psql >/dev/null; then
  candidate="${BASH_REMATCH[1]}${BASH_REMATCH[3]}:pw-$(random_hex 8)@${BASH_REMATCH[4]}"
  if psql "$candidate" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    DB_URL=$candidate
  fi
fi
DB_PASSWORD=$(db_password "$DB_URL")
[[ -n $DB_PASSWORD ]] && SECRETS+=("$DB_PASSWORD")

# --- the running server -------------------------------------------------------

LOG="$WORK/server.log"
if ! DATABASE_URL=$DB_URL start_server "$LOG" --dev --log-level debug \
  --admin-key "$ADMIN_KEY" --jwt-secret "$JWT_SECRET" --secret-key "$SECRET_KEY"; then
  fail "server starts and answers /healthz within 20 s" "$(tail -20 "$LOG")"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
pass "server starts and answers /healthz within 20 s"

request GET /healthz
check "GET /healthz is 200" [ "$STATUS" = 200 ]
check "GET /healthz body is {\"status\":\"ok\"}" [ "$BODY" = '{"status":"ok"}' ]
check "GET /healthz is application/json" contains "$HEADERS" "content-type: application/json"
check "responses carry X-Content-Type-Options: nosniff" \
  contains "$HEADERS" "x-content-type-options: nosniff"
check "JSON responses carry Cache-Control: no-store" contains "$HEADERS" "cache-control: no-store"

# The store connects on its own thread; give it a moment.
deadline=$((SECONDS + 15))
while :; do
  request GET /readyz
  [[ $STATUS == 200 ]] && break
  ((SECONDS < deadline)) || break
  sleep 0.2
done
if [[ $STATUS == 200 ]] && contains "$BODY" '"status":"ready"' \
  && contains "$BODY" '"database":"up"' && [[ $BODY =~ \"migrations\":[1-9] ]]; then
  pass "GET /readyz is 200 ready with database up and migrations"
else
  fail "GET /readyz is 200 ready with database up and migrations" "$STATUS $BODY"
fi

request GET /no/such/path
check "unknown path is 404" [ "$STATUS" = 404 ]
check "404 body is a JSON error with code not_found" \
  contains "$BODY" '{"error":{"code":"not_found","message":'
check "404 carries X-Content-Type-Options: nosniff" \
  contains "$HEADERS" "x-content-type-options: nosniff"

# lws decodes %FF into a byte a JSON string cannot hold: the message keeps its text,
# that byte shown as '?' (it used to become "(message not representable)").
request GET /no/such/%FF%FE
check "a path that is not UTF-8 is 404 with its message: no route /no/such/??" \
  contains "$BODY" '{"error":{"code":"not_found","message":"no route /no/such/??"}}'
request GET /api/%FFjobs -H "Authorization: Bearer $ADMIN_KEY"
check "... under /api/ too: no route /api/?jobs" \
  contains "$BODY" '{"error":{"code":"not_found","message":"no route /api/?jobs"}}'

# An empty query argument is skipped: the ones after it still count (an empty one
# used to end the query, so a bad filter after "&&" went unjudged and unapplied).
request GET '/api/jobs?&status=bogus' -H "Authorization: Bearer $ADMIN_KEY"
check "GET /api/jobs?&status=bogus is 400 invalid_parameter (got $STATUS)" \
  contains "$STATUS $BODY" '400 {"error":{"code":"invalid_parameter","message":"status must be'
request GET '/api/jobs?limit=1&&&before=nope&' -H "Authorization: Bearer $ADMIN_KEY"
check "GET /api/jobs?limit=1&&&before=nope& is 400 naming before (got $STATUS)" \
  contains "$STATUS $BODY" '400 {"error":{"code":"invalid_parameter","message":"before must'
request GET '/api/jobs?&&limit=1&' -H "Authorization: Bearer $ADMIN_KEY"
check "GET /api/jobs?&&limit=1& is 200 with next_before (got $STATUS)" \
  contains "$STATUS $BODY" '200 {"jobs":['

request POST /healthz
check "POST /healthz is 405" [ "$STATUS" = 405 ]
check "405 names the allowed methods in Allow" contains "$HEADERS" "allow: get, head"
check "405 body has code method_not_allowed" contains "$BODY" '"code":"method_not_allowed"'

request POST /healthz -H 'Content-Type: application/json' --data-binary '{"a":1}'
check "POST /healthz with a body is 405 too" [ "$STATUS" = 405 ]

# The web page's route serves only its files: a path that names none is no route's,
# whatever the method (a POST to it used to be 405 "use GET, HEAD", as if it existed).
for m in POST PUT DELETE; do
  request "$m" /no/such/file -H 'Content-Type: application/json' --data-binary '{}'
  check "$m /no/such/file is 404 not_found like its GET (got $STATUS)" \
    contains "$STATUS $BODY" '404 {"error":{"code":"not_found","message":"no route /no/such/file"}}'
done
request POST / -H 'Content-Type: application/json' --data-binary '{}'
check "POST / (the page exists) is 405 with Allow: GET, HEAD (got $STATUS)" \
  contains "$STATUS $HEADERS" "405 " && contains "$HEADERS" "allow: get, head"
request GET /
check "GET / still serves the page (got $STATUS)" [ "$STATUS" = 200 ]

# curl cannot show that no body follows a HEAD response; a raw HTTP/1.0 exchange can.
(exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'HEAD /healthz HTTP/1.0\r\n\r\n' >&3 \
  && timeout 5 cat <&3 >"$WORK/head") 2>/dev/null
[[ $(head -1 "$WORK/head") == "HTTP/1.0 200 "* ]] &&
  grep -qi "^content-length: 15" "$WORK/head" &&
  [ "$(tail -c 4 "$WORK/head" | od -An -tx1 | tr -d " \n")" = 0d0a0d0a ]
verdict "HEAD /healthz is 200 with Content-Length and no body"

head -c 70000 /dev/zero | tr '\0' 'x' >"$WORK/big"
request POST /healthz --data-binary @"$WORK/big"
check "a body over --max-body (65536) is 413" [ "$STATUS" = 413 ]
check "413 body has code body_too_large" contains "$BODY" '"code":"body_too_large"'

# Chunked request bodies are read (they used to be 411), de-chunked and held to
# --max-body; they are read only for a route, and the connection closes after them.
request POST /healthz -H 'Transfer-Encoding: chunked' --data-binary 'abc'
check "a chunked POST to a GET-only route is 405, not 411 (got $STATUS)" [ "$STATUS" = 405 ]
check "... and closes the connection" contains "$HEADERS" "connection: close"
request POST /api/jobs -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/big"
check "a chunked body over --max-body (65536) is 413 (got $STATUS)" [ "$STATUS" = 413 ]
check "... body_too_large naming the limit" \
  contains "$BODY" '"code":"body_too_large","message":"chunked request body exceeds the limit of 65536 bytes'
check "... and closes the connection" contains "$HEADERS" "connection: close"
request POST /api/jobs -H 'Transfer-Encoding: gzip, chunked' --data-binary 'abc'
check "a transfer coding other than chunked is 400 (got $STATUS)" \
  contains "$STATUS $BODY" '400 {"error":{"code":"bad_request","message":"Transfer-Encoding must be chunked'
# RFC 9112 section 6.3: both headers are how requests are smuggled past a proxy.
request POST /healthz -H 'Transfer-Encoding: chunked' -H 'Content-Length: 3' --data-binary 'abc'
check "Content-Length with Transfer-Encoding is 400, routed or not (got $STATUS)" \
  contains "$STATUS $BODY" '400 {"error":{"code":"bad_request","message":"a request must not carry both Content-Length and Transfer-Encoding'
check "... and closes the connection" contains "$HEADERS" "connection: close"

# Two requests on one connection: the second must not connect again.
connects=$(curl -sS --max-time 10 -o /dev/null -o /dev/null -w '%{num_connects} ' \
  "$BASE/healthz" "$BASE/no/such/path")
check "keep-alive: a second request reuses the connection (connects: $connects)" \
  [ "$connects" = "1 0 " ]

listeners=$(ss -Hltn "sport = :$PORT" | awk '{print $4}')
check "listens on 127.0.0.1:$PORT only (got: $listeners)" [ "$listeners" = "127.0.0.1:$PORT" ]

# A second server on the same port fails clearly, after migrating.
DATABASE_URL=$DB_URL timeout 30 "$BIN" --dev --listen "127.0.0.1:$PORT" >"$WORK/busy.log" 2>&1
code=$?
check "a second server on a busy port exits 1 (got $code)" [ "$code" = 1 ]
check "and says it cannot listen on 127.0.0.1:$PORT" \
  grep -q "cannot listen on 127.0.0.1:$PORT" "$WORK/busy.log"

kill -TERM "$SERVER_PID"
if wait_exit "$SERVER_PID" 10; then
  check "SIGTERM: exits 0 within 10 s (got $EXIT_CODE)" [ "$EXIT_CODE" = 0 ]
else
  fail "SIGTERM: exits 0 within 10 s (still running)"
fi
check "the start line names the listen address and mode" \
  grep -q "listening on http://127.0.0.1:$PORT (dev mode) provider=sim db=" "$LOG"
if [[ -n $DB_PASSWORD ]]; then
  check "the start line masks the database password" grep -q 'db=[^ ]*:\*\*\*@' "$LOG"
fi

leaked=0
for s in "${SECRETS[@]}"; do
  grep -qF -- "$s" "$LOG" "$WORK/busy.log" && leaked=$((leaked + 1))
done
check "the server log holds none of the secrets passed (${#SECRETS[@]} checked)" [ "$leaked" = 0 ]

# --- configuration ------------------------------------------------------------

out=$("$BIN" --help 2>&1)
code=$?
check "--help exits 0" [ "$code" = 0 ]
for name in DATABASE_URL JOBWIRE_LISTEN JOBWIRE_ADMIN_KEY JOBWIRE_JWT_SECRET JOBWIRE_SECRET_KEY \
  JOBWIRE_PROVIDER JOBWIRE_ORIGINS JOBWIRE_DEV JOBWIRE_LOG_LEVEL JOBWIRE_DB_MAX_GROUP \
  JOBWIRE_MAX_BODY; do
  contains "$out" "$name" || fail "--help lists $name"
done
check "--help lists the settings with defaults" contains "$out" "default: 127.0.0.1:8080"

out=$("$BIN" --version 2>&1)
check "--version exits 0 and names jobwire" [ $? = 0 -a "${out%% *}" = jobwire ]

out=$("$BIN" --listen 127.0.0.1:1 2>&1)
code=$?
check "production without secrets exits 2 (got $code)" [ "$code" = 2 ]
contains "$out" JOBWIRE_ADMIN_KEY &&
  contains "$out" JOBWIRE_JWT_SECRET && contains "$out" JOBWIRE_SECRET_KEY
verdict "and names the three missing settings"

out=$("$BIN" --listen 127.0.0.1:1 --admin-key "$ADMIN_KEY" --jwt-secret "$JWT_SECRET" 2>&1)
contains "$out" JOBWIRE_SECRET_KEY &&
  ! contains "$out" JOBWIRE_ADMIN_KEY
verdict "with two secrets it names only the missing one"

bad_key="0123456789ab"
out=$("$BIN" --dev --secret-key "$bad_key" 2>&1)
code=$?
check "a bad --secret-key exits 2 (got $code)" [ "$code" = 2 ]
contains "$out" "--secret-key must be 64 hex characters (32 bytes); got 12 characters" &&
  contains "$out" "openssl rand -hex 32"
verdict "and says 64 hex characters and how to generate one"
! contains "$out" "$bad_key"
verdict "and does not repeat the value"

out=$(JOBWIRE_SECRET_KEY="zz${SECRET_KEY:2}" "$BIN" --dev 2>&1)
contains "$out" "JOBWIRE_SECRET_KEY must be 64 hex characters"
verdict "a non-hex JOBWIRE_SECRET_KEY is refused by its variable name"

out=$("$BIN" --dev --admin-key short 2>&1)
code=$?
check "an admin key under 16 characters exits 2" [ "$code" = 2 ]
check "and says at least 16 characters" contains "$out" "at least 16 characters"

out=$("$BIN" --no-such-flag 2>&1)
code=$?
check "an unknown flag exits 2 (got $code)" [ "$code" = 2 ]
check "and is named in the message" contains "$out" "unknown option '--no-such-flag'"

out=$("$BIN" --lis=127.0.0.1:1 --dev 2>&1)
check "an abbreviated flag is unknown too (exit 2)" [ $? = 2 ]

out=$("$BIN" --dev --listen 127.0.0.1:70000 2>&1)
code=$?
check "--listen with port 70000 exits 2" [ "$code" = 2 ]
check "and says the port must be 1..65535" contains "$out" "port must be a number 1..65535"

out=$("$BIN" --dev --listen example.com:80 2>&1)
check "--listen with a host name exits 2" [ $? = 2 ]

out=$(env -u DATABASE_URL "$BIN" --dev 2>&1)
code=$?
[ "$code" = 2 ] && contains "$out" DATABASE_URL
verdict "no DATABASE_URL exits 2 and says so"

out=$(env -u DATABASE_URL JOBWIRE_MAX_BODY=1 "$BIN" --dev 2>&1)
check "an environment variable is used when its flag is absent" \
  contains "$out" "JOBWIRE_MAX_BODY must be a whole number"
out=$(env -u DATABASE_URL JOBWIRE_MAX_BODY=1 "$BIN" --dev --max-body 2048 2>&1)
! contains "$out" MAX_BODY && contains "$out" DATABASE_URL
verdict "a flag wins over its environment variable"

out=$("$BIN" --dev --provider ftp://x 2>&1)
check "--provider must be sim or an http(s) URL (exit 2)" [ $? = 2 ]

# --- an unreachable database at start-up ---------------------------------------

DOWN_PW="down-$(random_hex 8)"
DOWN_LOG="$WORK/down.log"
DATABASE_URL="postgresql://jobwire:$DOWN_PW@127.0.0.1:1/jobwire" "$BIN" --dev \
  --listen "127.0.0.1:$(free_port)" >"$DOWN_LOG" 2>&1 &
DOWN_PID=$!
PIDS+=("$DOWN_PID")
deadline=$((SECONDS + 10))
# The log file appears once the child has set up its redirection.
while (($(grep -c "retrying in" "$DOWN_LOG" 2>/dev/null || true) + 0 < 2)) \
  && ((SECONDS < deadline)); do
  sleep 0.1
done
grep -q "retrying in 500 ms" "$DOWN_LOG" && grep -q "retrying in 1000 ms" "$DOWN_LOG"
verdict "an unreachable database is retried with backoff"
kill -TERM "$DOWN_PID"
if wait_exit "$DOWN_PID" 10; then
  check "SIGTERM while waiting for the database exits 0 (got $EXIT_CODE)" [ "$EXIT_CODE" = 0 ]
else
  fail "SIGTERM while waiting for the database exits 0 (still running)"
fi
! grep -qF "$DOWN_PW" "$DOWN_LOG"
verdict "the retry log does not hold the database password"

jw_summary
