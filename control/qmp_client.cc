#include "control/qmp_client.h"

#include <unistd.h>

#include <cerrno>

#include "control/qmp_server.h"
#include "migration/handshake.h"

namespace encmig {

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
  for (;;) {
    auto o = read_object();
    if (!o) return o.error();
    if (o->contains("event")) {
      events_.push_back(o.value());
      continue;
    }
    if (o->contains("error"))
      return make_error(ErrorCode::kPeerError, cmd + ": " + (*o)["error"].value("desc", std::string("error")));
    if (o->contains("return")) return (*o)["return"];
  }
}

std::vector<json> QmpClient::take_events() {
  std::vector<json> e;
  e.swap(events_);
  return e;
}

Result<wire::ProbeReply> probe_daemon(const HostPort& hp, int timeout_ms) {
  auto fd = tcp_connect(hp, SocketOptions{}, timeout_ms);
  if (!fd) return fd.error();
  set_recv_timeout(fd->get(), timeout_ms);
  wire::Hello h;
  h.kind = wire::Kind::kProbe;
  uint8_t raw[wire::kHelloSize];
  wire::encode_hello(h, raw);
  if (auto st = write_all(fd->get(), raw, sizeof raw); !st) return st.error();
  uint8_t reply[wire::kProbeReplySize];
  if (auto st = read_exact(fd->get(), reply, sizeof reply); !st) return st.error();
  return wire::decode_probe_reply(reply);
}

}  // namespace encmig
