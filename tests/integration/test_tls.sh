#!/usr/bin/env bash
# TLS on jobwire's listen port (--tls-cert / --tls-key): the real binary against the real
# PostgreSQL in DATABASE_URL, with a self-signed certificate for 127.0.0.1 made here.
#
#   1. start-up refusals: one file without the other, missing, unreadable or wrong files,
#      a key that does not match, an encrypted key; exit 2, the file named, no key bytes;
#   2. a TLS server: https with curl trusting only the test certificate, the certificate
#      it presents, TLS 1.2 and 1.3, HTTP/1.1 only, plain http refused on the same port;
#   3. a whole job with a real WebSocket client over wss (tests/e2e/ws/tls_client.mjs:
#      npm ws, OTPs answered over the socket, gapless seqs to completed);
#   4. the TLS 1.2 floor holds even where the system's OpenSSL allows TLS 1.1.
#
# Usage: DATABASE_URL=postgresql://... test_tls.sh JOBWIRE JW_MINT_TOKEN NODE
# Prints one line per check and "N passed, N failed" last; exits 1 on any failure.
set -uo pipefail

HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$HERE/lib.sh"

jw_init tls "${1-}" "${2-}"
NODE=${3-}
CLIENT=$HERE/../e2e/ws/tls_client.mjs
[[ -n $NODE && -x $NODE ]] || { echo "tls: node not found ('$NODE'): run scripts/deps" >&2; exit 2; }
command -v openssl >/dev/null || { echo "tls: needs openssl" >&2; exit 2; }
# The system's OpenSSL configuration, not a caller's, except where section 4 sets one.
unset OPENSSL_CONF

ADMIN_KEY="admin-$(random_hex 16)"
JWT_SECRET="jwt-$(random_hex 16)"
SECRET_KEY=$(random_hex 32)
DB=$(jw_fresh_db jw_it_tls) || bail "cannot create database jw_it_tls"

# --- certificates, made now -----------------------------------------------------

T=$WORK/tls
mkdir -p "$T"
CERT=$T/cert.pem
KEY=$T/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout "$KEY" -out "$CERT" \
  >"$T/openssl.log" 2>&1 || bail "openssl makes a self-signed certificate" "$(cat "$T/openssl.log")"
chmod 600 "$KEY"
# Another key (not the certificate's), and the certificate's key under a passphrase.
if ! openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:prime256v1 -out "$T/other.pem" \
  2>>"$T/openssl.log" || ! openssl pkey -in "$KEY" -aes256 -passout "pass:pw-$(random_hex 8)" \
  -out "$T/encrypted.pem" 2>>"$T/openssl.log"; then
  bail "openssl makes the other keys" "$(cat "$T/openssl.log")"
fi
# Every base64 line of every private key: none may ever appear in an output.
grep -hv -- '-----' "$KEY" "$T/other.pem" "$T/encrypted.pem" >"$T/key-lines"

# jobwire ARGS... with the test's secrets, stdin closed (a passphrase prompt would fail, not
# wait); sets OUT (stdout+stderr) and CODE. The timeout only guards against a hang.
run_jobwire() {
  OUT=$(DATABASE_URL=$DB timeout 20 "$BIN" --listen 127.0.0.1:1 --admin-key "$ADMIN_KEY" \
    --jwt-secret "$JWT_SECRET" --secret-key "$SECRET_KEY" "$@" </dev/null 2>&1)
  CODE=$?
  printf '%s\n' "$OUT" >>"$WORK/refusals.log"
}

# refuses DESCRIPTION "MESSAGE PART"... -- ARGS...: exit 2 with every part in the message.
refuses() {
  local desc=$1 part
  local -a parts=()
  shift
  while [[ $1 != -- ]]; do
    parts+=("$1")
    shift
  done
  shift
  run_jobwire "$@"
  if [[ $CODE != 2 ]]; then
    fail "$desc: exits 2" "exit $CODE: $OUT"
    return
  fi
  for part in "${parts[@]}"; do
    if ! contains "$OUT" "$part"; then
      fail "$desc: the message says '$part'" "$OUT"
      return
    fi
  done
  pass "$desc (exit 2: ${OUT#jobwire: })"
}

# --- 1. start-up refusals --------------------------------------------------------

refuses "--tls-cert without --tls-key" "--tls-key (JOBWIRE_TLS_KEY) is not" "give both" \
  -- --tls-cert "$CERT"
JOBWIRE_TLS_KEY=$KEY refuses "JOBWIRE_TLS_KEY without a certificate" \
  "--tls-cert (JOBWIRE_TLS_CERT) is not" -- --dev
