// Random bytes from GnuTLS's generator.
#pragma once
#include <cstddef>
#include <cstdint>

#include "crypto/result.h"

namespace encmig {

// Key-level randomness (GNUTLS_RND_KEY): keys, nonces, ids.
Status random_key_bytes(uint8_t* out, size_t n);
// Nonce-level randomness (GNUTLS_RND_NONCE): handshake randoms.
Status random_nonce_bytes(uint8_t* out, size_t n);

}  // namespace encmig
