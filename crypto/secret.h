// Secret: the one type in encmig's own code that holds key material.
//
// Move-only. Lives in its own mlock()ed, MADV_DONTDUMP page, wiped on
// destruction. No stream operator, no implicit copies, constant-time equality.
//
// Not every copy of a key is a Secret: GnuTLS keeps the expanded AES key
// schedule inside each cipher handle (crypto/aead.h), in its own heap memory,
// which is neither locked nor excluded from dumps; it clears it when the handle
// is destroyed. encmigd disables core dumps for the whole process for that
// reason.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/result.h"

namespace encmig {

class Secret {
 public:
  static constexpr size_t kMaxSize = 128;

  // A zero-filled secret of `size` bytes (size <= kMaxSize).
  static Result<Secret> create(size_t size);
  // A secret holding fresh random bytes from the key-level RNG.
  static Result<Secret> random(size_t size);
  // Copies `bytes` in. The caller wipes its own copy.
  static Result<Secret> from_bytes(std::span<const uint8_t> bytes);

  Secret() = default;  // empty; size() == 0
  Secret(Secret&& other) noexcept;
  Secret& operator=(Secret&& other) noexcept;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  ~Secret();

  // Explicit, named duplication: the only way to get a second copy.
  Result<Secret> clone() const;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() { return data_; }
  std::span<const uint8_t> bytes() const { return {data_, size_}; }

  // Constant-time in the length of the secrets.
  bool equals(const Secret& other) const;

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Overwrites memory in a way the compiler may not elide.
void secure_wipe(void* p, size_t n);

}  // namespace encmig
