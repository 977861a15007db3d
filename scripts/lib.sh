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
jw_build_tree() {
  local dir=$1 name=$2
  shift 2
  command -v cmake >/dev/null 2>&1 || jw_die "cmake not found; run scripts/deps"
  jw_log "$name: configuring $dir"
  cmake -S "$JW_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >&2 \
    || jw_die "$name: cmake configure of $dir failed"
  jw_log "$name: building (cmake --build $dir -j2)"
  cmake --build "$dir" -j2 >&2 || jw_die "$name: build of $dir failed"
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
