#include "migration/log.h"

#include <cstdio>

namespace encmig {

void log_line(const std::string& line) {
  std::fprintf(stderr, "encmigd: %s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace encmig
