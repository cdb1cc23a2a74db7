#!/usr/bin/env bash
# The Debian package on Debian 13: built with dpkg-buildpackage from this tree
# inside the Debian 13 root (scripts/debian13-root.sh), lintian-clean at
# warning level with Debian 13's lintian, its files under /usr (merged /usr).
# (tests/package/test_package.sh does the same on Debian 12, and migrates.)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
root=$(bash "$top/scripts/debian13-root.sh" | tail -n 1)
exec bash "$top/scripts/debian13-enter.sh" "$root" --bind "$top:/src" -- bash -c '
  set -euo pipefail
  w=/tmp/package
  mkdir -p $w/encmig-0.1.0
  tar -C /src --exclude="./build*" --exclude=./.git --exclude="./obj-*" --exclude=./debian/.debhelper -cf - . |
    tar -x -C $w/encmig-0.1.0
  . /etc/os-release
  echo "package on Debian $VERSION_ID: dpkg-buildpackage -us -uc -b"
  (cd $w/encmig-0.1.0 && dpkg-buildpackage -us -uc -b >$w/build.log 2>&1) || { tail -40 $w/build.log; exit 1; }
  echo "package: $(lintian --version) --fail-on warning"
  lintian --fail-on warning $w/encmig_*_amd64.changes 2>&1 | grep -v "running with root privileges" || true
  lintian --fail-on warning $w/encmig_*_amd64.changes >/dev/null 2>&1 || { echo "lintian found warnings or errors"; exit 1; }
  dpkg -c $w/encmig_*_amd64.deb >$w/files
  grep -q " ./usr/lib/systemd/system/encmigd.service$" $w/files ||
    { echo "the unit is not under /usr/lib/systemd/system"; cat $w/files; exit 1; }
  if grep -qE " ./(lib|bin|sbin)/" $w/files; then echo "files outside /usr"; exit 1; fi
  echo "package: clean"
'
