#include "crypto/random.h"

#include <gnutls/crypto.h>

namespace encmig {

Status random_key_bytes(uint8_t* out, size_t n) {
  if (gnutls_rnd(GNUTLS_RND_KEY, out, n) != 0) return make_error(crypto_error::kCrypto, "gnutls_rnd(KEY) failed");
  return {};
}

Status random_nonce_bytes(uint8_t* out, size_t n) {
  if (gnutls_rnd(GNUTLS_RND_NONCE, out, n) != 0) return make_error(crypto_error::kCrypto, "gnutls_rnd(NONCE) failed");
  return {};
}

}  // namespace encmig