refuses "a missing certificate file" "--tls-cert: cannot read $T/missing.pem: No such file" \
  -- --tls-cert "$T/missing.pem" --tls-key "$KEY"
JOBWIRE_TLS_KEY=$T/missing-key.pem refuses "a missing key file, named by its variable" \
  "JOBWIRE_TLS_KEY: cannot read $T/missing-key.pem: No such file" -- --tls-cert "$CERT"
refuses "a directory as the certificate" "--tls-cert: $T is not a regular file" \
  -- --tls-cert "$T" --tls-key "$KEY"
refuses "a key file given as the certificate" "--tls-cert: $KEY holds no PEM certificate" \
  -- --tls-cert "$KEY" --tls-key "$KEY"
refuses "a certificate given as the key" "--tls-key: $CERT holds no PEM private key" \
  -- --tls-cert "$CERT" --tls-key "$CERT"
refuses "a key that is not the certificate's" \
  "the private key in $T/other.pem does not belong to the certificate in $CERT" \
  -- --tls-cert "$CERT" --tls-key "$T/other.pem"
refuses "an encrypted key (no prompt, no hang)" \
  "the private key in $T/encrypted.pem is protected by a passphrase" \
  -- --tls-cert "$CERT" --tls-key "$T/encrypted.pem"
refuses "an empty --tls-key" "--tls-key is empty" -- --tls-cert "$CERT" --tls-key ""
if grep -qF -f "$T/key-lines" "$WORK/refusals.log"; then
  fail "no refusal message holds a line of a private key"
else
  pass "no refusal message holds a line of a private key"
fi

out=$("$BIN" --help 2>&1)
contains "$out" "--tls-cert=FILE" && contains "$out" "JOBWIRE_TLS_CERT" &&
  contains "$out" "--tls-key=FILE" && contains "$out" "JOBWIRE_TLS_KEY"
verdict "--help lists --tls-cert / JOBWIRE_TLS_CERT and --tls-key / JOBWIRE_TLS_KEY"

# --- 2. a server with TLS ----------------------------------------------------------

# start_tls LOG [ENV=VALUE...]: jobwire with the certificate on a free 127.0.0.1 port;
# waits (30 s at most) until https /readyz answers 200, trusting only the test certificate.
# Sets SERVER_PID, PORT, BASE.
start_tls() {
  local log=$1 deadline port
  shift
  for _ in 1 2 3; do
    port=$(free_port) || return 1
    env "$@" DATABASE_URL="$DB" "$BIN" --listen "127.0.0.1:$port" --admin-key "$ADMIN_KEY" \
      --jwt-secret "$JWT_SECRET" --secret-key "$SECRET_KEY" --retry-scale 0.01 \
      --sim latency_ms=20,voucher_polls=1,poll_after_ms=20 \
      --tls-cert "$CERT" --tls-key "$KEY" >>"$log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=$port
    BASE="https://127.0.0.1:$port"
    deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && kill -0 "$SERVER_PID" 2>/dev/null; do
      [[ $(curl -sS --max-time 2 --cacert "$CERT" -o /dev/null -w '%{http_code}' "$BASE/readyz" 2>/dev/null) == 200 ]] &&
        return 0
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null || ! grep -q "cannot listen" "$log"; then
      kill -KILL "$SERVER_PID" 2>/dev/null
      return 1
    fi
  done
  return 1
}

LOG=$WORK/server.log
start_tls "$LOG" || bail "jobwire with --tls-cert/--tls-key answers https /readyz within 30 s" "$(tail -20 "$LOG")"
pass "jobwire with --tls-cert/--tls-key answers https /readyz"

body=$(curl -sS --max-time 10 --cacert "$CERT" -o - -w '\n%{http_code} %{http_version}' "$BASE/healthz" 2>&1)
check "curl --cacert cert.pem https://127.0.0.1:$PORT/healthz is 200 {\"status\":\"ok\"} (got: ${body//$'\n'/ })" \
  [ "$body" = $'{"status":"ok"}\n200 1.1' ]

got=$(curl -sS --max-time 10 --cacert "$CERT" --http2 -o /dev/null -w '%{http_code} %{http_version}' "$BASE/" 2>&1)
check "a client asking for HTTP/2 gets HTTP/1.1 (ALPN offers only http/1.1; got $got)" [ "$got" = "200 1.1" ]

for v in 1.2 1.3; do
  got=$(curl -sS --max-time 10 --cacert "$CERT" --tlsv$v --tls-max $v -o /dev/null -w '%{http_code}' "$BASE/healthz" 2>&1)
  check "TLS $v is served (got $got)" [ "$got" = 200 ]
