// AES-256-GCM through GnuTLS (nettle, with GnuTLS's own AES-NI/PCLMUL code).
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "crypto/aead_engine.h"

namespace encmig {
namespace {

class GnutlsAead final : public AeadImpl {
 public:
  explicit GnutlsAead(gnutls_aead_cipher_hd_t h) : h_(h) {}
  ~GnutlsAead() override { gnutls_aead_cipher_deinit(h_); }

  Status seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
              uint8_t* tag) override {
    giovec_t a{const_cast<uint8_t*>(aad), aad_len};
    giovec_t d{buf, len};
    size_t tag_len = 16;
    if (gnutls_aead_cipher_encryptv2(h_, nonce, 12, &a, 1, &d, len ? 1 : 0, tag, &tag_len) != 0 || tag_len != 16)
      return make_error(crypto_error::kCrypto, "AES-GCM seal (gnutls)");
    return {};
  }
  Status seal_to(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* src, size_t len,
                 uint8_t* out) override {
    size_t out_len = len + 16;
    if (gnutls_aead_cipher_encrypt(h_, nonce, 12, aad, aad_len, 16, src, len, out, &out_len) != 0 ||
        out_len != len + 16)
      return make_error(crypto_error::kCrypto, "AES-GCM seal (gnutls)");
    return {};
  }
  Status open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
              const uint8_t* tag) override {
    giovec_t a{const_cast<uint8_t*>(aad), aad_len};
    giovec_t d{buf, len};
    int rc = gnutls_aead_cipher_decryptv2(h_, nonce, 12, &a, 1, &d, len ? 1 : 0, const_cast<uint8_t*>(tag), 16);
    if (rc == 0) return {};
    if (rc == GNUTLS_E_DECRYPTION_FAILED) return make_error(crypto_error::kTagMismatch);
    return make_error(crypto_error::kCrypto, "AES-GCM open (gnutls)");
  }

 private:
  gnutls_aead_cipher_hd_t h_;
};

}  // namespace

Result<std::unique_ptr<AeadImpl>> make_gnutls_aead(const Secret& key) {
  gnutls_datum_t k{const_cast<uint8_t*>(key.data()), static_cast<unsigned>(key.size())};
  gnutls_aead_cipher_hd_t h = nullptr;
  if (gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &k) != 0)
    return make_error(crypto_error::kCrypto, "gnutls_aead_cipher_init(AES-256-GCM)");
  return std::unique_ptr<AeadImpl>(new GnutlsAead(h));
}

}  // namespace encmig
