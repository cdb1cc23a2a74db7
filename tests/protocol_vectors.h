// Computes encmig's protocol version 3 vectors from fixed inputs. Used by the
// vector test (compares with tests/vectors/protocol_v3.txt) and by
// gen_protocol_vectors (prints that file).
#pragma once
#include <string>
#include <vector>

#include "tests/protocol_helpers.h"

namespace encmig::test {

using Vectors = std::vector<std::pair<std::string, std::string>>;

// The inputs and a whole handshake of stream (kind 1, index 1) with fixed
// randoms, written to `out`; returns both sides' keys.
inline Pair vector_handshake(Vectors& out, uint8_t client_base, uint8_t server_base, uint32_t flags) {
  auto m = fixed_secrets(0x42);
  auto cr = fixed_random(client_base), sr = fixed_random(server_base);
  out.push_back({"version", "3"});
  out.push_back({"key", hex(m.key.bytes())});
  out.push_back({"nonce", hex(m.nonce)});
  out.push_back({"migration_id", hex(m.id)});
  out.push_back({"kind", "1"});
  out.push_back({"stream_index", "1"});
  out.push_back({"flags", std::to_string(flags)});
  out.push_back({"client_random", hex(cr)});
  out.push_back({"server_random", hex(sr)});
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 1, &cr, flags).value();
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

inline wire::Salt fixed_salt(uint8_t base) {
  wire::Salt s;
  for (size_t i = 0; i < s.size(); i++) s[i] = uint8_t(base + i);
  return s;
}

// The stream's two DATA records, client to server, sealed once (the second
// case resends the second one as the same bytes).
struct VectorStream {
  std::vector<std::string> text = {"encmig protocol vector", "a second record"};
  std::vector<std::vector<uint8_t>> records;
  wire::Fin fin;
};

inline VectorStream vector_stream() {
  auto m = fixed_secrets(0x42);
  VectorStream v;
  auto sealer = DataSealer::create(
      derive_stream_secret(m, wire::Kind::kMigration, 1, Direction::kClientToServer, fixed_salt(0x30)).value()).value();
  for (auto& t : v.text) {
    std::vector<uint8_t> rec(wire::kRecordOverhead + t.size());
    std::memcpy(rec.data() + wire::kRecordHeaderSize, t.data(), t.size());
    (void)sealer.seal(rec.data(), uint32_t(t.size()));
    v.records.push_back(rec);
  }
  v.fin = sealer.finish();
  return v;
}

inline std::string hex_text(const std::string& t) { return hex(reinterpret_cast<const uint8_t*>(t.data()), t.size()); }

// A stream's first connection: both STARTs, two DATA records (positions 0
// and 22), the server's ACK of both, the client's FIN.
inline Vectors compute_protocol_vectors() {
  Vectors out;
  auto keys = vector_handshake(out, 0xc0, 0x50, 0);
  auto ctx = ControlSealer::create(std::move(keys.client.tx)).value();
  auto stx = ControlSealer::create(std::move(keys.server.tx)).value();
  auto stream = vector_stream();
  out.push_back({"c2s_salt", hex(fixed_salt(0x30))});
  out.push_back({"s2c_salt", hex(fixed_salt(0x90))});
  uint8_t start[wire::kStartRecordSize], ack[wire::kAckRecordSize], fin[wire::kFinRecordSize];
  (void)ctx.seal_start({0, fixed_salt(0x30)}, start);
  out.push_back({"c2s_control0_start_0", hex(start, sizeof start)});
  (void)stx.seal_start({0, fixed_salt(0x90)}, start);
  out.push_back({"s2c_control0_start_0", hex(start, sizeof start)});
  for (size_t i = 0; i < stream.records.size(); i++) {
    out.push_back({"c2s_data" + std::to_string(i) + "_plaintext", hex_text(stream.text[i])});
    out.push_back({"c2s_data" + std::to_string(i), hex(stream.records[i])});
  }
  (void)stx.seal_ack(stream.fin.total, ack);
  out.push_back({"s2c_control1_ack_" + std::to_string(stream.fin.total), hex(ack, sizeof ack)});
  out.push_back({"c2s_digest", hex(stream.fin.digest)});
  (void)ctx.seal_fin(stream.fin, fin);
  out.push_back({"c2s_control1_fin", hex(fin, sizeof fin)});
  return out;
}

// The same stream resumed on a new connection (hello flag RESUME) after the
// server delivered the first record: the server's START says 22, so the
// client resends its second DATA record, the same bytes as before, then its
// FIN under the new connection's keys.
inline Vectors compute_protocol_vectors_resumed() {
  Vectors out;
  auto keys = vector_handshake(out, 0xe0, 0x70, wire::kHelloFlagResume);
  auto ctx = ControlSealer::create(std::move(keys.client.tx)).value();
  auto stx = ControlSealer::create(std::move(keys.server.tx)).value();
  auto stream = vector_stream();
  out.push_back({"c2s_salt", hex(fixed_salt(0x30))});
  out.push_back({"s2c_salt", hex(fixed_salt(0x90))});
  uint8_t start[wire::kStartRecordSize], fin[wire::kFinRecordSize];
  (void)ctx.seal_start({0, fixed_salt(0x30)}, start);
  out.push_back({"c2s_control0_start_0", hex(start, sizeof start)});
  (void)stx.seal_start({stream.text[0].size(), fixed_salt(0x90)}, start);
  out.push_back({"s2c_control0_start_" + std::to_string(stream.text[0].size()), hex(start, sizeof start)});
  out.push_back({"c2s_data1_plaintext", hex_text(stream.text[1])});
  out.push_back({"c2s_data1", hex(stream.records[1])});
  out.push_back({"c2s_digest", hex(stream.fin.digest)});
  (void)ctx.seal_fin(stream.fin, fin);
  out.push_back({"c2s_control1_fin", hex(fin, sizeof fin)});
  return out;
}

}  // namespace encmig::test
