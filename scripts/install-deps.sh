#!/usr/bin/env bash
# The one dependency installer: Debian 12 packages only.
set -euo pipefail
pkgs=(
  build-essential g++ clang libclang-rt-14-dev pkg-config meson ninja-build
  libgnutls28-dev libgcrypt20-dev libssl-dev gnutls-bin libgtest-dev nlohmann-json3-dev
  qemu-system-x86 qemu-utils binutils python3 python3-cryptography iproute2 procps util-linux
  libvirt-dev libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients gnuplot-nox
  cpio kmod debhelper dpkg-dev lintian nftables
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
