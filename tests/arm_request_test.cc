// The one parser for migration-arm arguments and hand-off descriptions, and
// the hex codec it relies on: every malformed value is refused by name, and
// nothing throws.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "crypto/encoding.h"
#include "daemon/arm_request.h"

using namespace encmig;
using nlohmann::json;

namespace {
const std::string kId = "00112233445566778899aabbccddeeff";
const std::string kKey = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY=";  // 32 bytes

json source_args() {
  return json{{"id", kId}, {"role", "source"}, {"key", kKey}, {"nonce", "0102030405060708"},
              {"peer", "192.0.2.1:16520"}, {"listen-path", "/run/encmig/x.sock"}, {"streams", 3}};
}

std::string refusal(const json& args) {
  auto r = parse_arm_request(args, ArmChannel::kQmp, "/run/encmig");
  return r.ok() ? "" : r.error().detail;
}
}  // namespace

TEST(Hex, RoundTripAndStrictness) {
  uint8_t b[4] = {0x00, 0x7f, 0xa5, 0xff};
  EXPECT_EQ(hex_encode(b), "007fa5ff");
  uint8_t out[4];
  EXPECT_TRUE(hex_decode("007fa5ff", out).ok());
  EXPECT_EQ(std::memcmp(out, b, 4), 0);
  for (const char* bad : {"007FA5FF", "007fa5f", "007fa5fff", " 07fa5ff", "0x7fa5ff", "007fa5g0", "+07fa5ff"})
    EXPECT_FALSE(hex_decode(bad, out).ok()) << bad;
}

TEST(ArmRequest, GoodSourceAndDestination) {
  auto cfg = parse_arm_request(source_args(), ArmChannel::kQmp, "/run/encmig");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->role, MigrationRole::kSource);
  EXPECT_EQ(cfg->expected_streams, 3);
  EXPECT_EQ(cfg->peer.str(), "192.0.2.1:16520");
  EXPECT_EQ(cfg->listen_path, "/run/encmig/x.sock");
  json d{{"id", kId}, {"role", "destination"}, {"key", kKey}, {"nonce", "0102030405060708"}, {"qemu-path", "/run/encmig/q.sock"}};
  auto dcfg = parse_arm_request(d, ArmChannel::kQmp, "/run/encmig");
  ASSERT_TRUE(dcfg.ok()) << dcfg.error().message();
  EXPECT_EQ(dcfg->qemu_path, "/run/encmig/q.sock");
  EXPECT_EQ(dcfg->expected_streams, 0);
  EXPECT_FALSE(dcfg->postcopy_preempt);
}

TEST(ArmRequest, PostcopyPreemptIsTheLastStream) {
  json a = source_args();
  a["streams"] = 2;
  a["postcopy-preempt"] = true;
  auto cfg = parse_arm_request(a, ArmChannel::kQmp, "/run/encmig");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_TRUE(cfg->postcopy_preempt);
  // The preempt channel comes with a main stream: one stream cannot be both.
  a["streams"] = 1;
  EXPECT_NE(refusal(a).find("'postcopy-preempt'"), std::string::npos) << refusal(a);
  a.erase("streams");
  EXPECT_NE(refusal(a).find("'postcopy-preempt'"), std::string::npos) << refusal(a);
}

