#!/usr/bin/env bash
# The one dependency installer: Debian packages only, Debian 12 (bookworm) or
# 13 (trixie). The names differ in one place: clang's runtime (the fuzzers
# and sanitizers) is versioned with the release's clang.
set -euo pipefail
. /etc/os-release
case "${VERSION_CODENAME:-}" in
  bookworm) clang_rt=libclang-rt-14-dev ;;
  trixie) clang_rt=libclang-rt-19-dev ;;
  *)  # another release: the runtime of whatever clang it ships
    v=$(apt-cache depends clang 2>/dev/null | sed -n 's/.*Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -n 1)
    clang_rt=libclang-rt-${v:-14}-dev ;;
esac
pkgs=(
  build-essential g++ clang "$clang_rt" pkg-config meson ninja-build
  libgnutls28-dev libgcrypt20-dev libssl-dev gnutls-bin libgtest-dev nlohmann-json3-dev
  qemu-system-x86 qemu-utils binutils python3 python3-cryptography python3-libvirt iproute2 procps util-linux
  libvirt-dev libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients gnuplot-nox
  cpio kmod debhelper dpkg-dev lintian nftables debootstrap
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
