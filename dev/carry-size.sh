#!/usr/bin/env bash
# What a device call carries: the working tree (tracked files and untracked files git does not
# ignore) plus the carried paths (files or folders), 64 MiB in all. Prints the sum and fails
# when it is over AE_CARRY_LIMIT_MIB (default 62: a margin for files that appear in the tree
# before the call).
#   dev/carry-size.sh PATH...
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$( (git ls-files -z; git ls-files -o --exclude-standard -z) | xargs -0 stat -c %s 2>/dev/null |
  awk '{ s += $1 } END { print s + 0 }')
carried=$(find "$@" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
awk -v t="$tree" -v c="$carried" -v lim="${AE_CARRY_LIMIT_MIB:-62}" -v what="$*" 'BEGIN {
  m = 1048576
  printf "working tree %.1f MiB + carried (%s) %.1f MiB = %.1f MiB (limit %d of 64)\n", t / m, what,
    c / m, (t + c) / m, lim
  if (t + c > lim * m) { print "too large for one device call" > "/dev/stderr"; exit 1 } }'
