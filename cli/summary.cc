#include "cli/summary.h"

#include "common/json.h"

#include <cstdio>
#include <string>

namespace encmig {

using nlohmann::json;

namespace {
std::string str(const json& j, const char* key, const std::string& fallback = "") { return json_string(j, key, fallback); }
}  // namespace

void print_summary(const json& s) {
  std::string res = str(s, "result");
  if (res != "completed") {
    std::fprintf(stderr, "encmig: migration %s: %s\n", res == "refused" ? "refused" : "failed",
                 str(s, "error", "unknown error").c_str());
    if (s.contains("source-state"))
      std::fprintf(stderr, "encmig: the VM is %s on the source\n", str(s, "source-state").c_str());
    return;
  }
  // Which library sealed the records on each side (the wire is the same).
  auto engine = [&](const char* side) {
    const json& dm = json_object(s, side);
    return str(dm.contains("status") ? json_object(dm, "status") : dm, "aead-engine");
  };
  std::string se = engine("source-encmigd"), de = engine("destination-encmigd");
  std::string how = se.empty() && de.empty() ? ""
                    : se == de || de.empty() ? ", " + se
                    : se.empty()             ? ", " + de
                                             : ", " + se + " -> " + de;
  std::printf("Migration completed %s\n",
              json_bool(s, "encrypted") ? ("ENCRYPTED (AES-256-GCM" + how + ")").c_str() : "UNENCRYPTED");
  std::printf("  why:         %s\n", str(s, "reason").c_str());
  std::printf("  total time:  %lld ms (setup %lld ms)\n", (long long)json_int(s, "total-time-ms"),
              (long long)json_int(s, "setup-time-ms"));
  std::printf("  downtime:    %lld ms\n", (long long)json_int(s, "downtime-ms"));
  std::printf("  transferred: %.1f MiB at %.1f MB/s\n", json_number(s, "bytes") / 1048576.0,
              json_number(s, "throughput-mbytes-per-s"));
  const json& daemon = json_object(s, "source-encmigd");
  const json& d = daemon.contains("status") ? json_object(daemon, "status") : daemon;
  if (auto it = d.find("streams"); it != d.end() && it->is_array())
    std::printf("  streams:     %zu through encmigd\n", it->size());
  if (int64_t r = json_int(d, "resumes"); r > 0)
    std::printf("  outages:     %lld stream resume%s after broken connections, %.1f MiB resent\n", (long long)r,
                r == 1 ? "" : "s", json_number(d, "resent-bytes") / 1048576.0);
  if (s.contains("destination-state"))
    std::printf("  destination: %s\n", str(s, "destination-state").c_str());
}

int summary_exit_code(const json& s) {
  std::string res = str(s, "result");
  return res == "completed" ? 0 : res == "refused" ? 3 : 1;
}

void print_placement(const json& r) {
  if (r.contains("error")) {
    std::fprintf(stderr, "encmig: %s\n", str(r, "error").c_str());
    return;
  }
  std::printf("placing %s (policy %s):\n", str(r, "domain").c_str(), str(r, "mode").c_str());
  const json empty = json::array();
  auto cands = r.find("candidates");
  for (auto& c : (cands != r.end() && cands->is_array()) ? *cands : empty)
    std::printf("  %-4s %-40s %s\n", json_bool(c, "capable") ? "ok" : "no", str(c, "uri").c_str(), str(c, "reason").c_str());
  if (r.contains("chosen")) std::printf("chosen: %s\n", str(r, "chosen").c_str());
  else std::printf("no capable destination\n");
}

}  // namespace encmig
