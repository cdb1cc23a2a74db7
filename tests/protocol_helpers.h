// Shared setup for protocol tests: fixed secrets and a completed handshake.
#pragma once
#include <gtest/gtest.h>

#include "migration/handshake.h"
#include "migration/record.h"
#include "tests/vectors.h"

namespace encmig::test {

inline MigrationSecrets fixed_secrets(uint8_t key_byte = 0x42) {
  MigrationSecrets m;
  std::vector<uint8_t> k(32);
  for (size_t i = 0; i < k.size(); i++) k[i] = uint8_t(key_byte + i);
  m.key = std::move(Secret::from_bytes(k).value());
  for (size_t i = 0; i < m.nonce.size(); i++) m.nonce[i] = uint8_t(0xa0 + i);
  for (size_t i = 0; i < m.id.size(); i++) m.id[i] = uint8_t(0x10 + i);
  return m;
}

inline wire::Random fixed_random(uint8_t base) {
  wire::Random r;
  for (size_t i = 0; i < r.size(); i++) r[i] = uint8_t(base + i);
  return r;
}

struct Pair {
  SessionKeys client;
  SessionKeys server;
};

// Runs both state machines against each other in memory.
inline Pair handshake_pair(const MigrationSecrets& m, wire::Kind kind = wire::Kind::kMigration, uint32_t index = 0) {
  auto c = ClientHandshake::create(m.clone().value(), kind, index);
  EXPECT_TRUE(c.ok());
  auto s = ServerHandshake::create();
  auto hello = c->hello();
  EXPECT_TRUE(s.consume(hello.data(), hello.size()).ok());
  EXPECT_TRUE(s.accept(m).ok());
  auto out = s.output();
  EXPECT_TRUE(c->consume(out.data(), out.size()).ok());
  auto conf = c->confirm();
  EXPECT_TRUE(s.consume(conf.data(), conf.size()).ok());
  return Pair{std::move(c->take_keys().value()), std::move(s.take_keys().value())};
}

}  // namespace encmig::test