TEST(ArmRequest, EveryBadValueIsNamed) {
  struct Row {
    const char* arg;
    json value;
  } rows[] = {
      {"id", "00112233445566778899AABBCCDDEEFF"}, {"id", "0/1/2"}, {"id", 5}, {"role", "both"},
      {"role", true},  {"streams", 0},  {"streams", -1}, {"streams", 1.5}, {"streams", true},
      {"streams", 9223372036854775807LL}, {"peer", "nohost"}, {"peer", 1}, {"listen-path", 7},
      {"bogus", 1}, {"qemu-pid", 0}, {"qemu-pid", "12"}, {"qemu-pid", -5},
      {"postcopy-preempt", 1}, {"postcopy-preempt", "yes"},
  };
  for (const auto& r : rows) {
    json a = source_args();
    a[r.arg] = r.value;
    std::string why = refusal(a);
    EXPECT_NE(why.find(std::string("'") + r.arg + "'"), std::string::npos) << r.arg << " = " << r.value.dump() << ": " << why;
  }
  for (const char* p : {"/tmp/x.sock", "/run/encmig/../x", "/run/encmig/a/b", "/run/encmig/", "/run/encmigx/a", "/run/encmig/a b"}) {
    json b = source_args();
    b["listen-path"] = p;
    EXPECT_NE(refusal(b).find("'listen-path'"), std::string::npos) << p << ": " << refusal(b);
  }
  json a = source_args();
  a["qemu-path"] = "/run/encmig/x";
  EXPECT_NE(refusal(a).find("qemu-path"), std::string::npos);
  a = source_args();
  a.erase("listen-path");
  EXPECT_NE(refusal(a).find("listen-path"), std::string::npos);
  EXPECT_FALSE(parse_arm_request(json::array(), ArmChannel::kQmp, "/run/encmig").ok());
  EXPECT_FALSE(parse_arm_request(json("text"), ArmChannel::kQmp, "/run/encmig").ok());
}

TEST(ArmRequest, SecretsAreCheckedAndTheKeyTextWiped) {
  json a = source_args();
  auto s = parse_arm_secrets(a);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->nonce[7], 8);
  EXPECT_EQ(a["key"].get<std::string>().find_first_not_of('\0'), std::string::npos) << "key text not wiped";
  for (json bad_key : {json(""), json("AAAA"), json(5), json("QUJD"),
                       json("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")}) {  // last: all zero
    json b = source_args();
    b["key"] = bad_key;
    auto r = parse_arm_secrets(b);
    ASSERT_FALSE(r.ok()) << bad_key.dump();
    EXPECT_NE(r.error().detail.find("'key'"), std::string::npos) << r.error().detail;
  }
  for (json bad_nonce : {json("0g0g0g0g0g0g0g0g"), json(" 1 2 3 4 5 6 7 8"), json("01020304050607"), json(1)}) {
    json b = source_args();
    b["nonce"] = bad_nonce;
    auto r = parse_arm_secrets(b);
    ASSERT_FALSE(r.ok()) << bad_nonce.dump();
    EXPECT_NE(r.error().detail.find("'nonce'"), std::string::npos) << r.error().detail;
  }
}

TEST(ArmRequest, HandoffDescription) {
  json d{{"encmig", 1}, {"role", "source"}, {"peer", "10.0.0.2:16520"}, {"streams", 2}, {"nbd", true}, {"domain", "web1"}};
  auto cfg = parse_arm_request(d, ArmChannel::kHandoff, "/run/encmig", kId);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_EQ(cfg->listen_path, "/run/encmig/" + kId + "/migrate.sock");
  EXPECT_EQ(cfg->nbd_listen_path, "/run/encmig/" + kId + "/nbd.sock");
  // Paths and keys never come from a description.
  for (const char* k : {"listen-path", "key", "id", "qemu-pid"}) {
    json b = d;
    b[k] = "x";
    EXPECT_FALSE(parse_arm_request(b, ArmChannel::kHandoff, "/run/encmig", kId).ok()) << k;
  }
  json b = d;
  b["domain"] = "../etc";
  EXPECT_FALSE(parse_arm_request(b, ArmChannel::kHandoff, "/run/encmig", kId).ok());
  b = d;
  b["nbd"] = "yes";
  EXPECT_FALSE(parse_arm_request(b, ArmChannel::kHandoff, "/run/encmig", kId).ok());
  EXPECT_FALSE(parse_arm_request(d, ArmChannel::kHandoff, "/run/encmig", "0/1/2").ok());
  uint8_t value[40] = {};
  EXPECT_FALSE(secrets_from_value(value, 40, {}).ok());  // all-zero key
  value[0] = 1;
  EXPECT_TRUE(secrets_from_value(value, 40, {}).ok());
  EXPECT_FALSE(secrets_from_value(value, 39, {}).ok());
}
