// AES-256-GCM seal/open in place through GnuTLS. No allocation per call.
//
// There is no public way to seal or open: the nonce must never be chosen by a
// caller. The record layer's TrafficKeys (migration/key_schedule.h) is the
// only user, and it derives each nonce from the record counter. Known-answer
// tests reach the raw operations through AeadTestAccess.
#pragma once
#include <gnutls/crypto.h>

#include <cstddef>
#include <cstdint>

#include "crypto/result.h"
#include "crypto/secret.h"

namespace encmig {

constexpr size_t kAeadKeySize = 32;
constexpr size_t kAeadNonceSize = 12;
constexpr size_t kAeadTagSize = 16;

class TrafficKeys;
struct AeadTestAccess;

class Aead {
 public:
  // key must be kAeadKeySize bytes. GnuTLS keeps the expanded key schedule
  // inside the handle (not in a Secret; see crypto/secret.h).
  static Result<Aead> create(const Secret& key);

  Aead() = default;
  Aead(Aead&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
  Aead& operator=(Aead&& o) noexcept;
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;
  ~Aead();

  bool valid() const { return h_ != nullptr; }

 private:
  friend class TrafficKeys;
  friend struct AeadTestAccess;
  // Encrypts buf[0..len) in place and writes the tag.
  Status seal(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
              size_t len, uint8_t tag[kAeadTagSize]);
  // Encrypts src[0..len) into out[0..len) and writes the tag at out + len.
  Status seal_to(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, const uint8_t* src, size_t len,
                 uint8_t* out);
  // Decrypts buf[0..len) in place after checking the tag. On failure the
  // buffer is wiped, so no unauthenticated plaintext can escape; a tag that
  // does not verify is crypto_error::kTagMismatch.
  Status open(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
              size_t len, const uint8_t tag[kAeadTagSize]);

  gnutls_aead_cipher_hd_t h_ = nullptr;
};

}  // namespace encmig
