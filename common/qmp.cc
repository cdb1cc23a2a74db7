#include "common/qmp.h"

#include <unistd.h>

#include <cerrno>

#include <sys/socket.h>

#include <cstring>

#include "common/json.h"
#include "crypto/secret.h"

namespace encmig {

std::vector<std::string> split_json_objects(std::string& buf) {
  std::vector<std::string> out;
  int depth = 0;
  bool in_str = false, esc = false;
  size_t start = std::string::npos, consumed = 0;
  for (size_t i = 0; i < buf.size(); i++) {
    char c = buf[i];
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '{') {
      if (depth++ == 0) start = i;
    } else if (c == '}' && depth > 0) {
      if (--depth == 0) {
        out.push_back(buf.substr(start, i + 1 - start));
        consumed = i + 1;
      }
    } else if (depth == 0 && !isspace(static_cast<unsigned char>(c))) {
      out.push_back(std::string(1, c));  // garbage outside an object: reported as a parse error
      consumed = i + 1;
    }
  }
  // Drop what was consumed without leaving a stale copy (requests may carry
  // a key) in the string's spare capacity.
  size_t rest = buf.size() - consumed;
  std::memmove(buf.data(), buf.data() + consumed, rest);
  secure_wipe(buf.data() + rest, consumed);
  buf.resize(rest);
  return out;
}

Result<QmpClient> QmpClient::connect(const std::string& path, int timeout_ms) {
  auto fd = unix_connect(path);
  if (!fd) return fd.error();
  QmpClient c;
  c.fd_ = std::move(fd.value());
  c.path_ = path;
  set_recv_timeout(c.fd_.get(), timeout_ms);
  auto g = c.read_object();
  if (!g) return g.error();
  if (!g->contains("QMP")) return make_error(ErrorCode::kIo, path + ": not a QMP greeting");
  c.greeting_ = g.value();
  auto r = c.execute("qmp_capabilities");
  if (!r) return r.error();
  return c;
}

pid_t QmpClient::peer_pid() const {
  ucred cred{};
  socklen_t len = sizeof cred;
  return getsockopt(fd_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 ? cred.pid : 0;
}

Result<json> QmpClient::read_object() {
  for (;;) {
    auto objs = split_json_objects(buf_);
    if (!objs.empty()) {
      // split_json_objects consumed them all; keep extras for later.
      json first = json::parse(objs[0], nullptr, false);
      for (size_t i = objs.size(); i-- > 1;) buf_.insert(0, objs[i] + "\n");
      if (first.is_discarded()) return make_error(ErrorCode::kIo, path_ + ": bad JSON from monitor");
      return first;
    }
    char tmp[65536];
    ssize_t n = ::read(fd_.get(), tmp, sizeof tmp);
    if (n > 0) {
      buf_.append(tmp, size_t(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_error(ErrorCode::kTimeout, path_ + ": no reply");
    return make_error(ErrorCode::kIo, path_ + ": monitor closed");
  }
}

Result<json> QmpClient::execute(const std::string& cmd, const json& args) {
  json req{{"execute", cmd}};
  if (!args.empty()) req["arguments"] = args;
  std::string s = req.dump() + "\n";
  if (auto st = write_all(fd_.get(), reinterpret_cast<const uint8_t*>(s.data()), s.size()); !st) return st.error();
  secure_wipe(s.data(), s.size());
  return read_reply(cmd);
}

std::vector<Result<json>> QmpClient::execute_all(const std::vector<std::pair<std::string, json>>& cmds) {
  std::string s;
  for (const auto& [cmd, args] : cmds) {
    json req{{"execute", cmd}};
    if (!args.empty()) req["arguments"] = args;
    s += req.dump() + "\n";
  }
  std::vector<Result<json>> out;
  auto st = write_all(fd_.get(), reinterpret_cast<const uint8_t*>(s.data()), s.size());
  secure_wipe(s.data(), s.size());
  for (const auto& c : cmds) out.push_back(st ? read_reply(c.first) : Result<json>(st.error()));
  return out;
}

Result<json> QmpClient::read_reply(const std::string& cmd) {
  for (;;) {
    auto o = read_object();
    if (!o) return o.error();
    if (o->contains("event")) {
      events_.push_back(o.value());
      continue;
    }
    if (o->contains("error"))
      return make_error(ErrorCode::kPeerError, cmd + ": " + json_string(json_object(*o, "error"), "desc", "error"));
    if (o->contains("return")) return (*o)["return"];
  }
}

std::vector<json> QmpClient::take_events() {
  std::vector<json> e;
  e.swap(events_);
  return e;
}

}  // namespace encmig
