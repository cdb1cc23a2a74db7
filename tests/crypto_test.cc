// Secret hygiene, AES-256-GCM and HKDF known answers.
#include <gtest/gtest.h>

#include <cstring>
#include <type_traits>

#include "crypto/aead.h"
#include "crypto/aead_select.h"
#include "crypto/ct.h"
#include "crypto/hkdf.h"
#include "crypto/secret.h"
#include "migration/wire.h"
#include "tests/vectors.h"

namespace encmig {
// Known-answer tests need the raw AEAD with a chosen nonce, which no
// production caller can reach (crypto/aead.h).
struct AeadTestAccess {
  static Status seal(Aead& a, const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
                     uint8_t* tag) {
    return a.seal(nonce, aad, aad_len, buf, len, tag);
  }
  static Status open(Aead& a, const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
                     const uint8_t* tag) {
    return a.open(nonce, aad, aad_len, buf, len, tag);
  }
};
}  // namespace encmig

using namespace encmig;
using namespace encmig::test;

static_assert(!std::is_copy_constructible_v<Secret>);
static_assert(!std::is_copy_assignable_v<Secret>);
static_assert(std::is_nothrow_move_constructible_v<Secret>);

TEST(Secret, MoveLeavesSourceEmpty) {
  auto a = Secret::random(32);
  ASSERT_TRUE(a.ok());
  const uint8_t* p = a->data();
  Secret b = std::move(a.value());
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 32u);
  EXPECT_TRUE(a->empty());
}

TEST(Secret, EqualsIsByValue) {
  auto a = Secret::random(32);
  auto b = a->clone();
  auto c = Secret::random(32);
  ASSERT_TRUE(b.ok() && c.ok());
  EXPECT_TRUE(a->equals(b.value()));
  EXPECT_FALSE(a->equals(c.value()));
  auto shorter = Secret::from_bytes(a->bytes().subspan(0, 31));
  EXPECT_FALSE(a->equals(shorter.value()));
}

TEST(Secret, RejectsBadSizes) {
  EXPECT_FALSE(Secret::create(0).ok());
  EXPECT_FALSE(Secret::create(Secret::kMaxSize + 1).ok());
}

TEST(Secret, RandomKeysDiffer) {
  auto a = Secret::random(32), b = Secret::random(32);
  EXPECT_FALSE(a->equals(b.value()));
}

TEST(ConstantTime, Equal) {
  uint8_t x[4] = {1, 2, 3, 4}, y[4] = {1, 2, 3, 4}, z[4] = {1, 2, 3, 5};
  EXPECT_TRUE(ct_equal(x, y, 4));
  EXPECT_FALSE(ct_equal(x, z, 4));
  EXPECT_TRUE(ct_equal(x, z, 3));
}

// Every engine, the same known answers, the same refusal of every flipped tag
// bit, the same wiping of a buffer that failed.
class AeadEngine : public ::testing::TestWithParam<AeadEngineId> {};

TEST_P(AeadEngine, NistGcmVectors) {
  auto cases = load_vectors("aes256gcm_nist.txt");
  ASSERT_EQ(cases.size(), 4u);
  for (auto& c : cases) {
    SCOPED_TRACE(c["name"]);
    auto kb = unhex(c["key"]);
    auto key = Secret::from_bytes(kb);
    auto aead = Aead::create(key.value(), GetParam());
    ASSERT_TRUE(aead.ok());
    auto iv = unhex(c["iv"]), aad = unhex(c["aad"]), buf = unhex(c["pt"]);
    uint8_t tag[16];
    ASSERT_TRUE(AeadTestAccess::seal(aead.value(), iv.data(), aad.data(), aad.size(), buf.data(), buf.size(), tag).ok());
    EXPECT_EQ(hex(buf), c["ct"]);
    EXPECT_EQ(hex(tag, 16), c["tag"]);
    ASSERT_TRUE(AeadTestAccess::open(aead.value(), iv.data(), aad.data(), aad.size(), buf.data(), buf.size(), tag).ok());
    EXPECT_EQ(hex(buf), c["pt"]);
    // Every tag bit matters, and a failed open wipes the buffer.
    for (int bit = 0; bit < 128; bit++) {
      auto ct = unhex(c["ct"]);
      uint8_t t2[16];
      std::memcpy(t2, tag, 16);
      t2[bit / 8] ^= uint8_t(1 << (bit % 8));
      auto st = AeadTestAccess::open(aead.value(), iv.data(), aad.data(), aad.size(), ct.data(), ct.size(), t2);
      ASSERT_FALSE(st.ok());
      EXPECT_EQ(st.error().code, ErrorCode::kTagMismatch);
      for (uint8_t b : ct) ASSERT_EQ(b, 0);
    }
  }
}

