# shellcheck shell=bash disable=SC2034,SC2016  # globals are read by the scripts; jq filters use $vars
# lib.sh - helpers shared by every shell suite in tests/integration: results
# (pass, fail, check, check_eq, verdict, jw_summary), free ports, a fresh
# database per script, SQL; and for the job API suites (test_api.sh,
# test_api_restart.sh, test_money_once.sh, test_tls.sh) starting and stopping
# jobwire, curl wrappers that record every response, JSON through jq, minted
# user tokens, and a driver that answers a job's OTP prompts from the sim inbox.
#
# Source it. The job API suites then call jw_init NAME JOBWIRE MINT; the
# others keep their own set-up and use the helpers above. Needs bash 4+, curl,
# jq, psql, ss.
#
# Conventions
#   - Every server listens on 127.0.0.1 only and is killed by its PID (EXIT trap).
#   - Every wait is a bounded poll; a deadline that passes is a test failure
#     with a message, never a silent pass.
#   - api/api_raw record each response under $WORK/resp (index + bodies), so a
#     script can check afterwards that no body held a secret or an OTP.

# --- set-up -------------------------------------------------------------------

# jw_init NAME JOBWIRE MINT: checks tools and arguments, makes $WORK, arms the trap.
jw_init() {
  JW_TEST_NAME=$1
  BIN=$2
  MINT=$3
  [[ -n $BIN && -x $BIN ]] || { echo "$JW_TEST_NAME: jobwire not executable: '$BIN'" >&2; exit 2; }
  [[ -n $MINT && -x $MINT ]] || { echo "$JW_TEST_NAME: jw-mint-token not executable: '$MINT'" >&2; exit 2; }
  : "${DATABASE_URL:?DATABASE_URL must point at a PostgreSQL server (scripts/test sets it)}"
  local tool
  for tool in curl jq psql ss od; do
    command -v "$tool" >/dev/null || { echo "$JW_TEST_NAME needs $tool" >&2; exit 2; }
  done
  # Settings from the caller's environment would change what is tested.
  unset JOBWIRE_LISTEN JOBWIRE_ADMIN_KEY JOBWIRE_JWT_SECRET JOBWIRE_SECRET_KEY JOBWIRE_PROVIDER \
    JOBWIRE_ORIGINS JOBWIRE_DEV JOBWIRE_LOG_LEVEL JOBWIRE_DB_MAX_GROUP JOBWIRE_MAX_BODY \
    JOBWIRE_SIM JOBWIRE_OTP_TIMEOUT_LOGIN JOBWIRE_OTP_TIMEOUT_PAYMENT JOBWIRE_PROVIDER_TIMEOUT \
    JOBWIRE_RETRY_SCALE JOBWIRE_TLS_CERT JOBWIRE_TLS_KEY JOBWIRE_EVENTS_RETENTION \
    JOBWIRE_EVENTS_RETENTION_BATCH JOBWIRE_EVENTS_RETENTION_INTERVAL JOBWIRE_MAX_CONNECTIONS \
    JOBWIRE_FINISHED_JOB_TTL JOBWIRE_MAX_CONNECTIONS_PER_IP JOBWIRE_CONNECTION_RATE_PER_IP \
    JOBWIRE_MAX_LIVE_JOBS_PER_USER JOBWIRE_JOB_RATE_PER_USER JOBWIRE_OTP_RATE_PER_USER \
    JOBWIRE_MAX_WS_PER_USER JOBWIRE_WS_MESSAGE_RATE JOBWIRE_JWT_AUDIENCE JOBWIRE_JWT_ISSUER \
    JOBWIRE_NODE_ID JOBWIRE_NODE_TTL
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/jw-$JW_TEST_NAME.XXXXXX")
  mkdir -p "$WORK/resp"
  : >"$WORK/resp/index"
  PIDS=()
  PASSED=0
  FAILED=0
  REQ_N=0
  CODES_FILE=$WORK/codes # every OTP code seen in a sim inbox, one a line
  : >"$CODES_FILE"
  trap jw_cleanup EXIT
  # A Ctrl-C or ctest timeout still runs the EXIT trap.
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

jw_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
    fi
  done
  if [[ -n ${JW_KEEP_WORK-} ]]; then
    echo "# work folder kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# A random version-4 UUID.
random_uuid() {
  local h
  h=$(random_hex 16)
  printf '%s-%s-4%s-8%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" "${h:17:3}" "${h:20:12}"
}

# --- results --------------------------------------------------------------------

PASSED=0
FAILED=0

pass() {
  PASSED=$((PASSED + 1))
  echo "ok - $1"
}

# fail DESCRIPTION [DETAILS]
fail() {
  FAILED=$((FAILED + 1))
  echo "not ok - $1"
  if [[ -n ${2-} ]]; then
    printf '%s\n' "$2" | head -30 | sed 's/^/#   /'
  fi
}

# check DESCRIPTION COMMAND...: passes when the command succeeds; shows the
# last response on failure.
check() {
  local desc=$1
  shift
  if "$@"; then pass "$desc"; else fail "$desc" "status=${STATUS-} body=$(printf '%.600s' "${BODY-}")"; fi
}

# check_eq DESCRIPTION EXPECTED ACTUAL: passes when ACTUAL is EXPECTED (as strings).
check_eq() {
  if [[ $3 == "$2" ]]; then pass "$1"; else fail "$1 (expected '$2', got '$3')"; fi
}

# jw_summary: the last line, and the exit status.
jw_summary() {
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
}

# bail DESCRIPTION [DETAILS]: a failure the rest of the script cannot survive.
bail() {
  fail "$@"
  jw_summary
  exit 1
}

contains() { [[ $1 == *"$2"* ]]; }

# --- PostgreSQL -------------------------------------------------------------------

# jw_db_url NAME: DATABASE_URL with its database replaced by NAME.
jw_db_url() {
  local name=$1 url=$DATABASE_URL
  if [[ $url =~ ^(postgres(ql)?://[^/?]*)(/[^?]*)?(\?.*)?$ ]]; then
    printf '%s/%s%s\n' "${BASH_REMATCH[1]}" "$name" "${BASH_REMATCH[4]}"
  else
    printf '%s dbname=%s\n' "$url" "$name"
  fi
}

# jw_fresh_db NAME: drops and creates database NAME on DATABASE_URL's server;
# prints its URL. ctest runs scripts in parallel: each script has its own.
jw_fresh_db() {
  local name=$1
  psql -XqAt -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" -c "CREATE DATABASE $name" >/dev/null \
    || return 1
  jw_db_url "$name"
}

# sql URL QUERY [psql -v name=value ...]: runs QUERY (from stdin, so :'name'
# variables work), prints unaligned tuples-only output.
sql() {
  local url=$1 q=$2
  shift 2
  psql -XqAt -v ON_ERROR_STOP=1 "$@" "$url" <<<"$q"
}

# --- jobwire ----------------------------------------------------------------------

# free_port: a port no socket listens on, below the kernel's ephemeral range
# (ip_local_port_range, 32768 and up here): a port in that range can be handed to
# any outgoing connection (psql, curl, a test's clients) between our check and the
# server's bind, or while a test restarts a server on the same port.
free_port() {
  local p lo=20000 hi=32767
  read -r eph _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && ((eph > lo + 1000)) && hi=$((eph - 1))
  for _ in $(seq 1 200); do
    p=$((lo + RANDOM % (hi - lo + 1)))
    if [[ -z $(ss -Hltn "sport = :$p") ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# start_jobwire DB_URL LOG ARGS...: starts jobwire on a free 127.0.0.1 port
# with the script's secrets; waits up to 30 s for /healthz and /readyz. Sets
# SERVER_PID, PORT, BASE. Returns 1 (log tail in START_ERROR) if it did not come up.
# Every start is the same node (--node-id, the test's name; ARGS may name
# another): a restart on a new port takes its jobs back, as one on the same
# port does with the default id.
start_jobwire() {
  local url=$1 log=$2 deadline port
  shift 2
  START_ERROR=
  for _ in 1 2 3; do
    port=$(free_port) || return 1
    DATABASE_URL=$url "$BIN" --listen "127.0.0.1:$port" --admin-key "$ADMIN_KEY" \
      --jwt-secret "$JWT_SECRET" --secret-key "$SECRET_KEY" --node-id "$JW_TEST_NAME" "$@" \
      >>"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=$port
    BASE="http://127.0.0.1:$port"
    deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && kill -0 "$SERVER_PID" 2>/dev/null; do
      if [[ $(curl -sS --max-time 2 -o /dev/null -w '%{http_code}' "$BASE/readyz" 2>/dev/null) == 200 ]]; then
        return 0
      fi
      sleep 0.1
    done
    START_ERROR=$(tail -20 "$log")
    if kill -0 "$SERVER_PID" 2>/dev/null || ! grep -q "cannot listen" "$log"; then
      kill -KILL "$SERVER_PID" 2>/dev/null
      return 1
    fi
  done
  return 1
}

# stop_jobwire PID: SIGTERM, then waits up to 15 s (SIGKILL after). Returns
# the exit status, or 1 when it had to be killed.
stop_jobwire() {
  local pid=$1 deadline=$((SECONDS + 15))
  kill -TERM "$pid" 2>/dev/null || return 1
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      return 1
    fi
    sleep 0.05
  done
  wait "$pid"
}

# kill9_jobwire PID: SIGKILL and reap.
kill9_jobwire() {
  kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
  return 0
}

# --- tokens -----------------------------------------------------------------------

# mint SECRET SUB [TTL]: a user's JWT.
mint() { "$MINT" "$@"; }

# --- HTTP -------------------------------------------------------------------------

# api_raw METHOD PATH TOKEN [CURL ARGS...]: one request to $BASE. TOKEN "" sends
# no Authorization. Sets STATUS (or "curl-failed"), HEADERS (lower-case), BODY,
# CTYPE; records the response.
api_raw() {
  local method=$1 path=$2 token=$3
  shift 3
  local -a how=(-X "$method") auth=()
  [[ $method == HEAD ]] && how=(-I)
  [[ -n $token ]] && auth=(-H "Authorization: Bearer $token")
  REQ_N=$((REQ_N + 1))
  local bodyf="$WORK/resp/$REQ_N.body"
  STATUS=$(curl -sS --max-time 20 "${how[@]}" "${auth[@]}" -o "$bodyf" -D "$WORK/headers" \
    -w '%{http_code}' "$@" "$BASE$path" 2>"$WORK/curl.err") || STATUS="curl-failed"
  HEADERS=$(tr -d '\r' <"$WORK/headers" 2>/dev/null | tr '[:upper:]' '[:lower:]')
  BODY=$(cat "$bodyf" 2>/dev/null)
  CTYPE=$(sed -n 's/^content-type: *//p' <<<"$HEADERS" | tail -1)
  printf '%s\t%s\t%s\t%s\t%s\n' "$REQ_N" "$method" "${path%%\?*}" "$STATUS" "$CTYPE" \
    >>"$WORK/resp/index"
  if [[ $path == /api/sim/inbox* && $STATUS == 200 ]]; then
    jq -r '.messages[].code' <<<"$BODY" >>"$CODES_FILE" 2>/dev/null
  fi
}

# api METHOD PATH TOKEN [JSON]: like api_raw; a JSON body goes with
# Content-Type: application/json.
api() {
  local method=$1 path=$2 token=$3
  if (($# >= 4)); then
    api_raw "$method" "$path" "$token" -H 'Content-Type: application/json' --data-binary "$4"
  else
    api_raw "$method" "$path" "$token"
  fi
}

# wait_until SECONDS CMD...: polls CMD every 0.1 s until it succeeds; 1 after SECONDS.
wait_until() {
  local until=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < until)) || return 1
    sleep 0.1
  done
}

# metric NAME [BASE]: a sample's value on a server's /metrics (admin key); the
# current server's ($BASE) unless BASE is given.
metric() {
  curl -sf --max-time 20 -H "Authorization: Bearer $ADMIN_KEY" "${2:-$BASE}/metrics" |
    awk -v m="$1" '$1 == m { print $2 }'
}

# j FILTER: jq -r FILTER over BODY.
j() { jq -r "$1" <<<"$BODY" 2>/dev/null; }

# jtrue FILTER [jq args...]: FILTER over BODY is true.
jtrue() {
  local f=$1
  shift
  jq -e "$@" "$f" <<<"$BODY" >/dev/null 2>&1
}

# is_error_body STATUS CODE: BODY is exactly {"error":{"code":CODE,"message":string}}.
is_error_body() {
  jtrue '(keys == ["error"]) and (.error | keys == ["code","message"])
         and (.error.code == $c) and (.error.message | type == "string" and length > 0)' \
    --arg c "$1"
}

# expect_error DESCRIPTION STATUS CODE [MESSAGE_PART...]: the last response is
# STATUS with a JSON error of CODE whose message holds every MESSAGE_PART.
expect_error() {
  local desc=$1 want=$2 code=$3 part msg
  shift 3
  if [[ $STATUS != "$want" ]]; then
    fail "$desc" "expected $want $code, got status=$STATUS body=$(printf '%.600s' "$BODY")"
    return 1
  fi
  if ! is_error_body "$code"; then
    fail "$desc" "expected {\"error\":{\"code\":\"$code\",\"message\":...}}, got $(printf '%.600s' "$BODY")"
    return 1
  fi
  msg=$(j .error.message)
  for part in "$@"; do
    if ! contains "$msg" "$part"; then
      fail "$desc" "message does not mention '$part': $msg"
      return 1
    fi
  done
  pass "$desc"
}

# --- jobs -------------------------------------------------------------------------

# job_get JOB TOKEN: GET /api/jobs/JOB.
job_get() { api GET "/api/jobs/$1" "$2"; }

# wait_job_status JOB TOKEN SECONDS STATUS...: polls until the job's status is
# one of STATUS; leaves the last response in BODY. Returns 1 at the deadline.
wait_job_status() {
  local job=$1 token=$2 deadline=$((SECONDS + $3)) st want
  shift 3
  while :; do
    job_get "$job" "$token"
    st=$(j .job.status)
    for want in "$@"; do
      [[ $st == "$want" ]] && return 0
    done
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# inbox_for JOB: the admin inbox's messages of JOB (JSON array) in INBOX.
inbox_for() {
  api GET /api/sim/inbox "$ADMIN_KEY"
  INBOX=$(jq -c --arg job "$1" '[.messages[] | select(.job_id == $job)]' <<<"$BODY" 2>/dev/null)
  [[ -n $INBOX ]] || INBOX='[]'
}

# otp_code OTP_ID: the newest inbox code (from the last inbox_for) linked to OTP_ID.
otp_code() {
  jq -r --arg id "$1" '[.[] | select(.otp_request_id == $id)] | max_by(.seq) | .code // empty' \
    <<<"$INBOX"
}

# wait_otp_requests JOB TOKEN SECONDS N: polls until the job has at least N
# OTP requests in status requested that the inbox links to a code. Sets
# OTP_IDS (space-separated, oldest first). Returns 1 at the deadline.
wait_otp_requests() {
  local job=$1 token=$2 deadline=$((SECONDS + $3)) n=$4 ids id
  local -a linked
  while :; do
    job_get "$job" "$token"
    ids=$(j '[.otp_requests[] | select(.status == "requested")] | sort_by(.requested_at) | .[].id')
    inbox_for "$job"
    linked=()
    for id in $ids; do
      [[ -n $(otp_code "$id") ]] && linked+=("$id")
    done
    if ((${#linked[@]} >= n)); then
      OTP_IDS="${linked[*]}"
      return 0
    fi
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# drive_job JOB TOKEN SECONDS [UNTIL]: answers the job's OTP prompts with the
# codes of the sim inbox, as the person would, until the job is completed,
# failed or cancelled - or, given a jq filter UNTIL, until UNTIL holds on the
# job's snapshot (DRIVE_STATUS "until"). A request is answered once per SMS
# (newest code per request).
# Sets DRIVE_STATUS (final job status, "until" or "timeout"), DRIVE_SUBMITTED,
# DRIVE_REJECTED (submissions not answered 200, with status and body, one a
# line) and DRIVE_STALL (why the last poll had nothing to do). Returns 0 when
# the job reached a final status.
drive_job() {
  local job=$1 token=$2 deadline=$((SECONDS + $3)) until=${4-} st ids id code key
  local -A done_keys=()
  DRIVE_SUBMITTED=0
  DRIVE_REJECTED=
  DRIVE_STATUS=timeout
  DRIVE_STALL=
  while :; do
    job_get "$job" "$token"
    if [[ -n $until ]] && jtrue "$until"; then
      DRIVE_STATUS=until
      return 0
    fi
    st=$(j .job.status)
    case $st in
      completed | failed | cancelled)
        DRIVE_STATUS=$st
        return 0
        ;;
    esac
    ids=$(j '.otp_requests[] | select(.status == "requested") | .id')
    DRIVE_STALL="job $st, seq $(j .seq), waiting OTP requests: ${ids:-none}"
    if [[ -n $ids ]]; then
      inbox_for "$job"
      for id in $ids; do
        code=$(otp_code "$id")
        if [[ -z $code ]]; then
          DRIVE_STALL+="; no inbox code for $id"
          continue
        fi
        key="$id/$(jq -r --arg id "$id" '[.[] | select(.otp_request_id == $id)] | max_by(.seq) | .seq' <<<"$INBOX")"
        [[ -n ${done_keys[$key]-} ]] && continue
        done_keys[$key]=1
        api POST "/api/otp/$id" "$token" "{\"otp\":\"$code\"}"
        DRIVE_SUBMITTED=$((DRIVE_SUBMITTED + 1))
        [[ $STATUS == 200 ]] || DRIVE_REJECTED+="$id: $STATUS $BODY"$'\n'
      done
    fi
    if ((SECONDS >= deadline)); then
      job_get "$job" "$token"
      return 1
    fi
    sleep 0.05
  done
}

# --- leaks ------------------------------------------------------------------------

# The pattern of an OTP code standing alone: not inside a longer number, a
# hex id or a timestamp's fraction ("…:34.123456+00").
code_regex() { printf '(^|[^0-9A-Za-z.])%s([^0-9A-Za-z]|$)' "$1"; }

# response_files [--no-inbox]: the recorded response bodies, one path a line.
response_files() {
  local n method path status _ct
  while IFS=$'\t' read -r n method path status _ct; do
    [[ ${1-} == --no-inbox && $path == /api/sim/inbox* ]] && continue
    printf '%s\n' "$WORK/resp/$n.body"
  done <"$WORK/resp/index"
}

# describe_responses FILE...: "n METHOD PATH STATUS" of recorded responses.
describe_responses() {
  local f n
  for f in "$@"; do
    n=${f##*/}
    n=${n%.body}
    awk -F'\t' -v n="$n" '$1 == n { print "#" $1, $2, $3, $4 }' "$WORK/resp/index"
  done
}

# bodies_with_strings FILE: recorded responses holding any line of FILE (fixed strings).
bodies_with_strings() {
  local -a files hits
  mapfile -t files < <(response_files)
  ((${#files[@]})) || return 0
  mapfile -t hits < <(grep -lF -f "$1" -- "${files[@]}" 2>/dev/null)
  describe_responses "${hits[@]}"
}

# codes_regex FILE: one extended regex matching any code of FILE standing alone.
codes_regex() { code_regex "($(paste -sd'|' "$1"))"; }

# bodies_with_codes FILE: recorded responses other than the admin inbox holding
# a code of FILE standing alone.
bodies_with_codes() {
  local -a files hits
  mapfile -t files < <(response_files --no-inbox)
  ((${#files[@]})) || return 0
  mapfile -t hits < <(grep -lE -- "$(codes_regex "$1")" "${files[@]}" 2>/dev/null)
  describe_responses "${hits[@]}"
}

# db_rows_with_codes URL FILE: "table:count" for each job table with rows
# holding a code of FILE standing alone (empty when none).
db_rows_with_codes() {
  sql "$1" "SELECT concat_ws(' ',
      nullif('job_events:' || (SELECT count(*) FROM job_events e WHERE e.row_data::text ~ :'re'), 'job_events:0'),
      nullif('job_steps:' || (SELECT count(*) FROM job_steps s WHERE s::text ~ :'re'), 'job_steps:0'),
      nullif('otp_requests:' || (SELECT count(*) FROM otp_requests o WHERE o::text ~ :'re'), 'otp_requests:0'),
      nullif('job_runs:' || (SELECT count(*) FROM job_runs r WHERE r::text ~ :'re'), 'job_runs:0'),
      nullif('auth_sessions:' || (SELECT count(*) FROM auth_sessions a WHERE a::text ~ :'re'), 'auth_sessions:0'))" \
    -v re="$(codes_regex "$2")"
}

# check_error_shapes DESCRIPTION: every recorded 4xx/5xx response is JSON
# {"error":{"code","message"}} - except the OTP verdict (422), whose shape is
# {"ok"|"success":false,"error","message","attempts_left"}.
check_error_shapes() {
  local bad="" n method path status ct
  while IFS=$'\t' read -r n method path status ct; do
    [[ $status =~ ^[45] ]] || continue
    [[ $method == HEAD ]] && continue
    if [[ $status == 422 && ($path == /api/otp/* || $path == /api/jobs/otp-received) ]]; then
      jq -e '(has("ok") or has("success")) and (.error | type == "string")
             and (.attempts_left | type == "number")' "$WORK/resp/$n.body" >/dev/null 2>&1 \
        || bad+="#$n $method $path $status: $(head -c 200 "$WORK/resp/$n.body")"$'\n'
      continue
    fi
    if [[ $ct != application/json* ]] || ! jq -e '(keys == ["error"]) and
         (.error | keys == ["code","message"]) and (.error.code | type == "string")
         and (.error.message | type == "string")' "$WORK/resp/$n.body" >/dev/null 2>&1; then
      bad+="#$n $method $path $status ($ct): $(head -c 200 "$WORK/resp/$n.body")"$'\n'
    fi
  done <"$WORK/resp/index"
  if [[ -z $bad ]]; then pass "$1"; else fail "$1" "$bad"; fi
}

# verdict DESCRIPTION [DETAILS]: passes when the command just before it succeeded.
verdict() {
  local rc=$?
  if ((rc == 0)); then pass "$1"; else fail "$1" "${2-}"; fi
}
# A detail of the form "$(...)" would run before verdict and replace the $? it judges, so a
# detail that needs a command is made first and the status passed explicitly:
#   cmd; rc=$?; detail=$(...); verdict_rc "$rc" "what" "$detail"
verdict_rc() {
  if (($1 == 0)); then pass "$2"; else fail "$2" "${3-}"; fi
}

# st_json STATUS FILTER [jq args...]: the last response is STATUS and FILTER holds.
st_json() {
  local want=$1
  shift
  [[ $STATUS == "$want" ]] && jtrue "$@"
}

# st_empty STATUS: the last response is STATUS with an empty body.
st_empty() { [[ $STATUS == "$1" && -z $BODY ]]; }

# is_uuid S: S is a lower-case canonical UUID.
is_uuid() { [[ $1 =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]]; }

# has_header "name: value": the last response carried that header (lower case, exact line).
has_header() { grep -qxF -- "$1" <<<"$HEADERS"; }

# raw_head PATH TOKEN: a raw HTTP/1.0 HEAD (curl cannot show that no body
# follows); true when the answer is 200 with a Content-Length and ends with
# the blank line after the headers. The bytes are in $WORK/head.
raw_head() {
  : >"$WORK/head"
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT" &&
    printf 'HEAD %s HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n' "$1" "$2" >&3 &&
    timeout 5 cat <&3 >"$WORK/head") 2>/dev/null
  [[ $(head -1 "$WORK/head") == "HTTP/1.0 200 "* ]] &&
    grep -qiE '^content-length: [1-9]' "$WORK/head" &&
    [[ $(tail -c 4 "$WORK/head" | od -An -tx1 | tr -d ' \n') == 0d0a0d0a ]]
}
