# shellcheck shell=bash
# Shared helpers for scripts/*. Sourced, never executed.
#
# The sourcing script sets JW_ROOT (project root, resolved from its own location)
# and JW_NAME (its name, used as the message prefix) before sourcing this file.

: "${JW_ROOT:?JW_ROOT must be set before sourcing lib.sh}"
: "${JW_NAME:=jobwire}"

JW_BUILD_DIR="$JW_ROOT/build"

# Messages go to stderr so that stdout stays machine-readable (e.g. `scripts/pg url`).
jw_log() { printf '[%s] %s\n' "$JW_NAME" "$*" >&2; }
jw_warn() { printf '[%s] warning: %s\n' "$JW_NAME" "$*" >&2; }
jw_die() { printf '[%s] error: %s\n' "$JW_NAME" "$*" >&2; exit 1; }
# Usage errors exit 2.
jw_usage_error() { printf '[%s] %s (see --help)\n' "$JW_NAME" "$*" >&2; exit 2; }

jw_is_root() { [[ $(id -u) -eq 0 ]]; }

# Run scripts/deps (idempotent, fast when everything is installed).
jw_deps() {
  "$JW_ROOT/scripts/deps" || jw_die "scripts/deps failed"
}

# Configure and build into <root>/build. Extra arguments go to the configure step.
# Build output goes to stderr, so a script's stdout stays its own.
jw_build() {
  jw_build_tree "$JW_BUILD_DIR" "build" "$@"
}

# jw_build_tree DIR NAME [cmake arguments...]: configure and build DIR (RelWithDebInfo);
# NAME says which build a failure message is about (e.g. "sanitizer build").
# JW_BUILD_TARGET set: only that target (and what it needs) is built.
jw_build_tree() {
  local dir=$1 name=$2
  shift 2
  command -v cmake >/dev/null 2>&1 || jw_die "cmake not found; run scripts/deps"
  jw_log "$name: configuring $dir"
  cmake -S "$JW_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >&2 \
    || jw_die "$name: cmake configure of $dir failed"
  local -a only=()
  [[ -z ${JW_BUILD_TARGET:-} ]] || only=(--target "$JW_BUILD_TARGET")
  jw_log "$name: building (cmake --build $dir -j2${only[*]:+ ${only[*]}})"
  cmake --build "$dir" -j2 "${only[@]}" >&2 || jw_die "$name: build of $dir failed"
}

