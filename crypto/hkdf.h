// HKDF-SHA256 (RFC 5869), HMAC-SHA256 and SHA-256, through GnuTLS.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/result.h"
#include "crypto/secret.h"

namespace encmig {

constexpr size_t kSha256Size = 32;

// PRK = HMAC-SHA256(salt, ikm).
Result<Secret> hkdf_extract(std::span<const uint8_t> salt, const Secret& ikm);
// OKM = HKDF-Expand(prk, info, length), length <= Secret::kMaxSize.
Result<Secret> hkdf_expand(const Secret& prk, std::span<const uint8_t> info, size_t length);
// Into a caller buffer, for non-secret outputs such as test vectors and
// key-confirmation values (which are public once sent).
Status hkdf_expand_to(const Secret& prk, std::span<const uint8_t> info, uint8_t* out, size_t length);

Status sha256(std::span<const uint8_t> data, uint8_t out[kSha256Size]);
// HMAC-SHA256 (RFC 2104).
Status hmac_sha256(const Secret& key, std::span<const uint8_t> data, uint8_t out[kSha256Size]);

}  // namespace encmig
