#include "crypto/aead.h"

#include <atomic>

namespace encmig {
namespace {
std::atomic<AeadEngineId> g_engine{AeadEngineId::kGnutls};
}

void Aead::set_process_engine(AeadEngineId engine) { g_engine.store(engine); }
AeadEngineId Aead::process_engine() { return g_engine.load(); }

Result<Aead> Aead::create(const Secret& key) { return create(key, process_engine()); }

Result<Aead> Aead::create(const Secret& key, AeadEngineId engine) {
  if (key.size() != kAeadKeySize) return make_error(crypto_error::kInvalidArgument, "AES-256-GCM key must be 32 bytes");
  auto impl = make_aead_impl(engine, key);
  if (!impl) return impl.error();
  Aead a;
  a.impl_ = std::move(impl.value());
  a.engine_ = engine;
  return a;
}

Status Aead::seal(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
                  size_t len, uint8_t tag[kAeadTagSize]) {
  return impl_->seal(nonce, aad, aad_len, buf, len, tag);
}

Status Aead::seal_to(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, const uint8_t* src,
                     size_t len, uint8_t* out) {
  return impl_->seal_to(nonce, aad, aad_len, src, len, out);
}

Status Aead::open(const uint8_t nonce[kAeadNonceSize], const uint8_t* aad, size_t aad_len, uint8_t* buf,
                  size_t len, const uint8_t tag[kAeadTagSize]) {
  Status st = impl_->open(nonce, aad, aad_len, buf, len, tag);
  if (!st) secure_wipe(buf, len);  // no unauthenticated plaintext escapes, whatever the engine
  return st;
}

}  // namespace encmig
