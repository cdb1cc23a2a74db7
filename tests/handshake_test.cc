// Hello and key confirmation: happy path byte by byte, and every rejection.
#include <gtest/gtest.h>

#include "tests/protocol_helpers.h"

using namespace encmig;
using namespace encmig::test;

namespace {

// Feeds `data` one byte at a time; returns the first error, if any.
template <class HS>
Status feed_bytewise(HS& hs, std::span<const uint8_t> data) {
  for (uint8_t b : data) {
    auto r = hs.consume(&b, 1);
    if (!r) return r.error();
  }
  return {};
}

}  // namespace

TEST(Handshake, BytewiseHappyPath) {
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 3);
  auto s = ServerHandshake::create();
  ASSERT_TRUE(feed_bytewise(s, c->hello()).ok());
  ASSERT_EQ(s.state(), ServerHandshake::State::kNeedSecrets);
  EXPECT_EQ(s.client_hello().stream_index, 3u);
  EXPECT_EQ(s.client_hello().kind, wire::Kind::kMigration);
  EXPECT_EQ(s.client_hello().migration_id, m.id);
  ASSERT_TRUE(s.accept(m).ok());
  ASSERT_TRUE(feed_bytewise(c.value(), s.output()).ok());
  ASSERT_EQ(c->state(), ClientHandshake::State::kDone);
  ASSERT_TRUE(feed_bytewise(s, c->confirm()).ok());
  ASSERT_EQ(s.state(), ServerHandshake::State::kDone);
  EXPECT_TRUE(c->take_keys().ok());
  EXPECT_TRUE(s.take_keys().ok());
}

TEST(Handshake, WrongKeyFailsAtClientAndServer) {
  auto m = fixed_secrets(0x42);
  auto bad = fixed_secrets(0x43);  // same id and nonce, different key
  // Server holds the right key, client the wrong one: client rejects the
  // server's confirmation.
  auto c = ClientHandshake::create(bad.clone().value(), wire::Kind::kMigration, 0);
  auto s = ServerHandshake::create();
  ASSERT_TRUE(s.consume(c->hello().data(), 64).ok());
  ASSERT_TRUE(s.accept(m).ok());
  auto r = c->consume(s.output().data(), s.output().size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kKeyConfirmFailed);
  EXPECT_FALSE(c->take_keys().ok());
}

TEST(Handshake, ServerRejectsForgedClientConfirm) {
  auto m = fixed_secrets();
  auto s = ServerHandshake::create();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  ASSERT_TRUE(s.consume(c->hello().data(), 64).ok());
  ASSERT_TRUE(s.accept(m).ok());
  uint8_t forged[32] = {};
  auto r = s.consume(forged, 32);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kKeyConfirmFailed);
  EXPECT_FALSE(s.take_keys().ok());
}

TEST(Handshake, ReplayedConnectionFails) {
  // Record a full client side of a good connection, then replay it against a
  // fresh server: the server's new random changes the transcript.
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  auto s1 = ServerHandshake::create();
  ASSERT_TRUE(s1.consume(c->hello().data(), 64).ok());
  ASSERT_TRUE(s1.accept(m).ok());
  ASSERT_TRUE(c->consume(s1.output().data(), s1.output().size()).ok());
  std::vector<uint8_t> hello(c->hello().begin(), c->hello().end());
  std::vector<uint8_t> confirm(c->confirm().begin(), c->confirm().end());

  auto s2 = ServerHandshake::create();
  ASSERT_TRUE(s2.consume(hello.data(), hello.size()).ok());
  ASSERT_TRUE(s2.accept(m).ok());
  auto r = s2.consume(confirm.data(), confirm.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kKeyConfirmFailed);
}

TEST(Handshake, ReplayedServerFlightFails) {
  auto m = fixed_secrets();
  auto c1 = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  auto s = ServerHandshake::create();
  ASSERT_TRUE(s.consume(c1->hello().data(), 64).ok());
  ASSERT_TRUE(s.accept(m).ok());
  std::vector<uint8_t> flight(s.output().begin(), s.output().end());
  auto c2 = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  auto r = c2->consume(flight.data(), flight.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kKeyConfirmFailed);
}

TEST(Handshake, TamperedStreamIndexFailsConfirmation) {
  // A man in the middle rewrites the stream index in the client hello (to
  // reorder streams at the destination). The server answers for the index it
  // saw, and the client sees a mismatch.
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 1);
  std::vector<uint8_t> hello(c->hello().begin(), c->hello().end());
  hello[11] = 0;  // index 1 -> 0
  auto s = ServerHandshake::create();
  ASSERT_TRUE(s.consume(hello.data(), hello.size()).ok());
  ASSERT_TRUE(s.accept(m).ok());
  std::vector<uint8_t> flight(s.output().begin(), s.output().end());
  auto r = c->consume(flight.data(), flight.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kHelloMismatch);
  // Rewriting it back in the server hello breaks the transcript instead.
  auto c3 = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 1);
  std::vector<uint8_t> h3(c3->hello().begin(), c3->hello().end());
  h3[11] = 0;
  auto s3 = ServerHandshake::create();
  ASSERT_TRUE(s3.consume(h3.data(), 64).ok());
  ASSERT_TRUE(s3.accept(m).ok());
  std::vector<uint8_t> f3(s3.output().begin(), s3.output().end());
  f3[11] = 1;
  auto r3 = c3->consume(f3.data(), f3.size());
  ASSERT_FALSE(r3.ok());
  EXPECT_EQ(r3.error().code, ErrorCode::kKeyConfirmFailed);
}

