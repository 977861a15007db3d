#!/usr/bin/env bash
# Provider errors as the retry policy says, through the real http provider
# against jobwire-sandbox's fault injection:
#   - HTTP 500 twice on availability_check: retried, the job completes, the
#     step shows attempt 3;
#   - a reply held past --provider-timeout on process_payment: retried under
#     the same idempotency key, charged once;
#   - connection resets on generate_payment_link: the job still completes.
#     libcurl resends a request by itself when a pooled keep-alive connection
#     dies before any reply byte, possibly on each pooled connection in turn,
#     so a reset may never reach the engine; that a reset which does reach it
#     is a retryable error is test_http_provider's to prove;
#   - a non-retryable error (the sim failing redeem_amazon_vouchers with
#     fail_retryable=0): the job fails at once, one call, with the provider's
#     message, completed_transactions counting what finished.
# and /metrics after each: the counters, and the histograms well-formed
# (prom_check.awk) with counts that match what happened.
#
# Usage: test_provider_errors.sh JOBWIRE SANDBOX   (DATABASE_URL: a PostgreSQL server)
set -euo pipefail

JOBWIRE=${1:?usage: test_provider_errors.sh JOBWIRE SANDBOX}
SANDBOX=${2:?usage: test_provider_errors.sh JOBWIRE SANDBOX}
: "${DATABASE_URL:?DATABASE_URL must name a PostgreSQL server (scripts/test sets it)}"
ADMIN=provider-errors-admin-key-0123
USER_ID=0f0f0f0f-1111-4222-8333-444455556666
PROM_CHECK=$(cd "$(dirname "$0")" && pwd)/prom_check.awk
TMP=$(mktemp -d /tmp/jw-perr.XXXXXX)
PIDS=()
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_http() { # URL
  local deadline=$((SECONDS + 20))
  until curl -sf "$1" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "no answer from $1" >&2; exit 1; }
    sleep 0.05
  done
}

# start_pair NAME SIM_SPEC: a sandbox and a jobwire using it, on their own database.
start_pair() {
  local name=$1 spec=$2
  URL=$(jw_fresh_db "jw_test_perr_$1")
  SB_PORT=$(free_port)
  "$SANDBOX" --listen "127.0.0.1:$SB_PORT" --sim "$spec" 2>"$TMP/sandbox-$name.log" &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$SB_PORT/healthz"
  JW_PORT=$(free_port)
  "$JOBWIRE" --listen "127.0.0.1:$JW_PORT" --database-url "$URL" --admin-key "$ADMIN" \
    --jwt-secret provider-errors-jwt-secret-012345 --secret-key "$(printf '%064d' 3)" \
    --provider "http://127.0.0.1:$SB_PORT" --provider-timeout 500 --retry-scale 0.01 \
    >"$TMP/jobwire-$name.log" 2>&1 &
  PIDS+=($!)
  BASE=http://127.0.0.1:$JW_PORT
  SB=http://127.0.0.1:$SB_PORT
  wait_http "$BASE/healthz"
}

fault() { # JSON
  curl -sf -X POST "$SB/faults" -H 'Content-Type: application/json' -d "$1" >/dev/null
}

new_job() { # COUNT -> job id
  curl -sf -X POST "$BASE/api/jobs" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"user_id\":\"$USER_ID\",\"transaction_amount\":700,\"transaction_count\":$1}" | jq -r .job_id
}

wait_done() { # JOB -> final snapshot on stdout
  local deadline=$((SECONDS + 60)) snap status
  while :; do
    snap=$(curl -sf "$BASE/api/jobs/$1" -H "Authorization: Bearer $ADMIN")
    status=$(jq -r .job.status <<<"$snap")
    case $status in completed | failed | cancelled) echo "$snap"; return ;; esac
    ((SECONDS < deadline)) || { echo "$snap"; return; }
    sleep 0.1
  done
}

metrics_of() { # -> the current server's /metrics
  curl -sf -H "Authorization: Bearer $ADMIN" "$BASE/metrics"
}

sample() { # METRICS 'name{labels}' -> its value, or nothing
  awk -v m="$2" '$1 == m { print $2 }' <<<"$1"
}

sum_of() { # METRICS REGEX -> the sum of the samples whose name{labels} matches
  awk -v re="$2" '$1 ~ re { s += $2 } END { print s + 0 }' <<<"$1"
}

prom_ok() { # METRICS WHAT: the page parses and every histogram is consistent
  local out
  if out=$(awk -f "$PROM_CHECK" <<<"$1"); then pass "$2: $out"; else fail "$2: $out"; fi
}

