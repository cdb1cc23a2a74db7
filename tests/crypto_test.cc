// Secret hygiene, AES-256-GCM and HKDF known answers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

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
  static Status seal_to(Aead& a, const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* src,
                        size_t len, uint8_t* out) {
    return a.seal_to(nonce, aad, aad_len, src, len, out);
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

// tests/vectors/aes256gcm_large.txt's plaintext: its pt_rule, written out
// here apart from crypto/aead_select.cc's copy.
constexpr const char kLargePtRule[] = "(i*131 + (i>>8)*7 + (i>>16)*13 + 3) & 0xff";
static std::vector<uint8_t> large_plaintext(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; i++) v[i] = uint8_t((i * 131 + (i >> 8) * 7 + (i >> 16) * 13 + 3) & 0xff);
  return v;
}

static std::string sha256_hex(const uint8_t* p, size_t n) {
  uint8_t h[kSha256Size];
  if (!sha256({p, n}, h).ok()) return "sha256 failed";
  return hex(h, kSha256Size);
}

// The bulk code paths (4 KiB + 5, 64 KiB, 1 MiB + 17): in place and
// out of place, open restores, and a flipped ciphertext bit is refused.
TEST_P(AeadEngine, LargeGcmVectors) {
  auto cases = load_vectors("aes256gcm_large.txt");
  ASSERT_EQ(cases.size(), 3u);
  for (auto& c : cases) {
    SCOPED_TRACE(c["name"]);
    ASSERT_EQ(c["pt_rule"], kLargePtRule);
    auto key = Secret::from_bytes(unhex(c["key"]));
    auto aead = Aead::create(key.value(), GetParam());
    ASSERT_TRUE(aead.ok());
    Aead& a = aead.value();
    auto iv = unhex(c["iv"]), aad = unhex(c["aad"]);
    const size_t n = std::stoul(c["length"]);
    const auto pt = large_plaintext(n);
    auto buf = pt;
    uint8_t tag[16];
    ASSERT_TRUE(AeadTestAccess::seal(a, iv.data(), aad.data(), aad.size(), buf.data(), n, tag).ok());
    EXPECT_EQ(hex(buf.data(), 16), c["ct_at_0"]);
    if (c.count("ct_at_65536")) {
      EXPECT_EQ(hex(buf.data() + 65536, 16), c["ct_at_65536"]);
    }
    EXPECT_EQ(hex(buf.data() + n - 16, 16), c["ct_last16"]);
    EXPECT_EQ(sha256_hex(buf.data(), n), c["ct_sha256"]);
    EXPECT_EQ(hex(tag, 16), c["tag"]);

    std::vector<uint8_t> out(n + 16);
    ASSERT_TRUE(AeadTestAccess::seal_to(a, iv.data(), aad.data(), aad.size(), pt.data(), n, out.data()).ok());
    EXPECT_TRUE(std::equal(buf.begin(), buf.end(), out.begin()));
    EXPECT_EQ(hex(out.data() + n, 16), c["tag"]);

    ASSERT_TRUE(AeadTestAccess::open(a, iv.data(), aad.data(), aad.size(), buf.data(), n, tag).ok());
    EXPECT_TRUE(buf == pt);
    // Mid-record, inside the bulk loop; the failed open wipes the buffer.
    out[n / 2] ^= 0x10;
    auto st = AeadTestAccess::open(a, iv.data(), aad.data(), aad.size(), out.data(), n, tag);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, ErrorCode::kTagMismatch);
    EXPECT_TRUE(std::all_of(out.begin(), out.begin() + n, [](uint8_t b) { return b == 0; }));
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

// Lengths around blocks, the batches of blocks the bulk code runs at a time
// (128 to 1024 bytes), pages and records: all three engines give the same
// bytes, out of place, and each opens what the next one sealed. The known
// answers above pin the bytes.
TEST(AeadCrossEngine, AgreeAroundBoundaries) {
  auto cases = load_vectors("aes256gcm_large.txt");
  ASSERT_FALSE(cases.empty());
  auto key = Secret::from_bytes(unhex(cases[0]["key"]));
  auto iv = unhex(cases[0]["iv"]), aad = unhex(cases[0]["aad"]);
  std::vector<Aead> engines;
  for (AeadEngineId id : kAeadEngines) {
    auto a = Aead::create(key.value(), id);
    ASSERT_TRUE(a.ok());
    engines.push_back(std::move(a.value()));
  }
  std::vector<size_t> lens = {0, 1};
  for (size_t base : {16, 64, 128, 256, 512, 768, 1024, 4096, 4096 + 5, 16384, 65536, 1 << 20})
    for (size_t d : {0, 1, 15, 16, 17}) {
      lens.push_back(base + d);
      if (d > 0 && d < base) lens.push_back(base - d);
    }
  const auto pt = large_plaintext((size_t(1) << 20) + 17);
  for (size_t aad_len : {size_t(0), aad.size()})
    for (size_t n : lens) {
      SCOPED_TRACE(testing::Message() << "length " << n << ", aad " << aad_len);
      std::vector<std::vector<uint8_t>> outs;
      for (Aead& a : engines) {
        outs.emplace_back(n + 16);
        ASSERT_TRUE(AeadTestAccess::seal_to(a, iv.data(), aad.data(), aad_len, pt.data(), n, outs.back().data()).ok());
      }
      for (size_t e = 1; e < engines.size(); e++) EXPECT_TRUE(outs[e] == outs[0]) << aead_engine_name(kAeadEngines[e]);
      for (size_t e = 0; e < engines.size(); e++) {
        auto buf = outs[(e + 1) % outs.size()];
        ASSERT_TRUE(
            AeadTestAccess::open(engines[e], iv.data(), aad.data(), aad_len, buf.data(), n, buf.data() + n).ok());
        EXPECT_TRUE(std::equal(pt.begin(), pt.begin() + n, buf.begin())) << aead_engine_name(kAeadEngines[e]);
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
