#include "daemon/metrics.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "common/json.h"

namespace encmig {

using nlohmann::json;

namespace {
// A label value: backslash, double quote and newline escaped.
std::string label(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\' || c == '"') o += '\\', o += c;
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

struct Writer {
  std::string out;
  void family(const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const std::string& labels, double v) {
    char num[64];
    std::snprintf(num, sizeof num, "%.17g", v);
    out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + num + "\n";
  }
};

bool terminal_name(const std::string& s) { return s == "completed" || s == "failed" || s == "cancelled"; }

double num(const json& j, const char* k) {
  auto it = j.find(k);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}
}  // namespace

std::string prometheus_text(const json& stats, const json& migrations, const json& ended) {
  Writer w;
  w.family("encmig_migrations_armed_total", "counter", "Migrations armed on this host (either role).");
  w.sample("encmig_migrations_armed_total", "", num(stats, "migrations-armed"));
  w.family("encmig_migrations_failed_total", "counter", "Migrations that failed or were cancelled, by error.");
  if (auto f = stats.find("failures"); f != stats.end() && f->is_object())
    for (auto& [code, n] : f->items()) w.sample("encmig_migrations_failed_total", "error=\"" + label(code) + "\"", n.is_number() ? n.get<double>() : 0);
  std::map<std::string, double> open;
  for (auto& m : migrations) {
    if (!m.is_object() || terminal_name(json_string(m, "state"))) continue;
    open[json_string(m, "role") + "\",mode=\"" + json_string(m, "mode", "armed")] += 1;
  }
  w.family("encmig_migrations_open", "gauge", "Migrations armed or active now, by role and mode.");
  for (auto& [k, n] : open) w.sample("encmig_migrations_open", "role=\"" + k + "\"", n);
  w.family("encmig_bytes_total", "counter", "Migration payload bytes relayed, by direction (ended migrations and open ones).");
  double out = num(ended, "bytes-out"), in = num(ended, "bytes-in"), resumes = num(ended, "resumes");
  for (auto& m : migrations) {
    if (!m.is_object()) continue;
    out += num(m, "bytes-out");
    in += num(m, "bytes-in");
    resumes += num(m, "resumes");
  }
  w.sample("encmig_bytes_total", "direction=\"out\"", out);
  w.sample("encmig_bytes_total", "direction=\"in\"", in);
  w.family("encmig_resumes_total", "counter", "Streams resumed on a new connection after an outage.");
  w.sample("encmig_resumes_total", "", resumes);
  w.family("encmig_connections_refused_total", "counter", "Unauthenticated data-port connections refused, by class.");
  if (auto r = stats.find("pre-auth-refused"); r != stats.end() && r->is_object())
    for (auto& [cls, n] : r->items()) w.sample("encmig_connections_refused_total", "class=\"" + label(cls) + "\"", n.is_number() ? n.get<double>() : 0);
  w.family("encmig_local_peers_refused_total", "counter", "QEMU-side connections refused: not the domain's QEMU.");
  w.sample("encmig_local_peers_refused_total", "", num(stats, "local-peers-refused"));
  w.family("encmig_transparent_total", "counter",
           "Transparent mode: intercepted connections, and migrations by decision (encrypted, plain and why, refused).");
  if (auto t = stats.find("transparent"); t != stats.end() && t->is_object())
    for (auto& [k, n] : t->items()) w.sample("encmig_transparent_total", "what=\"" + label(k) + "\"", n.is_number() ? n.get<double>() : 0);
  w.family("encmig_keys_held", "gauge", "Migrations whose key is not wiped yet.");
  w.sample("encmig_keys_held", "", num(stats, "keys-held"));
  return w.out;
}

bool write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return false;
  ::fchmod(fd, 0644);  // node-exporter reads it as another user
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  return ok && ::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace encmig
