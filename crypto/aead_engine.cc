#include "crypto/aead_engine.h"

namespace encmig {

Result<std::unique_ptr<AeadImpl>> make_gnutls_aead(const Secret& key);
Result<std::unique_ptr<AeadImpl>> make_gcrypt_aead(const Secret& key);
Result<std::unique_ptr<AeadImpl>> make_openssl_aead(const Secret& key);

const char* aead_engine_name(AeadEngineId id) {
  switch (id) {
    case AeadEngineId::kGnutls: return "gnutls";
    case AeadEngineId::kGcrypt: return "libgcrypt";
    case AeadEngineId::kOpenssl: return "openssl";
  }
  return "?";
}

std::optional<AeadEngineId> aead_engine_from_name(std::string_view name) {
  for (AeadEngineId id : kAeadEngines)
    if (name == aead_engine_name(id)) return id;
  return std::nullopt;
}

Result<std::unique_ptr<AeadImpl>> make_aead_impl(AeadEngineId id, const Secret& key) {
  switch (id) {
    case AeadEngineId::kGnutls: return make_gnutls_aead(key);
    case AeadEngineId::kGcrypt: return make_gcrypt_aead(key);
    case AeadEngineId::kOpenssl: return make_openssl_aead(key);
  }
  return make_error(crypto_error::kInvalidArgument, "unknown AEAD engine");
}

}  // namespace encmig
