#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 20):
# the hello and record parsers (data port), and the control plane's parsers
# (QMP requests, migration-arm arguments, libvirt hand-off descriptions).
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-20}
out=${FUZZ_OUT:-$top/build-fuzz}
mkdir -p "$out"
proto=(crypto/secret.cc crypto/random.cc crypto/hkdf.cc crypto/digest.cc crypto/encoding.cc crypto/aead.cc crypto/aead_engine.cc
       crypto/aead_gnutls.cc crypto/aead_gcrypt.cc crypto/aead_openssl.cc crypto/aead_select.cc
       migration/wire.cc migration/key_schedule.cc migration/handshake.cc migration/record.cc)
control=("${proto[@]}" migration/log.cc migration/socket.cc migration/local_peer.cc migration/buffer_pool.cc migration/channel.cc migration/stream_link.cc migration/session.cc
         common/qmp.cc common/libvirt.cc common/handoff.cc daemon/arm_request.cc migration/tcp_owner.cc daemon/nft_table.cc)
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -I"$top")
status=0
for target in fuzz_hello fuzz_record fuzz_control; do
  if [ "$target" = fuzz_control ]; then srcs=("${control[@]}"); libs=(-lgnutls -lgcrypt -lcrypto -lvirt); else srcs=("${proto[@]}"); libs=(-lgnutls -lgcrypt -lcrypto); fi
  clang++ "${flags[@]}" "${srcs[@]/#/$top/}" "$top/tests/fuzz/$target.cc" "${libs[@]}" -o "$out/$target"
  corpus="$out/corpus-$target"
  mkdir -p "$corpus"
  cp -n "$top/tests/fuzz/corpus/$target"/* "$corpus/" 2>/dev/null || true
  echo "fuzz: $target for ${secs}s"
  if ! "$out/$target" -max_total_time="$secs" -max_len=4096 "$corpus" >"$out/$target.log" 2>&1; then
    echo "fuzz: $target FAILED"; tail -30 "$out/$target.log"; status=1
  else
    grep -E '^Done|#[0-9]+.*DONE' "$out/$target.log" | tail -1
  fi
done
exit $status
