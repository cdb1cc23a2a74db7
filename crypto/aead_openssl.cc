// AES-256-GCM through OpenSSL 3's EVP interface (the default provider's
// AES-NI/VAES code). One context per direction, keyed once; each record only
// sets its nonce.
#include <openssl/evp.h>

#include <climits>

#include "crypto/aead_engine.h"

namespace encmig {
namespace {

// Fetched once: the implicit fetch of EVP_aes_256_gcm() per init is slow.
EVP_CIPHER* gcm_cipher() {
  static EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return c;
}

class OpensslAead final : public AeadImpl {
 public:
  OpensslAead(EVP_CIPHER_CTX* enc, EVP_CIPHER_CTX* dec) : enc_(enc), dec_(dec) {}
  ~OpensslAead() override {  // EVP_CIPHER_CTX_free cleanses the key schedule
    EVP_CIPHER_CTX_free(enc_);
    EVP_CIPHER_CTX_free(dec_);
  }

  Status seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
              uint8_t* tag) override {
    return seal_into(nonce, aad, aad_len, buf, len, buf, tag);
  }
  Status seal_to(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* src, size_t len,
                 uint8_t* out) override {
    return seal_into(nonce, aad, aad_len, src, len, out, out + len);
  }
  Status open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
              const uint8_t* tag) override {
    int n = 0;
    if (len > INT_MAX || aad_len > INT_MAX || EVP_DecryptInit_ex2(dec_, nullptr, nullptr, nonce, nullptr) != 1 ||
        (aad_len && EVP_DecryptUpdate(dec_, nullptr, &n, aad, int(aad_len)) != 1) ||
        (len && EVP_DecryptUpdate(dec_, buf, &n, buf, int(len)) != 1) ||
        EVP_CIPHER_CTX_ctrl(dec_, EVP_CTRL_GCM_SET_TAG, 16, const_cast<uint8_t*>(tag)) != 1)
      return make_error(crypto_error::kCrypto, "AES-GCM open (openssl)");
    uint8_t none[16];
    if (EVP_DecryptFinal_ex(dec_, none, &n) != 1) return make_error(crypto_error::kTagMismatch);
    return {};
  }

 private:
  Status seal_into(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* src, size_t len,
                   uint8_t* out, uint8_t* tag) {
    int n = 0;
    uint8_t none[16];
    if (len > INT_MAX || aad_len > INT_MAX || EVP_EncryptInit_ex2(enc_, nullptr, nullptr, nonce, nullptr) != 1 ||
        (aad_len && EVP_EncryptUpdate(enc_, nullptr, &n, aad, int(aad_len)) != 1) ||
        (len && EVP_EncryptUpdate(enc_, out, &n, src, int(len)) != 1) || EVP_EncryptFinal_ex(enc_, none, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(enc_, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
      return make_error(crypto_error::kCrypto, "AES-GCM seal (openssl)");
    return {};
  }

  EVP_CIPHER_CTX* enc_;
  EVP_CIPHER_CTX* dec_;
};

}  // namespace

Result<std::unique_ptr<AeadImpl>> make_openssl_aead(const Secret& key) {
  EVP_CIPHER* c = gcm_cipher();
  if (!c) return make_error(crypto_error::kCrypto, "openssl: AES-256-GCM is not available");
  EVP_CIPHER_CTX* enc = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* dec = EVP_CIPHER_CTX_new();
  if (!enc || !dec || EVP_EncryptInit_ex2(enc, c, key.data(), nullptr, nullptr) != 1 ||
      EVP_DecryptInit_ex2(dec, c, key.data(), nullptr, nullptr) != 1) {
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    return make_error(crypto_error::kCrypto, "openssl: AES-256-GCM init");
  }
  return std::unique_ptr<AeadImpl>(new OpensslAead(enc, dec));
}

}  // namespace encmig
