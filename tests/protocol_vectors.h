// Computes encmig v1 and v2 protocol vectors from fixed inputs. Used by the vector
// test (compares with tests/vectors/protocol_v1.txt and protocol_v2.txt) and
// by gen_protocol_vectors (prints those files).
#pragma once
#include <string>
#include <vector>

#include "tests/protocol_helpers.h"

namespace encmig::test {

using Vectors = std::vector<std::pair<std::string, std::string>>;

// The inputs and a whole handshake of stream (kind 1, index 1) with fixed
// randoms, written to `out`; returns both sides' keys.
inline Pair vector_handshake(Vectors& out, uint8_t client_base, uint8_t server_base, uint16_t version, uint32_t flags) {
  auto m = fixed_secrets(0x42);
  auto cr = fixed_random(client_base), sr = fixed_random(server_base);
  out.push_back({"key", hex(m.key.bytes())});
  out.push_back({"nonce", hex(m.nonce)});
  out.push_back({"migration_id", hex(m.id)});
  out.push_back({"kind", "1"});
  out.push_back({"stream_index", "1"});
  if (flags) out.push_back({"flags", std::to_string(flags)});
  out.push_back({"client_random", hex(cr)});
  out.push_back({"server_random", hex(sr)});
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 1, &cr, version, flags).value();
  auto s = ServerHandshake::create();
  (void)s.consume(c.hello().data(), c.hello().size());
  (void)s.accept(m, &sr);
  auto flight = s.output();
  out.push_back({"client_hello", hex(c.hello())});
  out.push_back({"server_hello", hex(flight.data(), wire::kHelloSize)});
  out.push_back({"server_confirm", hex(flight.data() + wire::kHelloSize, wire::kConfirmSize)});
  (void)c.consume(flight.data(), flight.size());
  out.push_back({"client_confirm", hex(c.confirm())});
  auto conf = c.confirm();
  (void)s.consume(conf.data(), conf.size());
  return Pair{std::move(c.take_keys().value()), std::move(s.take_keys().value())};
}

inline Vectors compute_protocol_vectors() {
  Vectors out;
  auto keys = vector_handshake(out, 0xc0, 0x50, wire::kVersion1, 0).client;
  auto tx = RecordSealer::create(std::move(keys.tx), wire::kVersion1).value();

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

// Version 2: a resumed connection of the same stream (hello flag RESUME),
// each side's first record a RESUME, then the client's DATA continuing at
// stream position 1000000, an ACK and the FIN with the stream's total.
inline Vectors compute_protocol_vectors_v2() {
  Vectors out;
  auto keys = vector_handshake(out, 0xe0, 0x70, wire::kVersion2, wire::kHelloFlagResume);
  auto ck = std::move(keys.client), sk = std::move(keys.server);
  auto ctx = RecordSealer::create(std::move(ck.tx), wire::kVersion2, 1000000).value();
  auto stx = RecordSealer::create(std::move(sk.tx), wire::kVersion2).value();

  uint8_t pos[wire::kAckRecordSize];
  (void)stx.seal_position(wire::RecordType::kResume, 1000000, pos);
  out.push_back({"s2c_record0_resume_1000000", hex(pos, sizeof pos)});
  (void)ctx.seal_position(wire::RecordType::kResume, 4097, pos);
  out.push_back({"c2s_record0_resume_4097", hex(pos, sizeof pos)});
  std::string text = "encmig protocol vector";
  std::vector<uint8_t> rec(wire::kRecordOverhead + text.size());
  std::memcpy(rec.data() + 16, text.data(), text.size());
  (void)ctx.seal_data(rec.data() + 16, uint32_t(text.size()), rec.data(), rec.data() + 16 + text.size());
  out.push_back({"c2s_record1_plaintext", hex(reinterpret_cast<const uint8_t*>(text.data()), text.size())});
  out.push_back({"c2s_record1", hex(rec)});
  (void)ctx.seal_position(wire::RecordType::kAck, 4097, pos);
  out.push_back({"c2s_record2_ack_4097", hex(pos, sizeof pos)});
  std::vector<uint8_t> fin(wire::kFinRecordSize);
  (void)ctx.seal_fin(fin.data());
  out.push_back({"c2s_record3_fin_1000022", hex(fin)});
  return out;
}

}  // namespace encmig::test
