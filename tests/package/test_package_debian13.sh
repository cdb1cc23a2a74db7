#!/usr/bin/env bash
# The Debian package on Debian 13: built with dpkg-buildpackage from this tree
# inside the Debian 13 root (scripts/debian13-root.sh), lintian-clean at
# warning level with Debian 13's lintian, its files under /usr (merged /usr).
# With --migrate (scripts/test-debian13.sh passes it; CI does not, for time),
# then the Redis guest (Debian 13's kernel and Redis) migrated encrypted
# between two libvirt 11.3 hosts from the installed files only.
# (tests/package/test_package.sh does both on Debian 12.)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
migrate=0
[ "${1:-}" = --migrate ] && migrate=1
root=$(bash "$top/scripts/debian13-root.sh" | tail -n 1)
exec bash "$top/scripts/debian13-enter.sh" "$root" --bind "$top:/src" -- bash -c '
  set -euo pipefail
  w=/tmp/package
  . /etc/os-release
  echo "package on Debian $VERSION_ID"
  bash /src/tests/package/build_deb.sh /src $w
  dpkg -c $w/encmig_*_amd64.deb >$w/files
  grep -q " ./usr/lib/systemd/system/encmigd.service$" $w/files ||
    { echo "the unit is not under /usr/lib/systemd/system"; cat $w/files; exit 1; }
  if grep -qE " ./(lib|bin|sbin)/" $w/files; then echo "files outside /usr"; exit 1; fi
  echo "package: clean"
  [ "$1" = 1 ] || exit 0
  echo "package: an encrypted migration of the Redis guest from the installed files"
  dpkg -x $w/encmig_*_amd64.deb $w/root
  mkdir -p /var/tmp/encmig-build
  ENCMIG_PREFIX=$w/root ENCMIG_BUILD=/var/tmp/encmig-build python3 /src/tests/integration/test_linux_guest.py linux-guest-live
' debian13-package "$migrate"
