#!/usr/bin/env bash
# include_cycles.sh - fails when the modules of a directory include each other in a circle.
#
# Usage: include_cycles.sh [--list] [DIR]      (DIR defaults to server/ of this checkout)
#
# A module X is the pair X.c + X.h in DIR (either may be missing), with X_internal.h
# and every file including it (its pieces: ws_hub.c is ws). There is an
# edge X -> Y when X.c or X.h has a quoted #include of Y.h and DIR/Y.h exists;
# includes of other directories' headers (engine/, db/, common/, <system>) are
# not edges. Any cycle among the edges is printed ("cycle: a -> b -> a") and
# the exit status is 1; none, 0. --list also prints every module with the
# modules it depends on, one line each, sorted ("api: api_parse auth http").
#
# Why: the compiler sees only files, so modules calling each other in circles
# (through void pointers and tag switches) went unnoticed; this keeps the
# composition root (app.c) the only module that knows every other one.
set -euo pipefail

list=0
if [[ ${1:-} == --list ]]; then
  list=1
  shift
fi
dir=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/server"}
[[ -d $dir ]] || { echo "include_cycles: no directory $dir" >&2; exit 2; }

# One "from to" line per edge.
edges() {
  local f mod dep
  for f in "$dir"/*.c "$dir"/*.h; do
    [[ -e $f ]] || continue
    mod=$(basename "$f")
    mod=${mod%.*}
    mod=${mod%_internal} # X_internal.h is module X's private half,
    # and a file that includes it is one of X's pieces (ws_hub.c is ws).
    inner=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"/]*\)_internal\.h".*/\1/p' "$f" | head -n 1)
    [[ -z $inner ]] || mod=$inner
    # Quoted includes only; a path with a directory names another tree.
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"/]*\)\.h".*/\1/p' "$f" |
      while read -r dep; do
        if [[ ${dep%_internal} != "$mod" && -e "$dir/$dep.h" ]]; then echo "$mod ${dep%_internal}"; fi
      done
  done | sort -u
}

graph=$(edges)

if ((list)); then
  for f in "$dir"/*.c "$dir"/*.h; do
    [[ -e $f ]] || continue
    b=$(basename "$f")
    b=${b%.*}
    inner=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"/]*\)_internal\.h".*/\1/p' "$f" | head -n 1)
    [[ -z $inner ]] || b=$inner
    echo "${b%_internal}"
  done | sort -u | while read -r m; do
    deps=$(awk -v m="$m" '$1 == m { printf "%s%s", sep, $2; sep = " " }' <<<"$graph")
    echo "$m: $deps"
  done
fi

# Depth-first search; an edge back to a module on the stack closes a cycle.
awk '
  { n[$1]++; adj[$1, n[$1]] = $2; node[$1] = 1; node[$2] = 1 }
  function visit(u,    i, v, k, s) {
    state[u] = 1; stack[++depth] = u
    for (i = 1; i <= n[u]; i++) {
      v = adj[u, i]
      if (state[v] == 1) {
        s = ""
        for (k = 1; k <= depth; k++)
          if (stack[k] == v || s != "")
            s = s stack[k] " -> "
        print "cycle: " s v
        found = 1
      } else if (!state[v])
        visit(v)
    }
    depth--; state[u] = 2
  }
  END {
    # Visit in a fixed order so the report is stable.
    cnt = 0
    for (u in node) names[++cnt] = u
    for (i = 2; i <= cnt; i++)
      for (j = i; j > 1 && names[j - 1] > names[j]; j--) {
        t = names[j]; names[j] = names[j - 1]; names[j - 1] = t
      }
    for (i = 1; i <= cnt; i++)
      if (!state[names[i]]) visit(names[i])
    exit found ? 1 : 0
  }
' <<<"$graph" >&2 && status=0 || status=$?
if ((status)); then
  echo "include_cycles: the modules of $dir include each other in a circle (above)." >&2
  echo "Break it: the module that builds both (app.c) passes one the other's functions." >&2
  exit 1
fi
exit 0
