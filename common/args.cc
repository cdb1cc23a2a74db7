#include "common/args.h"

#include <cerrno>
#include <cstdlib>

namespace encmig {

Result<int64_t> parse_integer(const std::string& text, int64_t min, int64_t max) {
  const std::string range = " (expected an integer from " + std::to_string(min) + " to " + std::to_string(max) + ")";
  if (text.empty() || text.find_first_not_of("-0123456789") != std::string::npos)
    return make_error(ErrorCode::kInvalidArgument, "'" + text + "' is not a number" + range);
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < min || v > max)
    return make_error(ErrorCode::kInvalidArgument, "'" + text + "' is out of range" + range);
  return int64_t(v);
}

}  // namespace encmig
