#include "migration/log.h"

#include <cstdio>

namespace encmig {

void log_line(const std::string& line) {
  std::fprintf(stderr, "encmigd: %s\n", line.c_str());
  std::fflush(stderr);
}

void RateLimitedLog::log(const std::string& cls, const std::string& line) {
  uint64_t held = 0;
  {
    std::lock_guard<std::mutex> g(mu_);
    Slot& s = slots_[cls];
    auto now = std::chrono::steady_clock::now();
    if (s.last != std::chrono::steady_clock::time_point{} && now - s.last < interval_) {
      s.held++;
      return;
    }
    s.last = now;
    held = s.held;
    s.held = 0;
  }
  log_line(held ? line + " (" + std::to_string(held) + " more like it not logged)" : line);
}

}  // namespace encmig