TEST(Handshake, EveryHelloBitFlipIsRejected) {
  // Flip each bit of the client hello in transit: the server either rejects
  // the hello outright, or the confirmation fails at one side.
  auto m = fixed_secrets();
  for (int bit = 0; bit < 64 * 8; bit++) {
    auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 2);
    std::vector<uint8_t> hello(c->hello().begin(), c->hello().end());
    hello[bit / 8] ^= uint8_t(1 << (bit % 8));
    auto s = ServerHandshake::create();
    auto r = s.consume(hello.data(), hello.size());
    if (!r.ok()) continue;  // malformed hello
    if (s.client_hello().migration_id != m.id) continue;  // would be "unknown migration"
    ASSERT_TRUE(s.accept(m).ok());
    auto rc = c->consume(s.output().data(), s.output().size());
    ASSERT_FALSE(rc.ok()) << "bit " << bit;
  }
}

TEST(Handshake, MalformedHellos) {
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kNbd, 0);
  struct Case {
    size_t offset;
    uint8_t value;
    ErrorCode want;
  } cases[] = {
      {0, 'X', ErrorCode::kBadMagic},       {5, 2, ErrorCode::kBadVersion},   {4, 1, ErrorCode::kBadVersion},
      {6, 0, ErrorCode::kBadKind},          {6, 9, ErrorCode::kBadKind},      {7, 2, ErrorCode::kBadRole},
      {63, 2, ErrorCode::kBadReserved},        {60, 0x80, ErrorCode::kBadReserved},
  };
  for (const auto& k : cases) {
    std::vector<uint8_t> hello(c->hello().begin(), c->hello().end());
    hello[k.offset] = k.value;
    auto s = ServerHandshake::create();
    auto r = s.consume(hello.data(), hello.size());
    ASSERT_FALSE(r.ok()) << k.offset;
    EXPECT_EQ(r.error().code, k.want) << k.offset << ": " << r.error().message();
  }
}

TEST(Handshake, ServerAlertReachesClient) {
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  auto s = ServerHandshake::create();
  ASSERT_TRUE(s.consume(c->hello().data(), 64).ok());
  s.reject(ErrorCode::kUnknownMigration, "no such migration armed");
  ASSERT_EQ(s.output().size(), wire::kAlertSize);
  auto r = c->consume(s.output().data(), s.output().size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kPeerAlert);
  EXPECT_NE(r.error().message().find("unknown migration id"), std::string::npos);
  EXPECT_NE(r.error().message().find("no such migration armed"), std::string::npos);
}

TEST(Handshake, AcceptWithWrongMigrationRefused) {
  auto m = fixed_secrets();
  auto other = fixed_secrets();
  other.id[0] ^= 1;
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  auto s = ServerHandshake::create();
  ASSERT_TRUE(s.consume(c->hello().data(), 64).ok());
  auto st = s.accept(other);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, ErrorCode::kUnknownMigration);
}

TEST(Handshake, ProbeReply) {
  auto s = ServerHandshake::create();
  wire::Hello h;
  h.kind = wire::Kind::kProbe;
  uint8_t raw[64];
  wire::encode_hello(h, raw);
  ASSERT_TRUE(s.consume(raw, 64).ok());
  ASSERT_EQ(s.client_hello().kind, wire::Kind::kProbe);
  wire::ProbeReply pr;
  pr.software = "encmigd 0.1.0";
  s.answer_probe(pr);
  auto back = wire::decode_probe_reply(s.output().data());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->version_max, wire::kVersion);
  EXPECT_EQ(back->ciphers, wire::kCipherAes256Gcm);
  EXPECT_EQ(back->software, "encmigd 0.1.0");
}

TEST(Handshake, AlertFollowedByMoreBytesInOneRead) {
  // Regression (found by fuzz_hello): an alert arriving together with more
  // bytes than a whole server flight overran the client's buffer.
  auto m = fixed_secrets();
  auto c = ClientHandshake::create(m.clone().value(), wire::Kind::kMigration, 0);
  std::vector<uint8_t> in(200, 0xee);
  wire::encode_alert({wire::kVersion, ErrorCode::kDuplicateStream, "dup"}, in.data());
  auto r = c->consume(in.data(), in.size());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kPeerAlert);
}