TEST_P(AeadEngine, PassesItsStartUpKnownAnswers) {
  EXPECT_TRUE(aead_known_answers(GetParam()).ok());
  EXPECT_GT(aead_self_benchmark(GetParam(), 5), 0);
}

TEST_P(AeadEngine, RejectsShortKey) {
  auto key = Secret::random(16);
  EXPECT_FALSE(Aead::create(key.value(), GetParam()).ok());
}

// Each engine's records open with each other engine, in both directions,
// through the record layer as the relay uses it.
TEST_P(AeadEngine, InteroperatesWithEveryOtherEngine) {
  for (AeadEngineId other : kAeadEngines) {
    SCOPED_TRACE(aead_engine_name(other));
    auto key = Secret::random(32);
    auto a = Aead::create(key.value(), GetParam());
    auto b = Aead::create(key.value(), other);
    ASSERT_TRUE(a.ok() && b.ok());
    for (size_t len : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(4096 + 3), size_t(65536)}) {
      std::vector<uint8_t> pt(len), buf, out(len + 16);
      for (size_t i = 0; i < len; i++) pt[i] = uint8_t(i * 7 + len);
      uint8_t nonce[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, uint8_t(len)}, aad[16] = {9}, tag[16];
      buf = pt;
      ASSERT_TRUE(AeadTestAccess::seal(a.value(), nonce, aad, 16, buf.data(), len, tag).ok());
      ASSERT_TRUE(AeadTestAccess::open(b.value(), nonce, aad, 16, buf.data(), len, tag).ok());
      EXPECT_EQ(buf, pt);
      ASSERT_TRUE(AeadTestAccess::seal(b.value(), nonce, aad, 16, buf.data(), len, tag).ok());
      ASSERT_TRUE(AeadTestAccess::open(a.value(), nonce, aad, 16, buf.data(), len, tag).ok());
      EXPECT_EQ(buf, pt);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, AeadEngine, ::testing::ValuesIn(kAeadEngines),
                         [](const ::testing::TestParamInfo<AeadEngineId>& i) {
                           return std::string(aead_engine_name(i.param));
                         });

TEST(AeadSelect, ChoosesAnEngineThatPassedAndSaysSo) {
  auto before = Aead::process_engine();
  auto sel = select_aead_engine(std::nullopt, 2);
  ASSERT_TRUE(sel.ok());
  EXPECT_FALSE(sel->pinned);
  EXPECT_EQ(Aead::process_engine(), sel->chosen);
  ASSERT_EQ(sel->engines.size(), 3u);
  for (auto& e : sel->engines) EXPECT_TRUE(e.kat_passed) << e.detail;
  EXPECT_NE(sel->describe().find(aead_engine_name(sel->chosen)), std::string::npos);
  auto pinned = select_aead_engine(AeadEngineId::kOpenssl);
  ASSERT_TRUE(pinned.ok());
  EXPECT_TRUE(pinned->pinned);
  EXPECT_EQ(Aead::process_engine(), AeadEngineId::kOpenssl);
  Aead::set_process_engine(before);
}

TEST(Aead, RejectsShortKey) {
  auto key = Secret::random(16);
  EXPECT_FALSE(Aead::create(key.value()).ok());
}

TEST(Hkdf, Rfc5869Vectors) {
  auto cases = load_vectors("hkdf_rfc5869.txt");
  ASSERT_EQ(cases.size(), 3u);
  for (auto& c : cases) {
    SCOPED_TRACE(c["name"]);
    auto ikm = Secret::from_bytes(unhex(c["ikm"]));
    ASSERT_TRUE(ikm.ok());
    auto salt = unhex(c["salt"]), info = unhex(c["info"]);
    auto prk = hkdf_extract(salt, ikm.value());
    ASSERT_TRUE(prk.ok());
    EXPECT_EQ(hex(prk->bytes()), c["prk"]);
    std::vector<uint8_t> okm(std::stoul(c["length"]));
    ASSERT_TRUE(hkdf_expand_to(prk.value(), info, okm.data(), okm.size()).ok());
    EXPECT_EQ(hex(okm), c["okm"]);
  }
}