step() { # SNAPSHOT NAME TX FIELD
  jq -r --arg n "$2" --argjson t "$3" --arg f "$4" \
    '.steps[] | select(.step_name == $n and (.transaction_index // 0) == $t) | .[$f]' <<<"$1"
}

# --- retryable faults ---------------------------------------------------------
start_pair retry "latency_ms=5,otp=none,voucher_polls=0"
fault '{"step":"availability_check","mode":"http_500","count":2}'
fault '{"step":"generate_payment_link","mode":"reset","count":2}'
fault '{"step":"process_payment","mode":"timeout","count":1,"delay_ms":1500}'
job=$(new_job 1)
snap=$(wait_done "$job")
check_eq "retryable faults: the job completes" completed "$(jq -r .job.status <<<"$snap")"
check_eq "two HTTP 500s: availability_check succeeded on attempt 3" 3 "$(step "$snap" availability_check 0 attempt)"
check_eq "resets: generate_payment_link completed" completed "$(step "$snap" generate_payment_link 1 status)"
check_eq "...after the sandbox really reset both connections" 0 \
  "$(curl -sf "$SB/faults" | jq '[.faults[] | select(.step == "generate_payment_link")] | length')"
check_eq "a timeout: process_payment succeeded on attempt 2" 2 "$(step "$snap" process_payment 1 attempt)"
key=$(step "$snap" process_payment 1 idempotency_key)
charges=$(curl -sf "$SB/charges")
check_eq "the timed-out payment was retried under the same key and charged once" 1 \
  "$(jq -r --arg k "$key" '.[$k].charges' <<<"$charges")"
check_eq "...though the provider saw it twice" 2 "$(jq -r --arg k "$key" '.[$k].calls' <<<"$charges")"
check_eq "the job's error_message is clear after success" null "$(jq -r .job.error_message <<<"$snap")"
grep -q "HTTP 500" "$TMP/jobwire-retry.log" && pass "the retry was logged with its cause" ||
  fail "no log line names HTTP 500"

# Retries run out: five 500s on a step that allows four attempts.
fault '{"step":"availability_check","mode":"http_500","count":5}'
job=$(new_job 1)
snap=$(wait_done "$job")
check_eq "retries exhausted: the job fails" failed "$(jq -r .job.status <<<"$snap")"
check_eq "...after the policy's 4 attempts" 4 "$(step "$snap" availability_check 0 attempt)"
jq -r .job.error_message <<<"$snap" | grep -q "gave up after 4 attempts" &&
  pass "...and says so" || fail "error_message: $(jq -r .job.error_message <<<"$snap")"
curl -sf -X DELETE "$SB/faults" >/dev/null

# --- histograms after the retryable faults -------------------------------------
# The checker itself must catch a broken histogram, or its passes mean nothing.
if awk -f "$PROM_CHECK" >/dev/null <<'EOF'; then
# TYPE t histogram
t_bucket{le="1"} 2
t_bucket{le="2"} 1
t_bucket{le="+Inf"} 3
t_sum 1
t_count 2
EOF
  fail "prom_check.awk accepts decreasing buckets and +Inf != _count"
else
  pass "prom_check.awk refuses decreasing buckets and +Inf != _count"
fi
m=$(metrics_of)
prom_ok "$m" "retry: /metrics is well-formed"
H=jobwire_provider_call_duration_seconds
check_eq "retry: one commit-latency observation per commit" "$(sample "$m" jobwire_db_commits_total)" \
  "$(sample "$m" jobwire_db_commit_duration_seconds_count)"
check_eq "retry: commit group sizes add up to the batches committed" \
  "$(sample "$m" jobwire_db_batches_committed_total)" "$(sample "$m" jobwire_db_commit_batches_sum)"
check_eq "retry: ...and to the deltas committed" "$(sample "$m" jobwire_db_deltas_committed_total)" \
  "$(sample "$m" jobwire_db_commit_deltas_sum)"
check_eq "retry: one publish-delay observation per committed batch" \
  "$(sample "$m" jobwire_db_batches_committed_total)" "$(sample "$m" jobwire_publish_delay_seconds_count)"
check_eq "retry: ...and one publish-wait observation" \
  "$(sample "$m" jobwire_db_batches_committed_total)" "$(sample "$m" jobwire_publish_wait_seconds_count)"
# The loop's part of a batch's publish delay is less than the whole, which has the commit too.
check_eq "retry: publish waits are a part of the publish delays" 1 \
  "$(awk -v w="$(sample "$m" jobwire_publish_wait_seconds_sum)" \
    -v d="$(sample "$m" jobwire_publish_delay_seconds_sum)" 'BEGIN { print (w > 0 && w < d) ? 1 : 0 }')"
check_eq "retry: gyftr_login's duration observed once per job (2)" 2 \
  "$(sum_of "$m" '^jobwire_step_duration_seconds_count[{]step="gyftr_login",')"
