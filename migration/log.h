// encmigd's log: one line per event on stderr (journald under systemd),
// prefixed "encmigd: ". Never key bytes.
#pragma once
#include <chrono>
#include <map>
#include <mutex>
#include <string>

namespace encmig {

void log_line(const std::string& line);

// For events an unauthenticated peer can cause at will: at most one line per
// class per interval; the next line that gets out says how many were held back.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(std::chrono::milliseconds interval = std::chrono::seconds(10)) : interval_(interval) {}
  void log(const std::string& cls, const std::string& line);

 private:
  struct Slot {
    std::chrono::steady_clock::time_point last{};
    uint64_t held = 0;
  };
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::map<std::string, Slot> slots_;
};

}  // namespace encmig
