// Command-line values, checked without exceptions.
#pragma once
#include <cstdint>
#include <string>

#include "migration/wire.h"  // ErrorCode

namespace encmig {

// A decimal integer in [min, max], the whole string and nothing else.
Result<int64_t> parse_integer(const std::string& text, int64_t min, int64_t max);

}  // namespace encmig