check_eq "retry: every provider call's reply was timed" "$(sample "$m" jobwire_provider_calls_total)" \
  "$(sum_of "$m" "^${H}_count[{]")"
check_eq "retry: the HTTP 500s are retryable availability_check replies (2 + 4)" 6 \
  "$(sample "$m" "${H}_count{operation=\"availability_check\",result=\"retryable\"}")"
check_eq "retry: the held payment is a timeout" 1 \
  "$(sample "$m" "${H}_count{operation=\"process_payment\",result=\"timeout\"}")"
check_eq "retry: ...of at least the 500 ms deadline (none by le=0.25)" 0 \
  "$(sample "$m" "${H}_bucket{operation=\"process_payment\",result=\"timeout\",le=\"0.25\"}")"

# --- a non-retryable error ----------------------------------------------------
# 40 ms per reply: provider latency shows in the histograms.
start_pair fatal "latency_ms=40,otp=none,voucher_polls=0,fail_rate=1,fail_steps=redeem_amazon_vouchers,fail_retryable=0"
job=$(new_job 2)
snap=$(wait_done "$job")
check_eq "non-retryable: the job fails" failed "$(jq -r .job.status <<<"$snap")"
check_eq "...at once: redeem_amazon_vouchers ran one attempt" 1 "$(step "$snap" redeem_amazon_vouchers 1 attempt)"
check_eq "...the transaction before it is not counted as finished" 0 "$(jq -r .job.completed_transactions <<<"$snap")"
check_eq "...the failed step says why" failed "$(step "$snap" redeem_amazon_vouchers 1 status)"
jq -r .job.error_message <<<"$snap" | grep -q "redeem_amazon_vouchers failed: simulated failure" &&
  pass "...and so does the job" || fail "error_message: $(jq -r .job.error_message <<<"$snap")"
check_eq "...no later transaction started" 0 \
  "$(jq '[.steps[] | select(.transaction_index == 2)] | length' <<<"$snap")"

# --- metrics, after that traffic ---------------------------------------------
metrics=$(curl -s -H "Authorization: Bearer $ADMIN" "$BASE/metrics")
value() { awk -v m="$1" '$1 == m { print $2 }' <<<"$metrics"; }
grep -q '^# TYPE jobwire_db_commits_total counter$' <<<"$metrics" &&
  pass "/metrics speaks the Prometheus text format" || fail "/metrics: $(head -3 <<<"$metrics")"
awk -v v="$(value jobwire_db_deltas_committed_total)" 'BEGIN { exit !(v > 0) }' &&
  pass "/metrics counts committed deltas ($(value jobwire_db_deltas_committed_total))" ||
  fail "jobwire_db_deltas_committed_total = '$(value jobwire_db_deltas_committed_total)'"
check_eq "/metrics: published deltas = the journal's (job_events)" \
  "$(psql "$URL" -AtX -c 'SELECT count(*) FROM job_events')" "$(value jobwire_deltas_published_total)"
check_eq "/metrics reports the job that failed" 1 "$(value jobwire_jobs_finished_total)"
prom_ok "$metrics" "fatal: /metrics is well-formed"
H=jobwire_provider_call_duration_seconds
check_eq "fatal: one commit-latency observation per commit" "$(value jobwire_db_commits_total)" \
  "$(value jobwire_db_commit_duration_seconds_count)"
check_eq "fatal: gyftr_login's duration observed once, for the one job" 1 \
  "$(sum_of "$metrics" '^jobwire_step_duration_seconds_count[{]step="gyftr_login",')"
check_eq "fatal: redeem_amazon_vouchers observed as failed" 1 \
  "$(value 'jobwire_step_duration_seconds_count{step="redeem_amazon_vouchers",outcome="failed"}')"
check_eq "fatal: ...after a fatal provider reply" 1 \
  "$(value "${H}_count{operation=\"redeem_amazon_vouchers\",result=\"fatal\"}")"
check_eq "fatal: six ok replies (logins, availability, link, payment, vouchers)" 6 \
  "$(sum_of "$metrics" "^${H}_count[{].*result=\"ok\"")"
check_eq "fatal: no ok reply faster than the sim's 40 ms (le=0.025)" 0 \
  "$(sum_of "$metrics" "^${H}_bucket[{].*result=\"ok\",le=\"0.025\"")"
check_eq "fatal: no completed step faster than its 40 ms call (le=0.025)" 0 \
  "$(sum_of "$metrics" '^jobwire_step_duration_seconds_bucket[{].*outcome="completed",le="0.025"')"
check_eq "/metrics without the admin key is 401" 401 \
  "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/metrics")"

jw_summary
