#!/usr/bin/env bash
# The demo: migrates a running VM encrypted between two local hosts and
# prints the result. Needs root (it mounts a huge-page tmpfs for guest RAM).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash scripts/install-deps.sh
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build >/dev/null
exec python3 scripts/demo.py
