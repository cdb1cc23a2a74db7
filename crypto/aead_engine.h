// The AES-256-GCM engines: one keyed context of one library behind one
// interface. Debian 12 ships three FIPS-capable implementations that differ in
// speed by CPU (VAES, VPCLMULQDQ, AVX-512); all produce the same bytes, so the
// wire never says which one a daemon uses. crypto/aead_select.h proves each
// with known answers and picks the fastest; crypto/aead.h is the only user.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "crypto/result.h"
#include "crypto/secret.h"

namespace encmig {

enum class AeadEngineId : uint8_t { kGnutls, kGcrypt, kOpenssl };
inline constexpr AeadEngineId kAeadEngines[] = {AeadEngineId::kGnutls, AeadEngineId::kGcrypt, AeadEngineId::kOpenssl};

// "gnutls", "libgcrypt", "openssl": the names of --aead-engine and the reports.
const char* aead_engine_name(AeadEngineId id);
std::optional<AeadEngineId> aead_engine_from_name(std::string_view name);

// One key, one library. Nonces are 96 bits and tags 128 bits; the caller
// (Aead) checks sizes and wipes a buffer whose tag did not verify.
class AeadImpl {
 public:
  virtual ~AeadImpl() = default;
  virtual Status seal(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
                      uint8_t* tag) = 0;
  virtual Status seal_to(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, const uint8_t* src, size_t len,
                         uint8_t* out) = 0;
  // A tag that does not verify is crypto_error::kTagMismatch.
  virtual Status open(const uint8_t* nonce, const uint8_t* aad, size_t aad_len, uint8_t* buf, size_t len,
                      const uint8_t* tag) = 0;
};

// key is 32 bytes (checked by Aead::create). Each library keeps its expanded
// key schedule in its own context and wipes it when the context is freed.
Result<std::unique_ptr<AeadImpl>> make_aead_impl(AeadEngineId id, const Secret& key);

}  // namespace encmig
