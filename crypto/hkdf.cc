#include "crypto/hkdf.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

namespace encmig {

namespace {
gnutls_datum_t datum(std::span<const uint8_t> s) {
  return gnutls_datum_t{const_cast<uint8_t*>(s.data()), static_cast<unsigned>(s.size())};
}
}  // namespace

Result<Secret> hkdf_extract(std::span<const uint8_t> salt, const Secret& ikm) {
  auto prk = Secret::create(kSha256Size);
  if (!prk) return prk;
  gnutls_datum_t k = datum(ikm.bytes());
  gnutls_datum_t s = datum(salt);
  if (gnutls_hkdf_extract(GNUTLS_MAC_SHA256, &k, &s, prk->mutable_data()) != 0)
    return make_error(crypto_error::kCrypto, "hkdf extract");
  return prk;
}

Status hkdf_expand_to(const Secret& prk, std::span<const uint8_t> info, uint8_t* out, size_t length) {
  gnutls_datum_t k = datum(prk.bytes());
  gnutls_datum_t i = datum(info);
  if (gnutls_hkdf_expand(GNUTLS_MAC_SHA256, &k, &i, out, length) != 0)
    return make_error(crypto_error::kCrypto, "hkdf expand");
  return {};
}

Result<Secret> hkdf_expand(const Secret& prk, std::span<const uint8_t> info, size_t length) {
  auto okm = Secret::create(length);
  if (!okm) return okm;
  auto st = hkdf_expand_to(prk, info, okm->mutable_data(), length);
  if (!st) return st.error();
  return okm;
}

Status sha256(std::span<const uint8_t> data, uint8_t out[kSha256Size]) {
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, data.data(), data.size(), out) != 0)
    return make_error(crypto_error::kCrypto, "sha256");
  return {};
}

Status hmac_sha256(const Secret& key, std::span<const uint8_t> data, uint8_t out[kSha256Size]) {
  if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, key.data(), key.size(), data.data(), data.size(), out) != 0)
    return make_error(crypto_error::kCrypto, "hmac-sha256");
  return {};
}

}  // namespace encmig
