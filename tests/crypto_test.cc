// Secret hygiene, AES-256-GCM and HKDF known answers.
#include <gtest/gtest.h>

#include <cstring>
#include <type_traits>

#include "crypto/aead.h"
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

TEST(Aead, NistGcmVectors) {
  auto cases = load_vectors("aes256gcm_nist.txt");
  ASSERT_EQ(cases.size(), 4u);
  for (auto& c : cases) {
    SCOPED_TRACE(c["name"]);
    auto kb = unhex(c["key"]);
    auto key = Secret::from_bytes(kb);
    auto aead = Aead::create(key.value());
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
