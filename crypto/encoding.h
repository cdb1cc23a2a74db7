// Text encodings of keys, nonces and ids: the one hex codec and base64 (RFC
// 4648) for key material on the control socket.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "crypto/secret.h"

namespace encmig {

// Lower-case hex.
std::string hex_encode(std::span<const uint8_t> bytes);
// Exactly 2 * out.size() lower-case hex digits, nothing else: no upper case,
// no whitespace, no sign, no prefix. On failure `out` is zeroed.
Status hex_decode(std::string_view in, std::span<uint8_t> out);

// Decodes straight into a Secret; no intermediate copy of the key.
Result<Secret> base64_to_secret(std::string_view in);
std::string base64_encode(const uint8_t* p, size_t n);

}  // namespace encmig