# Print the URL of the local throwaway cluster, starting it if needed
# (scripts/pg start prints the URL as its last stdout line).
jw_pg_start_url() {
  local out
  out=$("$JW_ROOT/scripts/pg" start) || jw_die "scripts/pg start failed"
  out=$(printf '%s\n' "$out" | tail -n 1)
  [[ $out == postgresql://* ]] || jw_die "scripts/pg start printed no URL"
  printf '%s\n' "$out"
}

# A connection URL with any password replaced by ***, for printing.
jw_mask_url() {
  printf '%s\n' "$1" | sed -E 's#^([a-z]+://[^:/@]*):[^@/]*@#\1:***@#'
}

# --- dev mode: secrets, tokens, the database (scripts/run, scripts/cluster) -----------

JW_DATA_DIR=$JW_ROOT/.data
JW_SECRETS_FILE=$JW_DATA_DIR/secrets.env

jw_b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

jw_new_uuid() {
  local h
  if [[ -r /proc/sys/kernel/random/uuid ]]; then
    cat /proc/sys/kernel/random/uuid
  else
    h=$(openssl rand -hex 16)
    # version 4, variant 10xx
    printf '%s-%s-4%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" \
      $(((0x${h:16:1} & 0x3) | 0x8)) "${h:17:3}" "${h:20:12}"
  fi
}

# jw_mint_jwt SECRET SUB DAYS: HS256 token {"sub","role":"authenticated","iat","exp"}.
jw_mint_jwt() {
  local secret=$1 sub=$2 days=$3 now header payload signing sig
  now=$(date +%s)
  header=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | jw_b64url)
  payload=$(printf '{"sub":"%s","role":"authenticated","iat":%d,"exp":%d}' \
    "$sub" "$now" $((now + days * 86400)) | jw_b64url)
  signing=$header.$payload
  sig=$(printf '%s' "$signing" | openssl dgst -sha256 -hmac "$secret" -binary | jw_b64url)
  printf '%s.%s\n' "$signing" "$sig"
}

# The values kept in secrets.env, and where each secret in use came from.
declare -A JW_KEPT=()
declare -A JW_SECRET_ORIGIN=()

_jw_load_secrets_file() {
  local line k v
  [[ -f $JW_SECRETS_FILE ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    [[ $line =~ ^[[:space:]]*(export[[:space:]]+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    k=${BASH_REMATCH[2]}
    v=${BASH_REMATCH[3]}
    v=${v%$'\r'}
    if [[ $v =~ ^\"(.*)\"$ || $v =~ ^\'(.*)\'$ ]]; then v=${BASH_REMATCH[1]}; fi
    JW_KEPT[$k]=$v
  done <"$JW_SECRETS_FILE"
}

# Keep a generated value: append KEY=value to secrets.env (created with mode 600).
_jw_keep_secret() {
  if [[ ! -f $JW_SECRETS_FILE ]]; then
    (umask 022 && mkdir -p -- "$JW_DATA_DIR")
    (umask 077 && printf '# jobwire dev secrets, written by scripts/run and scripts/cluster. Keep private.\n' >"$JW_SECRETS_FILE")
  fi
  (umask 077 && printf '%s=%s\n' "$1" "$2" >>"$JW_SECRETS_FILE")
}

# _jw_resolve_secret NAME GENERATOR: sets NAME from env, else secrets.env, else generates.
_jw_resolve_secret() {
  local name=$1 gen=$2 val
  if [[ -n ${!name:-} ]]; then
    JW_SECRET_ORIGIN[$name]=environment
    export "${name?}"
    return
  fi
  if [[ -n ${JW_KEPT[$name]:-} ]]; then
    val=${JW_KEPT[$name]}
    JW_SECRET_ORIGIN[$name]=$JW_SECRETS_FILE
  else
    val=$($gen)
    _jw_keep_secret "$name" "$val"
    JW_SECRET_ORIGIN[$name]="generated, kept in $JW_SECRETS_FILE"
    jw_log "generated $name (kept in $JW_SECRETS_FILE)"
  fi
  printf -v "$name" '%s' "$val"
  export "${name?}"
}

_jw_gen_hex32() { openssl rand -hex 32; }

# jw_setup_secrets: exports JOBWIRE_ADMIN_KEY, JOBWIRE_JWT_SECRET, JOBWIRE_SECRET_KEY and
# the demo user's id JOBWIRE_DEMO_USER: the environment's value if set, else the one kept
# in .data/secrets.env, else generated once and kept there (mode 600). Every node started
# from one checkout shares them (a cluster's nodes must share all three secrets).
jw_setup_secrets() {
  _jw_load_secrets_file
  if [[ -f $JW_SECRETS_FILE ]] && [[ $(stat -c %a "$JW_SECRETS_FILE") != 600 ]]; then
    chmod 600 "$JW_SECRETS_FILE"
    jw_log "set $JW_SECRETS_FILE to mode 600"
  fi
  _jw_resolve_secret JOBWIRE_ADMIN_KEY _jw_gen_hex32
  _jw_resolve_secret JOBWIRE_JWT_SECRET _jw_gen_hex32
  _jw_resolve_secret JOBWIRE_SECRET_KEY _jw_gen_hex32
  _jw_resolve_secret JOBWIRE_DEMO_USER jw_new_uuid
  [[ $JOBWIRE_SECRET_KEY =~ ^[0-9a-fA-F]{64}$ ]] \
    || jw_die "JOBWIRE_SECRET_KEY (${JW_SECRET_ORIGIN[JOBWIRE_SECRET_KEY]}) must be exactly 64 hex characters (32 bytes)"
  [[ $JOBWIRE_DEMO_USER =~ ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$ ]] \
    || jw_die "JOBWIRE_DEMO_USER (${JW_SECRET_ORIGIN[JOBWIRE_DEMO_USER]}) must be a UUID"
  ((${#JOBWIRE_JWT_SECRET} >= 32)) \
    || jw_warn "JOBWIRE_JWT_SECRET is shorter than 32 characters"
}

# jw_dev_database: exports DATABASE_URL, the caller's if set, else the local cluster's
# (scripts/pg start); JW_USING_LOCAL_PG=1 in the second case.
# shellcheck disable=SC2034 # JW_USING_LOCAL_PG is read by the sourcing script
jw_dev_database() {
  JW_USING_LOCAL_PG=0
  if [[ -n ${DATABASE_URL:-} ]]; then
    jw_log "using DATABASE_URL from the environment: $(jw_mask_url "$DATABASE_URL")"
  else
    DATABASE_URL=$(jw_pg_start_url)
    JW_USING_LOCAL_PG=1
  fi
  export DATABASE_URL
}

# jw_port_busy PORT: whether something already listens on PORT (false without ss).
jw_port_busy() {
  [[ $1 =~ ^[0-9]+$ ]] && command -v ss >/dev/null 2>&1 \
    && [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
}

# jw_warn_port_busy PORT [HINT]: a warning when something already listens on PORT.
jw_warn_port_busy() {
  if jw_port_busy "$1"; then
    jw_warn "something already listens on port $1${2:+; $2}"
  fi
}
