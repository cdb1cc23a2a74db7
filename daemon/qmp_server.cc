#include "daemon/qmp_server.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

#include "common/qmp.h"
#include "crypto/secret.h"

namespace encmig {

Result<std::unique_ptr<QmpServer>> QmpServer::create(const std::string& path, json version, Handler handler) {
  auto fd = unix_listen(path, 0600);
  if (!fd) return fd.error();
  std::unique_ptr<QmpServer> s(new QmpServer());
  s->listen_ = std::move(fd.value());
  s->wake_ = Fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  s->version_ = std::move(version);
  s->handler_ = std::move(handler);
  return s;
}

void QmpServer::stop() {
  std::lock_guard<std::mutex> g(mu_);
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void QmpServer::emit(const std::string& name, const json& data) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  json e{{"event", name}, {"data", data}, {"timestamp", {{"seconds", tv.tv_sec}, {"microseconds", tv.tv_usec}}}};
  std::lock_guard<std::mutex> g(mu_);
  pending_events_.push_back(e.dump() + "\r\n");
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void QmpServer::send(Client& c, const json& j) {
  std::string s = j.dump() + "\r\n";
  (void)write_all(c.fd.get(), reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

void QmpServer::handle(Client& c, std::string& text) {
  auto err = [&](const std::string& cls, const std::string& desc, const json& id) {
    json e{{"error", {{"class", cls}, {"desc", desc}}}};
    if (!id.is_null()) e["id"] = id;
    send(c, e);
  };
  json req = json::parse(text, nullptr, false);
  if (req.is_discarded() || !req.is_object()) return err("GenericError", "JSON parse error", nullptr);
  json id = req.contains("id") ? req["id"] : json();
  if (!req.contains("execute") || !req["execute"].is_string())
    return err("GenericError", "QMP input must be an object with 'execute'", id);
  std::string cmd = req["execute"];
  json args = req.contains("arguments") ? req["arguments"] : json::object();
  if (!args.is_object()) return err("GenericError", "'arguments' must be an object", id);
  if (cmd == "qmp_capabilities") {
    if (c.negotiated) return err("CommandNotFound", "Capabilities negotiation is already complete, command ignored", id);
    c.negotiated = true;
    json r{{"return", json::object()}};
    if (!id.is_null()) r["id"] = id;
    return send(c, r);
  }
  if (!c.negotiated)
    return err("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id);
  auto res = handler_(cmd, args);
  if (!res.ok()) {
    bool unknown = res.error().code == ErrorCode::kCommandNotFound;
    return err(unknown ? "CommandNotFound" : "GenericError", res.error().message(), id);
  }
  json r{{"return", res.value()}};
  if (!id.is_null()) r["id"] = id;
  send(c, r);
}

void QmpServer::run() {
  json greeting{{"QMP", {{"version", version_}, {"capabilities", json::array()}}}};
  for (;;) {
    std::vector<pollfd> pfds;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (stop_) return;
      pfds.push_back({listen_.get(), POLLIN, 0});
      pfds.push_back({wake_.get(), POLLIN, 0});
      for (auto& c : clients_) pfds.push_back({c->fd.get(), POLLIN, 0});
    }
    if (poll(pfds.data(), pfds.size(), -1) < 0 && errno != EINTR) return;
    if (pfds[1].revents & POLLIN) {
      uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
      std::vector<std::string> evs;
      {
        std::lock_guard<std::mutex> g(mu_);
        evs.swap(pending_events_);
      }
      for (auto& c : clients_)
        if (c->negotiated)
          for (auto& e : evs) (void)write_all(c->fd.get(), reinterpret_cast<const uint8_t*>(e.data()), e.size());
    }
    for (size_t i = 2; i < pfds.size(); i++) {
      if (!pfds[i].revents) continue;
      Client& c = *clients_[i - 2];
      char buf[65536];
      ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
      if (n <= 0) {
        c.fd.reset();
        continue;
      }
      c.in.append(buf, size_t(n));
      if (c.in.size() > (1u << 20)) {  // a runaway client
        c.fd.reset();
        continue;
      }
      for (auto& obj : split_json_objects(c.in)) {
        handle(c, obj);
        secure_wipe(obj.data(), obj.size());  // requests may carry key material
      }
      secure_wipe(buf, size_t(n));
    }
    std::erase_if(clients_, [](const std::unique_ptr<Client>& c) { return !c->fd.valid(); });
    if (pfds[0].revents & POLLIN) {
      int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        auto c = std::make_unique<Client>();
        c->fd = Fd(fd);
        send(*c, greeting);
        clients_.push_back(std::move(c));
      }
    }
  }
}

}  // namespace encmig
