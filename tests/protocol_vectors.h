// Computes encmig v1 protocol vectors from fixed inputs. Used by the vector
// test (compares with tests/vectors/protocol_v1.txt) and by
// gen_protocol_vectors (prints that file).
#pragma once
#include <string>
#include <vector>

#include "tests/protocol_helpers.h"

namespace encmig::test {

inline std::vector<std::pair<std::string, std::string>> compute_protocol_vectors() {
  std::vector<std::pair<std::string, std::string>> out;
  auto m = fixed_secrets(0x42);
  auto cr = fixed_random(0xc0), sr = fixed_random(0x50);
  out.push_back({"key", hex(m.key.bytes())});
  out.push_back({"nonce", hex(m.nonce)});
  out.push_back({"migration_id", hex(m.id)});
  out.push_back({"kind", "1"});
  out.push_back({"stream_index", "1"});
  out.push_back({"client_random", hex(cr)});
  out.push_back({"server_random", hex(sr)});

  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 1, &cr).value();
  auto s = ServerHandshake::create();
  (void)s.consume(c.hello().data(), c.hello().size());
  (void)s.accept(m, &sr);
  auto flight = s.output();
  out.push_back({"client_hello", hex(c.hello())});
  out.push_back({"server_hello", hex(flight.data(), wire::kHelloSize)});
  out.push_back({"server_confirm", hex(flight.data() + wire::kHelloSize, wire::kConfirmSize)});
  (void)c.consume(flight.data(), flight.size());
  out.push_back({"client_confirm", hex(c.confirm())});
  auto keys = c.take_keys().value();
  auto tx = RecordSealer::create(std::move(keys.tx)).value();

  std::string text = "encmig protocol vector";
  std::vector<uint8_t> rec(wire::kRecordOverhead + text.size());
  std::memcpy(rec.data() + 16, text.data(), text.size());
  (void)tx.seal_data(rec.data() + 16, uint32_t(text.size()), rec.data(), rec.data() + 16 + text.size());
  out.push_back({"c2s_record0_plaintext", hex(reinterpret_cast<const uint8_t*>(text.data()), text.size())});
  out.push_back({"c2s_record0", hex(rec)});
  std::vector<uint8_t> fin(wire::kFinRecordSize);
  (void)tx.seal_fin(fin.data());
  out.push_back({"c2s_record1_fin", hex(fin)});
  return out;
}

}  // namespace encmig::test