done

served=$(openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$CERT" </dev/null 2>/dev/null |
  openssl x509 -noout -fingerprint -sha256 2>/dev/null)
ours=$(openssl x509 -in "$CERT" -noout -fingerprint -sha256)
check "the server presents the test certificate (${ours#*=})" [ -n "$served" -a "$served" = "$ours" ]

curl -sS --max-time 10 -o /dev/null "$BASE/healthz" 2>"$WORK/noca.err"
code=$?
check "curl without the test certificate as CA refuses the server (exit 60; got $code)" [ "$code" = 60 ]

got=$(curl -sS --max-time 10 -o "$WORK/plain.body" -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" 2>"$WORK/plain.err")
code=$?
why=$(head -c 120 "$WORK/plain.err")
[[ $code != 0 && $got == 000 ]] && ! grep -q status "$WORK/plain.body" 2>/dev/null
verdict "plain http on the TLS port gets no HTTP answer (curl exit $code, status $got: $why)"

got=$(curl -sS --max-time 10 --cacert "$CERT" -o /dev/null -w '%{http_code}' "$BASE/healthz" 2>&1)
check "https still answers after the plain request (got $got)" [ "$got" = 200 ]

# --- 3. a job over wss -------------------------------------------------------------------

USER_ID=$(random_uuid)
TOKEN=$(mint "$JWT_SECRET" "$USER_ID") || bail "jw-mint-token mints a user's token"
node_out=$(JW_TLS_BASE=$BASE JW_TLS_CA=$CERT JW_ADMIN_KEY=$ADMIN_KEY JW_TOKEN=$TOKEN \
  timeout 280 "$NODE" "$CLIENT" 2>&1)
code=$?
printf '%s\n' "$node_out" | sed 's/^/#   node: /'
check "the wss client (npm ws) ran a job to completed over TLS (node exit $code)" [ "$code" = 0 ]

# --- the log -------------------------------------------------------------------------

stop_jobwire "$SERVER_PID"
code=$?
check "SIGTERM: exits 0 (got $code)" [ "$code" = 0 ]
check "the start line says https://127.0.0.1:$PORT" grep -q "listening on https://127.0.0.1:$PORT (production)" "$LOG"
check "the log names the certificate, its expiry and the wss URL" \
  grep -q "tls: certificate $CERT valid until .* UTC; WebSocket at wss://127.0.0.1:$PORT/ws" "$LOG"
check "the upgrade from the http:// Origin was refused as foreign (the allowed one is https://)" \
  grep -q "ws: refused an upgrade from Origin \"http://127.0.0.1:$PORT\", which --origins does not list" "$LOG"
leaks=$(grep -cF -e "$ADMIN_KEY" -e "$JWT_SECRET" -e "$SECRET_KEY" -e "$TOKEN" -f "$T/key-lines" "$LOG")
check "the log holds no secret, token or private key line (found $leaks)" [ "$leaks" = 0 ]

# --- 4. the TLS 1.2 floor is jobwire's own ---------------------------------------------

# An OpenSSL configuration that allows TLS 1.0 and 1.1 (security level 0), for the server
# and the client. With it, only jobwire's own floor can refuse TLS 1.1.
cat >"$T/lax.cnf" <<'EOF'
openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
MinProtocol = TLSv1
CipherString = DEFAULT:@SECLEVEL=0
EOF
LAX_LOG=$WORK/lax.log
start_tls "$LAX_LOG" OPENSSL_CONF="$T/lax.cnf" ||
  bail "jobwire starts under an OpenSSL configuration that allows TLS 1.1" "$(tail -20 "$LAX_LOG")"
s12=$(OPENSSL_CONF=$T/lax.cnf timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -tls1_2 \
  -CAfile "$CERT" </dev/null 2>&1)
check "under that configuration a TLS 1.2 handshake succeeds" grep -q "Protocol  *: TLSv1.2" <<<"$s12"
s11=$(OPENSSL_CONF=$T/lax.cnf timeout 20 openssl s_client -connect "127.0.0.1:$PORT" -tls1_1 \
  -CAfile "$CERT" </dev/null 2>&1)
why=$(grep -E 'alert|Cipher is|Protocol' <<<"$s11" | head -5)
# (verdict reads $?: nothing may run between the condition and it, not even a $(...) argument)
grep -q "alert protocol version" <<<"$s11" && ! grep -q "Cipher is [A-Z]" <<<"$s11"
verdict "and a TLS 1.1 handshake is refused with a protocol_version alert" "$why"
stop_jobwire "$SERVER_PID"

jw_summary
