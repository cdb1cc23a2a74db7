// AES-256-GCM seal/open in place, through the engine the process chose at
// start (crypto/aead_select.h: known answers, then the fastest). No
// allocation per call.
//
// There is no public way to seal or open: the nonce must never be chosen by a
// caller. The record layer's TrafficKeys (migration/key_schedule.h) is the
// only user, and it derives each nonce from the record counter. Known-answer
// tests reach the raw operations through AeadTestAccess.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "crypto/aead_engine.h"
#include "crypto/result.h"
#include "crypto/secret.h"

namespace encmig {

constexpr size_t kAeadKeySize = 32;
constexpr size_t kAeadNonceSize = 12;
constexpr size_t kAeadTagSize = 16;

class TrafficKeys;
struct AeadTestAccess;
struct AeadSelfTest;

class Aead {
 public:
  // key must be kAeadKeySize bytes. The engine keeps the expanded key
  // schedule inside its context (not in a Secret; see crypto/secret.h) and
  // wipes it when the Aead goes. The first form uses the process's engine.
  static Result<Aead> create(const Secret& key);
  static Result<Aead> create(const Secret& key, AeadEngineId engine);

  // The engine every create(key) uses from now on: set once at start, after
  // the engine passed its known answers (select_aead_engine does both).
  static void set_process_engine(AeadEngineId engine);
  static AeadEngineId process_engine();

  Aead() = default;
  Aead(Aead&&) noexcept = default;
  Aead& operator=(Aead&&) noexcept = default;
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  bool valid() const { return impl_ != nullptr; }
  AeadEngineId engine() const { return engine_; }

 private:
  friend class TrafficKeys;
  friend struct AeadTestAccess;
  friend struct AeadSelfTest;  // crypto/aead_select.cc: known answers at start
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

  std::unique_ptr<AeadImpl> impl_;
  AeadEngineId engine_ = AeadEngineId::kGnutls;
};

}  // namespace encmig
