// AES-256-GCM through libgcrypt (VAES/VPCLMULQDQ counter mode where the CPU
// has it).
#include <gcrypt.h>

#include <mutex>

#include "crypto/aead_engine.h"

namespace encmig {
namespace {

// libgcrypt must be initialised once per process before use. encmigd keeps
// its own secrets in Secret (mlocked), so libgcrypt's secure heap is not used.
bool gcrypt_ready() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    if (!gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) {
      if (!gcry_check_version(GCRYPT_VERSION)) return;
      gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
      gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
    }
    ok = true;
  });
  return ok;
}

class GcryptAead final : public AeadImpl {
 public:
  explicit GcryptAead(gcry_cipher_hd_t h) : h_(h) {}
  ~GcryptAead() override { gcry_cipher_close(h_); }  // wipes the context

  Status seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
              uint8_t* tag) override {
    if (gcry_cipher_setiv(h_, nonce, 12) || (aad_len && gcry_cipher_authenticate(h_, aad, aad_len)) ||
        gcry_cipher_encrypt(h_, buf, len, nullptr, 0) || gcry_cipher_gettag(h_, tag, 16))
      return make_error(crypto_error::kCrypto, "AES-GCM seal (libgcrypt)");
    return {};
  }
  Status seal_to(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* src, size_t len,
                 uint8_t* out) override {
    if (gcry_cipher_setiv(h_, nonce, 12) || (aad_len && gcry_cipher_authenticate(h_, aad, aad_len)) ||
        gcry_cipher_encrypt(h_, out, len, src, len) || gcry_cipher_gettag(h_, out + len, 16))
      return make_error(crypto_error::kCrypto, "AES-GCM seal (libgcrypt)");
    return {};
  }
  Status open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
              const uint8_t* tag) override {
    if (gcry_cipher_setiv(h_, nonce, 12) || (aad_len && gcry_cipher_authenticate(h_, aad, aad_len)) ||
        gcry_cipher_decrypt(h_, buf, len, nullptr, 0))
      return make_error(crypto_error::kCrypto, "AES-GCM open (libgcrypt)");
    gcry_error_t e = gcry_cipher_checktag(h_, tag, 16);  // constant time
    if (e == 0) return {};
    if (gcry_err_code(e) == GPG_ERR_CHECKSUM) return make_error(crypto_error::kTagMismatch);
    return make_error(crypto_error::kCrypto, "AES-GCM open (libgcrypt)");
  }

 private:
  gcry_cipher_hd_t h_;
};

}  // namespace

Result<std::unique_ptr<AeadImpl>> make_gcrypt_aead(const Secret& key) {
  if (!gcrypt_ready()) return make_error(crypto_error::kCrypto, "libgcrypt: version check failed");
  gcry_cipher_hd_t h = nullptr;
  if (gcry_cipher_open(&h, GCRY_CIPHER_AES256, GCRY_CIPHER_MODE_GCM, 0))
    return make_error(crypto_error::kCrypto, "gcry_cipher_open(AES-256-GCM)");
  if (gcry_cipher_setkey(h, key.data(), key.size())) {
    gcry_cipher_close(h);
    return make_error(crypto_error::kCrypto, "gcry_cipher_setkey(AES-256-GCM)");
  }
  return std::unique_ptr<AeadImpl>(new GcryptAead(h));
}

}  // namespace encmig
