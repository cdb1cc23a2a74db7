#!/usr/bin/env bash
# Builds the Debian package from the source tree SRC in WORK, as an operator
# does (dpkg-buildpackage -us -uc -b on a copy without build output), and
# fails on any lintian warning or error. Used on Debian 12 (test_package.sh)
# and inside the Debian 13 root (test_package_debian13.sh).
#
#   tests/package/build_deb.sh SRC WORK     -> WORK/encmig_*_amd64.{deb,changes}
set -euo pipefail
src=$1 work=$2
mkdir -p "$work/encmig-0.1.0"
tar -C "$src" --exclude='./build*' --exclude=./.git --exclude='./obj-*' --exclude=./debian/.debhelper -cf - . |
  tar -x -C "$work/encmig-0.1.0"
echo "package: dpkg-buildpackage -us -uc -b"
(cd "$work/encmig-0.1.0" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) || { tail -40 "$work/build.log"; exit 1; }
echo "package: $(lintian --version) --fail-on warning"
lintian --fail-on warning "$work"/encmig_*_amd64.changes 2>&1 | grep -v "running with root privileges" || true
lintian --fail-on warning "$work"/encmig_*_amd64.changes >/dev/null 2>&1 || { echo "lintian found warnings or errors"; exit 1; }
