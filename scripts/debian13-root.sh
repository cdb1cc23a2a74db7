#!/usr/bin/env bash
# Makes (once, then reuses) a Debian 13 "trixie" root for test hosts: Debian's
# own QEMU 10.0 and libvirt 11.3, and what building encmig needs, from the
# Debian archive this machine's apt already uses. Prints the root's path.
#
#   scripts/debian13-root.sh [DIR]      (default /var/cache/encmig/debian13)
#
# A root that was not finished (no stamp) is made again. No service starts in
# it (policy-rc.d). Enter it with scripts/debian13-enter.sh, not chroot.
set -euo pipefail
root=${1:-/var/cache/encmig/debian13}
stamp=$root/.encmig-root-ready
pkgs=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  iproute2 nftables procps util-linux kmod python3 python3-cryptography cpio binutils gnutls-bin
  build-essential g++ meson ninja-build pkgconf libgnutls28-dev libgcrypt20-dev libssl-dev libvirt-dev
  nlohmann-json3-dev libgtest-dev debhelper dpkg-dev lintian
)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pkgs[*]}" ]; then echo "$root"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "debian13-root: needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
# The mirror the machine's own sources name.
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(http[^ ]*\/debian\) .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
mirror=${mirror:-http://deb.debian.org/debian}
case "$root" in /|/usr|/var|/var/cache|"") echo "debian13-root: refusing to remake '$root'" >&2; exit 1 ;; esac
# An earlier run that was killed may have left the machine's /proc, /sys and
# /dev mounted inside: unmount them first, and never cross into another file
# system while removing (that would delete the machine's device nodes).
for m in dev sys proc; do umount -R "$root/$m" 2>/dev/null || true; done
rm -rf --one-file-system "$root"
mkdir -p "$root"
echo "debian13-root: debootstrap trixie from $mirror into $root" >&2
debootstrap --variant=minbase trixie "$root" "$mirror" >&2
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
trap 'for m in dev sys proc; do umount -R "$root/$m" 2>/dev/null || true; done' EXIT
for m in proc sys dev; do mount --rbind "/$m" "$root/$m"; mount --make-rslave "$root/$m"; done
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2
echo "${pkgs[*]}" > "$stamp"
echo "$root"
