// Base64 (RFC 4648) for key material on the control socket.
#pragma once
#include <string>
#include <string_view>

#include "crypto/secret.h"

namespace encmig {

// Decodes straight into a Secret; no intermediate copy of the key.
Result<Secret> base64_to_secret(std::string_view in);
std::string base64_encode(const uint8_t* p, size_t n);

}  // namespace encmig
