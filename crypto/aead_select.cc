#include "crypto/aead_select.h"

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "crypto/aead.h"
#include "crypto/encoding.h"
#include "crypto/hkdf.h"

namespace encmig {

// The raw operations, for the known answers and the benchmark only
// (crypto/aead.h).
struct AeadSelfTest {
  static Status seal(Aead& a, const uint8_t* n, const uint8_t* aad, size_t al, uint8_t* b, size_t l, uint8_t* t) {
    return a.seal(n, aad, al, b, l, t);
  }
  static Status open(Aead& a, const uint8_t* n, const uint8_t* aad, size_t al, uint8_t* b, size_t l,
                     const uint8_t* t) {
    return a.open(n, aad, al, b, l, t);
  }
  static Status seal_to(Aead& a, const uint8_t* n, const uint8_t* aad, size_t al, const uint8_t* s, size_t l,
                        uint8_t* o) {
    return a.seal_to(n, aad, al, s, l, o);
  }
};

namespace {

// McGrew and Viega, "The Galois/Counter Mode of Operation", test cases 13-16
// (also tests/vectors/aes256gcm_nist.txt).
struct Kat {
  const char *name, *key, *iv, *aad, *pt, *ct, *tag;
};
constexpr const char kK15[] = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
constexpr const char kP15[] =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
    "ba637b391aafd255";
constexpr const char kC15[] =
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
    "bcc9f662898015ad";
constexpr Kat kKats[] = {
    {"gcm-tc13", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "",
     "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    {"gcm-tc14", "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000", "",
     "00000000000000000000000000000000", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"gcm-tc15", kK15, "cafebabefacedbaddecaf888", "", kP15, kC15, "b094dac5d93471bdec1a502270e3cc6c"},
    {"gcm-tc16", kK15, "cafebabefacedbaddecaf888", "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657"
     "ba637b39",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0a"
     "bcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

// One case large enough for the bulk code paths (AES-NI/VAES/VPCLMULQDQ, many
// blocks in flight) that 1 MiB records run and cases of at most 64 bytes never
// reach: 1 MiB + 17 bytes (after the bulk, a lone block and a partial one), 24
// bytes of AAD (a partial GHASH block), the counter crossing 0xffff. From a
// pure-Python AES-GCM checked against python3-cryptography
// (tests/vectors/gen_large_gcm.py, case gcm-large-1mib-17 of
// tests/vectors/aes256gcm_large.txt). The plaintext is a rule rather than a
// megabyte of constants; the ciphertext is checked by its SHA-256.
constexpr const char kLargeName[] = "gcm-large-1mib-17";
constexpr size_t kLargeLen = (size_t(1) << 20) + 17;
constexpr const char kLargeKey[] = "342ef16aad381179692895a8121c7c79e66bd01cc980b9defe203aff7144a60e";
constexpr const char kLargeIv[] = "c5db0d12d893b45a68061d88";
constexpr const char kLargeAad[] = "8a404ad9e1fe36a4e18d6d53e6bb712108ab02ce7a27cc83";
constexpr const char kLargeCtSha256[] = "25f6e7c80dacae8e48d81dc240d1b69c1ed9f9265d9d9a0ab7aaca4479137149";
constexpr const char kLargeTag[] = "0ba8d4097f6fe8702f6b1bd19cbeacf9";

// pt_rule in the vector file. The (i >> 16) term keeps 64 KiB windows distinct,
// so an engine reading the wrong window of its input cannot still match.
uint8_t large_pt(size_t i) { return uint8_t(i * 131 + (i >> 8) * 7 + (i >> 16) * 13 + 3); }

// The rule 256 bytes at a time: within an aligned block only i * 131 varies,
// so a block is this row plus one byte. Vectorises; byte by byte, filling and
// checking cost 2.4 ms per engine at start instead of 0.15.
constexpr auto kLargeRow = [] {
  std::array<uint8_t, 256> r{};
  for (size_t k = 0; k < 256; k++) r[k] = uint8_t(k * 131);
  return r;
}();

void large_pt_fill(uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    const uint8_t c = large_pt(i);
    for (size_t k = 0; k < 256; k++) p[i + k] = uint8_t(kLargeRow[k] + c);
  }
  for (; i < n; i++) p[i] = large_pt(i);
}

bool large_pt_equal(const uint8_t* p, size_t n) {
  size_t i = 0;
  for (; i + 256 <= n; i += 256) {
    const uint8_t c = large_pt(i);
    uint8_t d = 0;
    for (size_t k = 0; k < 256; k++) d |= p[i + k] ^ uint8_t(kLargeRow[k] + c);
    if (d) return false;
  }
  for (; i < n; i++)
    if (p[i] != large_pt(i)) return false;
  return true;
}

std::vector<uint8_t> bytes(const char* hex) {
  std::vector<uint8_t> v(std::strlen(hex) / 2);
  if (!hex_decode(hex, v)) v.clear();
  return v;
}

Status kat_case(AeadEngineId id, const Kat& k) {
  auto fail = [&](const char* what) {
    return make_error(crypto_error::kCrypto, std::string(aead_engine_name(id)) + ": known answer " + k.name + ": " + what);
  };
  auto kb = bytes(k.key);
  auto key = Secret::from_bytes(kb);
  secure_wipe(kb.data(), kb.size());
  if (!key) return fail("key");
  auto a = Aead::create(key.value(), id);
  if (!a) return fail("create");
  auto iv = bytes(k.iv), aad = bytes(k.aad), pt = bytes(k.pt), ct = bytes(k.ct), tag = bytes(k.tag);
  std::vector<uint8_t> buf = pt;
  uint8_t t[16];
  if (!AeadSelfTest::seal(a.value(), iv.data(), aad.data(), aad.size(), buf.data(), buf.size(), t)) return fail("seal");
  if (buf != ct || std::memcmp(t, tag.data(), 16) != 0) return fail("wrong ciphertext or tag");
  std::vector<uint8_t> out(pt.size() + 16), want = ct;
  want.insert(want.end(), tag.begin(), tag.end());
  if (!AeadSelfTest::seal_to(a.value(), iv.data(), aad.data(), aad.size(), pt.data(), pt.size(), out.data()) ||
      out != want)
    return fail("wrong ciphertext or tag (seal_to)");
  if (!AeadSelfTest::open(a.value(), iv.data(), aad.data(), aad.size(), buf.data(), buf.size(), tag.data()) ||
      buf != pt)
    return fail("open");
  uint8_t bad[16];
  std::memcpy(bad, tag.data(), 16);
  bad[15] ^= 0x80;
  buf = ct;
  Status st = AeadSelfTest::open(a.value(), iv.data(), aad.data(), aad.size(), buf.data(), buf.size(), bad);
  if (st || st.error().code != crypto_error::kTagMismatch) return fail("a flipped tag bit was accepted");
  return {};
}

// The same steps as kat_case, in 2 MiB of scratch: the plaintext and the
// sealed copy (out, once its digest matched, stands for the expected
// ciphertext). The scratch outlives one engine: faulting fresh pages in costs
// more than the check itself.
Status large_kat_case(AeadEngineId id, std::vector<uint8_t>& scratch) {
  auto fail = [&](const char* what) {
    return make_error(crypto_error::kCrypto,
                      std::string(aead_engine_name(id)) + ": known answer " + kLargeName + ": " + what);
  };
  auto kb = bytes(kLargeKey);
  auto key = Secret::from_bytes(kb);
  secure_wipe(kb.data(), kb.size());
  if (!key) return fail("key");
  auto a = Aead::create(key.value(), id);
  if (!a) return fail("create");
  auto iv = bytes(kLargeIv), aad = bytes(kLargeAad), sum = bytes(kLargeCtSha256), tag = bytes(kLargeTag);
  const size_t n = kLargeLen;
  scratch.resize(2 * n + 16);
  uint8_t *buf = scratch.data(), *out = buf + n;
  large_pt_fill(buf, n);
  std::memset(out, 0, n + 16);  // nothing the engine before left may pass for this one's output
  uint8_t h[kSha256Size], t[16];
  Aead& e = a.value();
  if (!AeadSelfTest::seal_to(e, iv.data(), aad.data(), aad.size(), buf, n, out) || !sha256({out, n}, h) ||
      std::memcmp(h, sum.data(), kSha256Size) != 0 || std::memcmp(out + n, tag.data(), 16) != 0)
    return fail("wrong ciphertext or tag (seal_to)");
  if (!AeadSelfTest::seal(e, iv.data(), aad.data(), aad.size(), buf, n, t) || std::memcmp(buf, out, n) != 0 ||
      std::memcmp(t, tag.data(), 16) != 0)
    return fail("wrong ciphertext or tag");
  if (!AeadSelfTest::open(e, iv.data(), aad.data(), aad.size(), buf, n, tag.data())) return fail("open");
  if (!large_pt_equal(buf, n)) return fail("open gave the wrong plaintext");
  // Deep inside the bulk loop, not in the first or last blocks.
  out[n / 2] ^= 0x01;
  Status st = AeadSelfTest::open(e, iv.data(), aad.data(), aad.size(), out, n, tag.data());
  if (st || st.error().code != crypto_error::kTagMismatch) return fail("a flipped ciphertext bit was accepted");
  return {};
}

Status known_answers(AeadEngineId id, std::vector<uint8_t>& scratch) {
  for (const Kat& k : kKats)
    if (auto st = kat_case(id, k); !st) return st;
  return large_kat_case(id, scratch);
}

}  // namespace

Status aead_known_answers(AeadEngineId id) {
  std::vector<uint8_t> scratch;
  return known_answers(id, scratch);
}

double aead_self_benchmark(AeadEngineId id, int ms) {
  auto key = Secret::random(kAeadKeySize);
  if (!key) return 0;
  auto a = Aead::create(key.value(), id);
  if (!a) return 0;
  constexpr size_t kRecord = 64 << 10;
  std::vector<uint8_t> buf(kRecord, 0x5a);
  uint8_t aad[16] = {}, nonce[12] = {}, tag[16];
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now(), end = t0 + std::chrono::milliseconds(ms);
  uint64_t n = 0;
  do {
    for (int i = 0; i < 4; i++, n++) {
      std::memcpy(nonce + 4, &n, 8);
      if (!AeadSelfTest::seal(a.value(), nonce, aad, 16, buf.data(), kRecord, tag) ||
          !AeadSelfTest::open(a.value(), nonce, aad, 16, buf.data(), kRecord, tag))
        return 0;
    }
  } while (Clock::now() < end);
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return double(n * kRecord) / s / 1e6;
}

std::string AeadSelection::describe() const {
  std::string s = std::string("AES-256-GCM engine ") + aead_engine_name(chosen) + (pinned ? " (pinned)" : " (fastest)");
  std::string parts;
  for (auto& e : engines) {
    char b[160];
    if (!e.kat_passed)
      std::snprintf(b, sizeof b, "%s failed its known answers", aead_engine_name(e.id));
    else if (e.seal_open_mb_s > 0)
      std::snprintf(b, sizeof b, "%s %.0f MB/s", aead_engine_name(e.id), e.seal_open_mb_s);
    else
      std::snprintf(b, sizeof b, "%s known answers passed", aead_engine_name(e.id));
    parts += (parts.empty() ? "" : ", ") + std::string(b);
  }
  return s + ": " + parts + " (seal+open, 64 KiB records, one core)";
}

Result<AeadSelection> select_aead_engine(std::optional<AeadEngineId> pin, int bench_ms) {
  AeadSelection sel;
  sel.pinned = pin.has_value();
  {
    std::vector<uint8_t> scratch;  // one for all engines (large_kat_case)
    for (AeadEngineId id : kAeadEngines) {
      AeadEngineReport r;
      r.id = id;
      Status st = known_answers(id, scratch);
      r.kat_passed = st.ok();
      if (!st) r.detail = st.error().message();
      sel.engines.push_back(r);
    }
  }
  if (pin) {
    for (auto& e : sel.engines)
      if (e.id == *pin && !e.kat_passed) return make_error(crypto_error::kCrypto, e.detail);
    sel.chosen = *pin;
  } else {
    // Three interleaved rounds, best of each: a noisy neighbour hits all alike.
    bool any = false;
    for (int round = 0; round < 3; round++)
      for (auto& e : sel.engines)
        if (e.kat_passed) e.seal_open_mb_s = std::max(e.seal_open_mb_s, aead_self_benchmark(e.id, bench_ms));
    for (auto& e : sel.engines)
      if (e.kat_passed && (!any || e.seal_open_mb_s > sel.engines[size_t(sel.chosen)].seal_open_mb_s)) {
        sel.chosen = e.id;
        any = true;
      }
    if (!any) return make_error(crypto_error::kCrypto, "no AES-256-GCM engine passed its known answers");
  }
  Aead::set_process_engine(sel.chosen);
  return sel;
}

}  // namespace encmig
