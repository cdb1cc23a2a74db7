// Incremental SHA-256, through GnuTLS: the running summary of a stream's DATA
// tags that its FIN carries (docs/protocol.md, section 6).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/hkdf.h"
#include "crypto/result.h"

namespace encmig {

class Sha256 {
 public:
  static Result<Sha256> create();
  Sha256() = default;
  Sha256(Sha256&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
  Sha256& operator=(Sha256&& o) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  ~Sha256();

  void update(std::span<const uint8_t> data);
  // The digest of everything so far; the hash then starts over.
  void finish(uint8_t out[kSha256Size]);
  bool valid() const { return h_ != nullptr; }

 private:
  void* h_ = nullptr;  // gnutls_hash_hd_t
};

}  // namespace encmig
