#include "cli/status.h"

#include <cstdio>
#include <ctime>

#include "common/json.h"
#include "common/qmp.h"

namespace encmig {

using nlohmann::json;

Result<json> daemon_status(const std::string& control) {
  auto q = QmpClient::connect(control, 5000);
  if (!q) return make_error(q.error().code, "encmigd's control socket " + control + ": " + q.error().text());
  auto m = q->execute("query-migrations");
  if (!m) return m.error();
  auto s = q->execute("query-stats");
  if (!s) return s.error();
  json out{{"migrations", m.value()}, {"stats", s.value()}};
  if (auto t = q->execute("query-transparent")) out["transparent"] = t.value();  // older daemons: absent
  return out;
}

std::string format_status(const json& st) {
  std::string out;
  char line[512];
  const json& ms = st.contains("migrations") && st["migrations"].is_array() ? st["migrations"] : json::array();
  std::snprintf(line, sizeof line, "%-32s %-11s %-11s %-9s %7s %12s %7s %7s  %s\n", "ID", "ROLE", "MODE", "STATE", "STREAMS",
                "BYTES", "RESUMES", "AGE", "CONTEXT");
  out += line;
  for (const auto& m : ms) {
    if (!m.is_object()) continue;
    const size_t streams = m.contains("streams") && m["streams"].is_array() ? m["streams"].size() : 0;
    const double secs = m.contains("seconds") && m["seconds"].is_number() ? m["seconds"].get<double>() : 0;
    std::snprintf(line, sizeof line, "%-32s %-11s %-11s %-9s %7zu %12lld %7lld %6.0fs  %s\n", json_string(m, "id").c_str(),
                  json_string(m, "role").c_str(), json_string(m, "mode", "armed").c_str(), json_string(m, "state").c_str(),
                  streams, (long long)(json_int(m, "bytes-out") + json_int(m, "bytes-in")), (long long)json_int(m, "resumes"),
                  secs, json_string(m, "context").c_str());
    out += line;
  }
  if (ms.empty()) out += "(no migration on this host)\n";
  if (st.contains("transparent") && st["transparent"].is_object() && st["transparent"].value("recent", json()).is_array()) {
    const json& recent = st["transparent"]["recent"];
    if (!recent.empty()) out += "transparent mode, last decisions (newest last):\n";
    for (const auto& d : recent) {
      if (!d.is_object()) continue;
      char t[32] = "?";
      std::time_t when = std::time_t(json_int(d, "time"));
      if (struct tm tmv; localtime_r(&when, &tmv)) std::strftime(t, sizeof t, "%H:%M:%S", &tmv);
      out += std::string("  ") + t + "  " + json_string(d, "domain") + " -> " + json_string(d, "destination") + "  policy " +
             json_string(d, "policy") + ": " + json_string(d, "why") + "\n";
    }
  }
  if (st.contains("stats") && st["stats"].is_object()) {
    const json& t = st["stats"].value("transparent", json());
    if (t.is_object()) {
      out += "transparent mode:";
      for (auto& [k, v] : t.items()) out += " " + k + "=" + v.dump();
      out += "\n";
    } else {
      out += "transparent mode: off\n";
    }
  }
  return out;
}

}  // namespace encmig
