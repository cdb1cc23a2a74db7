// AES-256-GCM seal/open in place through GnuTLS. No allocation per call.
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

class Aead {
 public:
  // key must be kAeadKeySize bytes.
  static Result<Aead> create(const Secret& key);

  Aead() = default;
  Aead(Aead&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
  Aead& operator=(Aead&& o) noexcept;
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;
  ~Aead();

  bool valid() const { return h_ != nullptr; }

  // Encrypts buf[0..len) in place and writes the tag.
  Status seal(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
              size_t len, uint8_t tag[kAeadTagSize]);
  // Decrypts buf[0..len) in place after checking the tag. On failure the
  // buffer is wiped, so no unauthenticated plaintext can escape.
  Status open(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
              size_t len, const uint8_t tag[kAeadTagSize]);

 private:
  gnutls_aead_cipher_hd_t h_ = nullptr;
};

}  // namespace encmig
