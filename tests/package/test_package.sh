#!/usr/bin/env bash
# The Debian package, as an operator gets it: built with dpkg-buildpackage on
# this (Debian 12) machine, lintian-clean at warning level, its files where
# Debian puts them, its postinst reloading systemd, and then an encrypted
# migration of the Redis guest between two libvirt hosts run from the
# installed files only (encmigd confined as the installed unit says).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${ENCMIG_BUILD:-$top/build}
work=$(mktemp -d /tmp/encmig-package-XXXXXX)
trap 'rm -rf "$work"' EXIT

bash "$top/tests/package/build_deb.sh" "$top" "$work"
deb=$(ls "$work"/encmig_*_amd64.deb)

root=$work/root
dpkg -x "$deb" "$root"
for f in usr/sbin/encmigd usr/bin/encmig etc/default/encmigd \
         usr/share/man/man1/encmig.1.gz usr/share/man/man8/encmigd.8.gz usr/share/encmig/apparmor/encmig-qemu \
         usr/share/doc/encmig/protocol.md.gz usr/share/doc/encmig/libvirt.md.gz usr/share/doc/encmig/copyright; do
  [ -e "$root/$f" ] || { echo "missing from the package: /$f"; exit 1; }
done
# The unit: /lib/systemd/system on Debian 12, /usr/lib/systemd/system from Debian 13 (merged /usr).
unit=$root/lib/systemd/system/encmigd.service
[ -e "$unit" ] || unit=$root/usr/lib/systemd/system/encmigd.service
[ -e "$unit" ] || { echo "missing from the package: the systemd unit encmigd.service"; exit 1; }
dpkg-deb -e "$deb" "$work/control"
grep -q "daemon-reload" "$work/control/postinst" || { echo "postinst does not reload systemd"; exit 1; }
grep -q "^/etc/default/encmigd$" "$work/control/conffiles" || { echo "/etc/default/encmigd is not a conffile"; exit 1; }
grep -q "CAP_NET_ADMIN" "$unit"
# The transparent mode: on by default, and removing the package leaves no rule.
grep -q '^ENCMIGD_ARGS="--transparent"' "$root/etc/default/encmigd" || { echo "the transparent mode is not on by default"; exit 1; }
grep -q "nft delete table inet encmig" "$work/control/postrm" || { echo "postrm does not remove the nftables table"; exit 1; }
dpkg-deb -f "$deb" Depends | grep -q nftables || { echo "the package does not depend on nftables"; exit 1; }
"$root/usr/sbin/encmigd" --help >/dev/null
"$root/usr/bin/encmig" --help >/dev/null

echo "package: an encrypted migration of the Redis guest from the installed files"
ENCMIG_PREFIX=$root ENCMIG_BUILD=$build python3 "$top/tests/integration/test_linux_guest.py" linux-guest-live
