// libFuzzer target: the record opener on arbitrary input, in arbitrary splits.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "migration/handshake.h"
#include "migration/record.h"

using namespace encmig;

namespace {
TrafficKeys keys() {
  auto t = Secret::create(32);
  return std::move(TrafficKeys::create(std::move(t.value())).value());
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto o = RecordOpener::create(keys()).value();
  std::vector<uint8_t> buf(data, data + size);
  size_t off = 0;
  while (off < buf.size()) {
    auto st = o.open(buf.data() + off, buf.size() - off);
    if (!st.ok() || st->consumed == 0) break;
    off += st->consumed;
  }
  // Valid records sealed with the same all-zero key, then mutated by the
  // fuzzer's bytes: must never open unless unchanged.
  auto s = RecordSealer::create(keys()).value();
  std::vector<uint8_t> rec(wire::kRecordOverhead + 32, 0xab);
  if (!s.seal_data(rec.data() + 16, 32, rec.data(), rec.data() + 48).ok()) __builtin_trap();
  std::vector<uint8_t> orig = rec;
  for (size_t i = 0; i < size && i < rec.size(); i++) rec[i] ^= data[i];
  auto o2 = RecordOpener::create(keys()).value();
  auto st = o2.open(rec.data(), rec.size());
  if (st.ok() && st->consumed != 0 && rec != orig && st->payload) {
    // Only an unchanged record may authenticate.
    bool same = std::memcmp(rec.data(), orig.data(), 16) == 0;
    if (!same) __builtin_trap();
  }
  return 0;
}
