#!/usr/bin/env bash
# encmig on a Debian 13 host: builds this tree inside a Debian 13 root (its
# compilers and libraries; scripts/debian13-root.sh makes the root once and
# keeps it), then runs the unit tests and QMP-direct migrations between two
# namespaced hosts with Debian 13's own QEMU 10.0. The last line is
# "N passed, N failed, N skipped".
#
#   scripts/test-debian13.sh              the whole build, the unit tests, the matrix below and the
#                                         package's migration from its installed files
#   scripts/test-debian13.sh TEST ...     only what those migration tests need, and those
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
tests=("$@")
if [ ${#tests[@]} -gt 0 ]; then
  targets=(tools/encmigd tools/encmig tests/dirty.elf)
  unit=0
else
  targets=()
  unit=1
  tests=(single-stream multifd-4 wire-encrypted-hides-marker tamper-flip postcopy postcopy-preempt kill-destination-daemon
         attack-resume-race-multifd libvirt-live-single libvirt-live-parallel-4 libvirt-storage libvirt-policy-matrix
         libvirt-tamper libvirt-postcopy-preempt outage-reset-1s-lan-single outage-blackhole-lan-multifd4
         outage-during-switchover outage-postcopy outage-postcopy-preempt linux-guest-live linux-guest-storage linux-guest-postcopy
         transparent-virsh transparent-postcopy-restarts transparent-linux-guest)
fi
out=$(bash "$src/scripts/debian13-build.sh" "${targets[@]}") || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
root=$(echo "$out" | sed -n 1p)
out_file=$(mktemp /tmp/encmig-debian13-XXXXXX)
trap 'rm -f "$out_file"' EXIT
bash "$src/scripts/debian13-enter.sh" "$root" --bind "$src:/src" -- bash -c '
  set -uo pipefail
  . /etc/os-release
  echo "Debian $VERSION_ID ($VERSION_CODENAME): $(qemu-system-x86_64 --version | head -n 1), $(g++ --version | head -n 1)"
  b=/var/tmp/encmig-build  # scripts/debian13-build.sh built it
  export ENCMIG_BUILD=$b
  unit=$1; shift
  { [ "$unit" = 0 ] || meson test -C "$b" --no-rebuild --suite unit --print-errorlogs
    meson test -C "$b" --no-rebuild --print-errorlogs --num-processes 1 "$@"; } 2>&1 | tee /tmp/results
  # Each test once (meson repeats the failures in its summary).
  grep -E "^ *[0-9]+/[0-9]+ " /tmp/results | sort -u > /tmp/lines
  pass=$(grep -cE " OK " /tmp/lines)
  fail=$(grep -cE " (FAIL|TIMEOUT|ERROR) " /tmp/lines)
  skip=$(grep -cE " SKIP " /tmp/lines)
  echo "$pass passed, $fail failed, $skip skipped"
  [ "$fail" = 0 ] && [ "$pass" -gt 0 ]
' debian13 "$unit" "${tests[@]}" | tee "$out_file"
rc=${PIPESTATUS[0]}
[ "$unit" = 1 ] || exit "$rc"
# The whole matrix also migrates the Redis guest from the installed package.
read -r pass _ fail _ skip _ < <(tail -n 1 "$out_file")
if bash "$src/tests/package/test_package_debian13.sh" --migrate; then pass=$((pass + 1)); else fail=$((fail + 1)); rc=1; fi
echo "$pass passed, $fail failed, $skip skipped"
exit "$rc"
