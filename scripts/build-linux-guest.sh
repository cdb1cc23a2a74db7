#!/usr/bin/env bash
# Builds a small Linux guest from Debian packages only: Debian's kernel, an
# initramfs with busybox and Redis (server, cli, benchmark), and the virtio
# drivers for a virtio-net NIC and a virtio-blk disk. Nothing is installed on
# the host: the packages are fetched with `apt-get download` and unpacked with
# `dpkg-deb -x`.
#
# The guest's init mounts the disk (ext4, made on first boot), starts Redis,
# loads a key space, runs a GET/SET workload, and prints "ops N" (Redis's
# total_commands_processed) once a second on the serial console. Parameters on
# the kernel command line:
#   encmig.keys=N      keys to load (default 20000)
#   encmig.size=B      value size in bytes (default 1024)
#   encmig.mix=G       percent of GETs in the workload, 0..100; "idle" for none (default 50)
#   encmig.aof=always  Redis appendonly with appendfsync always on the disk (default: no AOF)
#   encmig.touch=MiB   fill this much guest RAM once, then stay idle (figure 5)
#
# Usage: scripts/build-linux-guest.sh [OUTDIR]   -> OUTDIR/vmlinuz, OUTDIR/initrd.img
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$top/build/guest-linux}")
cache=${ENCMIG_GUEST_CACHE:-/var/tmp/encmig-guest}
mkdir -p "$out" "$cache/debs"
if [ -f "$out/initrd.img" ] && [ "$out/initrd.img" -nt "$0" ]; then
  echo "guest: $out is up to date"; exit 0
fi

kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
pkgs=("$kpkg" busybox-static redis-server redis-tools libjemalloc2 liblzf1)
cd "$cache/debs"
for p in "${pkgs[@]}"; do
  ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download "$p" >/dev/null 2>&1 || {
    apt-get update -qq && apt-get download "$p"; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
for p in "${pkgs[@]}"; do dpkg-deb -x "$(ls "${p}"_*.deb | head -1)" "$root"; done
# Debian 13's packages ship /usr only (modules in /usr/lib/modules, busybox in
# /usr/bin); Debian 12's still use /lib and /bin.
if [ ! -d "$root/lib/modules" ] && [ -d "$root/usr/lib/modules" ]; then
  mkdir -p "$root/lib"
  ln -s ../usr/lib/modules "$root/lib/modules"
fi
kver=$(ls "$root/lib/modules" | head -1)
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"

# The initramfs.
ir=$work/initramfs
mkdir -p "$ir"/{bin,sbin,etc,proc,sys,dev,tmp,data,lib64,usr/lib,lib/modules}
if [ -f "$root/bin/busybox" ]; then cp "$root/bin/busybox" "$ir/bin/busybox"; else cp "$root/usr/bin/busybox" "$ir/bin/busybox"; fi
for b in redis-check-rdb redis-cli redis-benchmark; do cp "$root/usr/bin/$b" "$ir/bin/"; done
ln -s redis-check-rdb "$ir/bin/redis-server"
# Shared libraries, from the unpacked packages or (for libc, libssl, ...) the
# host's own Debian packages.
libs=$(LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu" ldd "$root/usr/bin/redis-check-rdb" "$root/usr/bin/redis-cli" \
       "$root/usr/bin/redis-benchmark" | awk '/=> \// {print $3} /^\t\/lib64/ {print $1}' | sort -u)
for l in $libs; do
  cp -L "$l" "$ir/usr/lib/$(basename "$l")"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$ir/lib64/"
ln -s usr/lib "$ir/lib/x86_64-linux-gnu"
echo "/usr/lib" > "$ir/etc/ld.so.conf"

# Modules, in dependency order (depmod's modules.dep, made in the unpacked tree).
depmod -b "$root" "$kver"
want=(virtio_pci virtio_blk virtio_net ext4)
order=$(python3 - "$root/lib/modules/$kver/modules.dep" "${want[@]}" <<'PY'
import sys
deps = {}
for line in open(sys.argv[1]):
    mod, _, rest = line.partition(":")
    deps[mod] = rest.split()
name = {m.rsplit("/", 1)[-1].split(".ko")[0]: m for m in deps}
out, seen = [], set()
def visit(m):
    if m in seen: return
    seen.add(m)
    for d in reversed(deps[m]): visit(d)
    out.append(m)
for w in sys.argv[2:]:
    if w in name:
        visit(name[w])  # else built into the kernel (Debian 13's virtio_pci)
print("\n".join(out))
PY
)
: > "$ir/modules.order"
# Debian 13's modules are xz-compressed (.ko.xz): unpacked here, so busybox's
# insmod loads plain .ko files on either release.
for m in $order; do
  ko=${m%.xz}
  mkdir -p "$ir/lib/modules/$(dirname "$ko")"
  if [ "$ko" != "$m" ]; then
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
      "$root/lib/modules/$kver/$m" "$ir/lib/modules/$ko"
  else
    cp "$root/lib/modules/$kver/$m" "$ir/lib/modules/$ko"
  fi
  echo "$ko" >> "$ir/modules.order"
done

cat > "$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/usr/lib
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null; done
arg() { v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^encmig\.$1=//p" | tail -1); echo "${v:-$2}"; }
KEYS=$(arg keys 20000); SIZE=$(arg size 1024); MIX=$(arg mix 50); AOF=$(arg aof no); TOUCH=$(arg touch 0)
echo "encmig linux guest: kernel $(uname -r), keys $KEYS x $SIZE B, mix $MIX, aof $AOF, touch $TOUCH MiB"
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; fi
if [ -b /dev/vda ]; then
  mount -t ext4 /dev/vda /data 2>/dev/null || { mke2fs -q /dev/vda && mount -t ext4 /dev/vda /data; }
fi
if [ "$TOUCH" != 0 ]; then
  # Figure 5: memory fully touched once, then an idle guest.
  mount -t tmpfs -o size=${TOUCH}m tmpfs /tmp
  dd if=/dev/urandom of=/tmp/fill bs=1M count=$((TOUCH - 1)) 2>/dev/null
  echo "touched $TOUCH MiB"
  while true; do echo "ops 0"; sleep 1; done
fi
if [ "$AOF" = always ]; then aof="--appendonly yes --appendfsync always"; else aof="--appendonly no"; fi
redis-server --daemonize yes --dir /data --save "" $aof --enable-debug-command yes --bind 127.0.0.1 \
  --logfile /tmp/redis.log
until redis-cli ping >/dev/null 2>&1; do sleep 0.1; done
redis-cli debug populate $KEYS key $SIZE >/dev/null
echo "redis ready: $(redis-cli dbsize) keys"
if [ "$MIX" != idle ]; then
  (
    get=$((MIX * 10)); set=$((1000 - get))
    while true; do
      [ $get -gt 0 ] && redis-benchmark -q -r $KEYS -d $SIZE -n $get -t get >/dev/null 2>&1
      [ $set -gt 0 ] && redis-benchmark -q -r $KEYS -d $SIZE -n $set -t set >/dev/null 2>&1
    done
  ) &
fi
while true; do
  n=$(redis-cli info stats | sed -n 's/^total_commands_processed:\([0-9]*\).*/\1/p')
  echo "ops $n"
  sleep 1
done
INIT
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initrd.img.tmp"
mv "$out/initrd.img.tmp" "$out/initrd.img"
echo "guest: $out/vmlinuz ($kver), $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
