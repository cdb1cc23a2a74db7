// libFuzzer target: the record reader on arbitrary input, in arbitrary splits.
// The first byte picks the case: raw input to a fresh reader; input after a
// valid START (so DATA, ACK and FIN headers are reached); or valid START,
// DATA and FIN records XORed with the input, which must never open unless
// unchanged.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "migration/handshake.h"
#include "migration/record.h"

using namespace encmig;

namespace {
Secret zero_secret() { return std::move(Secret::create(32).value()); }
TrafficKeys keys() { return std::move(TrafficKeys::create(zero_secret()).value()); }

void read_all(RecordReader& r, DataOpener& o, std::vector<uint8_t>& buf) {
  size_t off = 0;
  while (off < buf.size()) {
    auto st = r.open(buf.data() + off, buf.size() - off, &o);
    if (!st.ok() || st->consumed == 0) break;
    off += st->consumed;
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 3;
  data++;
  size--;
  auto reader = RecordReader::create(keys()).value();
  auto opener = DataOpener::create(zero_secret()).value();
  auto ctl = ControlSealer::create(keys()).value();
  auto sealer = DataSealer::create(zero_secret()).value();
  std::vector<uint8_t> valid(wire::kStartRecordSize);
  if (!ctl.seal_start({0, wire::Salt{}}, valid.data()).ok()) __builtin_trap();
  if (mode == 0) {
    std::vector<uint8_t> buf(data, data + size);
    read_all(reader, opener, buf);
    return 0;
  }
  if (mode == 1) {
    valid.insert(valid.end(), data, data + size);
    read_all(reader, opener, valid);
    return 0;
  }
  std::vector<uint8_t> rec(wire::kRecordOverhead + 32, 0xab);
  if (!sealer.seal(rec.data(), 32).ok()) __builtin_trap();
  valid.insert(valid.end(), rec.begin(), rec.end());
  std::vector<uint8_t> fin(wire::kFinRecordSize);
  if (!ctl.seal_fin(sealer.finish(), fin.data()).ok()) __builtin_trap();
  valid.insert(valid.end(), fin.begin(), fin.end());
  std::vector<uint8_t> buf = valid;
  for (size_t i = 0; i < size && i < buf.size(); i++) buf[i] ^= data[i];
  const std::vector<uint8_t> before = buf;  // opening decrypts in place
  size_t off = 0;
  while (off < buf.size()) {
    auto st = reader.open(buf.data() + off, buf.size() - off, &opener);
    if (!st.ok() || st->consumed == 0) break;
    // Only unchanged bytes may authenticate.
    if (std::memcmp(before.data() + off, valid.data() + off, st->consumed) != 0) __builtin_trap();
    off += st->consumed;
  }
  return 0;
}
