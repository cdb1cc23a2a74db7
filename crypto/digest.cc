#include "crypto/digest.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

namespace encmig {

Result<Sha256> Sha256::create() {
  gnutls_hash_hd_t h = nullptr;
  if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) != 0) return make_error(crypto_error::kCrypto, "sha256 init");
  Sha256 s;
  s.h_ = h;
  return s;
}

Sha256& Sha256::operator=(Sha256&& o) noexcept {
  if (this != &o) {
    if (h_) gnutls_hash_deinit(static_cast<gnutls_hash_hd_t>(h_), nullptr);
    h_ = o.h_;
    o.h_ = nullptr;
  }
  return *this;
}

Sha256::~Sha256() {
  if (h_) gnutls_hash_deinit(static_cast<gnutls_hash_hd_t>(h_), nullptr);
}

void Sha256::update(std::span<const uint8_t> data) {
  // gnutls_hash fails only for a handle it could not make, which create() refused.
  (void)gnutls_hash(static_cast<gnutls_hash_hd_t>(h_), data.data(), data.size());
}

void Sha256::finish(uint8_t out[kSha256Size]) { gnutls_hash_output(static_cast<gnutls_hash_hd_t>(h_), out); }

}  // namespace encmig
