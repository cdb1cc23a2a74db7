#include "crypto/aead.h"

#include <gnutls/gnutls.h>

namespace encmig {

Result<Aead> Aead::create(const Secret& key) {
  if (key.size() != kAeadKeySize) return make_error(crypto_error::kInvalidArgument, "AES-256-GCM key must be 32 bytes");
  gnutls_datum_t k{const_cast<uint8_t*>(key.data()), static_cast<unsigned>(key.size())};
  Aead a;
  if (gnutls_aead_cipher_init(&a.h_, GNUTLS_CIPHER_AES_256_GCM, &k) != 0)
    return make_error(crypto_error::kCrypto, "gnutls_aead_cipher_init(AES-256-GCM)");
  return a;
}

Aead& Aead::operator=(Aead&& o) noexcept {
  if (this != &o) {
    if (h_) gnutls_aead_cipher_deinit(h_);
    h_ = o.h_;
    o.h_ = nullptr;
  }
  return *this;
}

Aead::~Aead() {
  if (h_) gnutls_aead_cipher_deinit(h_);
}

Status Aead::seal(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
                  size_t len, uint8_t tag[kAeadTagSize]) {
  giovec_t a{const_cast<uint8_t*>(aad), aad_len};
  giovec_t d{buf, len};
  size_t tag_len = kAeadTagSize;
  if (gnutls_aead_cipher_encryptv2(h_, nonce, kAeadNonceSize, &a, 1, &d, len ? 1 : 0, tag, &tag_len) != 0 ||
      tag_len != kAeadTagSize)
    return make_error(crypto_error::kCrypto, "AES-GCM seal");
  return {};
}

Status Aead::seal_to(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, const uint8_t* src,
                     size_t len, uint8_t* out) {
  size_t out_len = len + kAeadTagSize;
  if (gnutls_aead_cipher_encrypt(h_, nonce, kAeadNonceSize, aad, aad_len, kAeadTagSize, src, len, out, &out_len) != 0 ||
      out_len != len + kAeadTagSize)
    return make_error(crypto_error::kCrypto, "AES-GCM seal");
  return {};
}

Status Aead::open(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
                  size_t len, const uint8_t tag[kAeadTagSize]) {
  giovec_t a{const_cast<uint8_t*>(aad), aad_len};
  giovec_t d{buf, len};
  int rc = gnutls_aead_cipher_decryptv2(h_, nonce, kAeadNonceSize, &a, 1, &d, len ? 1 : 0,
                                        const_cast<uint8_t*>(tag), kAeadTagSize);
  if (rc == 0) return {};
  secure_wipe(buf, len);
  if (rc == GNUTLS_E_DECRYPTION_FAILED) return make_error(crypto_error::kTagMismatch);
  return make_error(crypto_error::kCrypto, "AES-GCM open");
}

}  // namespace encmig
