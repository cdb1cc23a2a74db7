#include "cli/summary.h"

#include <cstdio>
#include <string>

namespace encmig {

using nlohmann::json;

namespace {
std::string str(const json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}
}  // namespace

void print_summary(const json& s) {
  std::string res = s.value("result", "");
  if (res != "completed") {
    std::fprintf(stderr, "encmig: migration %s: %s\n", res == "refused" ? "refused" : "failed",
                 s.value("error", std::string("unknown error")).c_str());
    if (s.contains("source-state"))
      std::fprintf(stderr, "encmig: the VM is %s on the source\n", str(s, "source-state").c_str());
    return;
  }
  std::printf("Migration completed %s\n", s.value("encrypted", false) ? "ENCRYPTED (AES-256-GCM)" : "UNENCRYPTED");
  std::printf("  why:         %s\n", s.value("reason", std::string()).c_str());
  std::printf("  total time:  %lld ms (setup %lld ms)\n", s.value("total-time-ms", 0LL), s.value("setup-time-ms", 0LL));
  std::printf("  downtime:    %lld ms\n", s.value("downtime-ms", 0LL));
  std::printf("  transferred: %.1f MiB at %.1f MB/s\n", s.value("bytes", 0.0) / 1048576.0,
              s.value("throughput-mbytes-per-s", 0.0));
  for (const char* k : {"source-encmigd"}) {
    if (!s.contains(k)) continue;
    const json& d = s[k].contains("status") ? s[k]["status"] : s[k];
    if (d.contains("streams")) std::printf("  streams:     %zu through encmigd\n", d["streams"].size());
  }
  if (s.contains("destination-state"))
    std::printf("  destination: %s\n", str(s, "destination-state").c_str());
}

int summary_exit_code(const json& s) {
  std::string res = s.value("result", "");
  return res == "completed" ? 0 : res == "refused" ? 3 : 1;
}

void print_placement(const json& r) {
  if (r.contains("error")) {
    std::fprintf(stderr, "encmig: %s\n", str(r, "error").c_str());
    return;
  }
  std::printf("placing %s (policy %s):\n", str(r, "domain").c_str(), str(r, "mode").c_str());
  for (auto& c : r["candidates"])
    std::printf("  %-4s %-40s %s\n", c.value("capable", false) ? "ok" : "no", str(c, "uri").c_str(), str(c, "reason").c_str());
  if (r.contains("chosen")) std::printf("chosen: %s\n", str(r, "chosen").c_str());
  else std::printf("no capable destination\n");
}

}  // namespace encmig
