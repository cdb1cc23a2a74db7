// Constant-time comparison.
#pragma once
#include <cstddef>
#include <cstdint>

namespace encmig {

// True when a[0..n) == b[0..n). Time depends on n only.
inline bool ct_equal(const uint8_t* a, const uint8_t* b, size_t n) {
  volatile uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc = acc | (a[i] ^ b[i]);
  return acc == 0;
}

}  // namespace encmig
