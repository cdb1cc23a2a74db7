#!/usr/bin/env bash
# Builds this tree inside the Debian 13 root (scripts/debian13-root.sh) with
# Debian 13's compilers and libraries, as a Debian 13 host would, into
# /var/tmp/encmig-build of the root (kept: later runs rebuild what changed).
# Prints the root's path and, on a second line, the build's path inside it.
#
#   scripts/debian13-build.sh [TARGET ...]   (ninja targets; default: all)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
root=$(bash "$src/scripts/debian13-root.sh" | tail -n 1)
b=/var/tmp/encmig-build
bash "$src/scripts/debian13-enter.sh" "$root" --bind "$src:/src" -- bash -c '
  set -euo pipefail
  b=$1; shift
  if [ ! -f "$b/build.ninja" ]; then meson setup "$b" /src >/tmp/setup.log 2>&1 || { cat /tmp/setup.log >&2; exit 1; }; fi
  ninja -C "$b" "$@" >/tmp/ninja.log 2>&1 || { tail -n 40 /tmp/ninja.log >&2; exit 1; }
' debian13-build "$b" "$@"
echo "$root"
echo "$b"
