#!/usr/bin/env bash
# Runs a command inside a Debian 13 root (scripts/debian13-root.sh), as a
# Debian 13 machine would: a private mount namespace whose root directory is
# the Debian 13 tree, entered by pivot_root (a chroot is not enough: a later
# `nsenter -m` into a namespace made inside would reset the root directory to
# the namespace's root, Debian 12's, and run Debian 12's binaries).
#
#   scripts/debian13-enter.sh ROOT [--bind HOSTDIR:DIR ...] -- COMMAND [ARG...]
#
# /proc, /sys and /dev are the machine's; /run and /tmp are fresh tmpfs.
# Each --bind puts a host directory at DIR inside (the source tree, say).
set -euo pipefail
root=$1
shift
binds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --bind) binds+=("$2"); shift 2 ;;
    *) echo "debian13-enter: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: debian13-enter.sh ROOT [--bind HOSTDIR:DIR ...] -- COMMAND [ARG...]" >&2; exit 2; }
[ -f "$root/.encmig-root-ready" ] || { echo "debian13-enter: $root is not a finished Debian 13 root" >&2; exit 1; }
inner=$(cat <<'INNER'
set -euo pipefail
root=$1; shift
n=$1; shift
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# After the tmpfs mounts: a directory under /tmp is then seen, not hidden.
for ((i = 0; i < n; i++)); do
  b=$1; shift
  mkdir -p "$root${b#*:}"
  mount --rbind "${b%%:*}" "$root${b#*:}"
done
mkdir -p "$root/run/netns" "$root/run/lock" "$root/.oldroot"
cd "$root"
pivot_root . .oldroot
umount -l /.oldroot
cd /
exec "$@"
INNER
)
exec unshare -m --propagation private bash -c "$inner" debian13-enter "$root" "${#binds[@]}" "${binds[@]}" "$@"
