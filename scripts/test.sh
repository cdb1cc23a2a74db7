#!/usr/bin/env bash
# Installs dependencies, builds, runs every test (unit, fuzz smoke, real-QEMU
# integration), and ends with "N passed, N failed, N skipped".
# Usage: scripts/test.sh [meson test args...]
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
build=${BUILD_DIR:-build}
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" >/dev/null || { echo "meson setup failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
fi
ninja -C "$build" >/dev/null || { ninja -C "$build" | tail -30; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
# The whole outage matrix (about 20 min more) and the 30 min soak run on request:
#   meson test -C build --suite outage-full
#   meson test -C build --suite soak-full
#   meson test -C build --suite libvirt-full   (libvirt postcopy with its preempt channel, --parallel 2,
#                                               the transparent mode with the Linux guest)
if [ $# -eq 0 ]; then set -- --no-suite outage-full --no-suite soak-full --no-suite libvirt-full; fi
meson test -C "$build" --print-errorlogs --num-processes 1 "$@"
rc=$?
python3 - "$build/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(f"{p} passed, {f} failed, {s} skipped")
PY
exit $rc
