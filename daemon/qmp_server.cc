#include "daemon/qmp_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

#include "common/qmp.h"
#include "crypto/secret.h"
#include "migration/local_peer.h"
#include "migration/log.h"

namespace encmig {

Result<std::unique_ptr<QmpServer>> QmpServer::create(const std::string& path, json version, Handler handler) {
  // Only root may connect: the socket is 0600 and made fresh (an old one
  // from a previous run is removed first; the directory is root's).
  ::unlink(path.c_str());
  auto l = listen_local_socket(path, 0600, -1);
  if (!l) return l.error();
  std::unique_ptr<QmpServer> s(new QmpServer());
  s->listen_ = std::move(l->fd);
  fcntl(s->listen_.get(), F_SETFL, fcntl(s->listen_.get(), F_GETFL) | O_NONBLOCK);
  s->wake_ = Fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  s->version_ = std::move(version);
  s->handler_ = std::move(handler);
  return s;
}

void QmpServer::stop() {
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void QmpServer::emit(const std::string& name, const json& data) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  json e{{"event", name}, {"data", data}, {"timestamp", {{"seconds", tv.tv_sec}, {"microseconds", tv.tv_usec}}}};
  std::lock_guard<std::mutex> g(mu_);
  if (pending_events_.size() < 4096) pending_events_.push_back(e.dump() + "\r\n");
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void QmpServer::queue(Client& c, const std::string& line) {
  if (c.closing) return;
  if (c.out.size() + line.size() > kMaxQueued) {
    dropped_++;
    log_line("control socket: dropping a client that left " + std::to_string(c.out.size()) + " bytes unread");
    c.closing = true;
    return;
  }
  c.out += line;
}

void QmpServer::flush(Client& c) {
  while (!c.out.empty() && !c.closing) {
    ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      c.out.erase(0, size_t(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    c.closing = true;
  }
}

void QmpServer::handle(Client& c, std::string& text) {
  auto reply = [&](json r, const json* id) {
    if (id) r["id"] = *id;
    queue(c, r.dump() + "\r\n");
  };
  auto err = [&](const std::string& cls, const std::string& desc, const json* id) {
    reply(json{{"error", {{"class", cls}, {"desc", desc}}}}, id);
  };
  json req = json::parse(text, nullptr, false);
  if (req.is_discarded() || !req.is_object()) return err("GenericError", "JSON parse error", nullptr);
  auto id_it = req.find("id");
  const json* id = id_it != req.end() ? &*id_it : nullptr;
  auto exec = req.find("execute");
  if (exec == req.end() || !exec->is_string()) return err("GenericError", "QMP input must be an object with 'execute'", id);
  const std::string cmd = exec->get<std::string>();
  // The arguments are used in place, so that a key in them has one copy, which the handler wipes.
  auto args_it = req.find("arguments");
  json no_args = json::object();
  json& args = args_it != req.end() ? *args_it : no_args;
  if (!args.is_object()) return err("GenericError", "'arguments' must be an object", id);
  if (cmd == "qmp_capabilities") {
    if (c.negotiated) return err("CommandNotFound", "Capabilities negotiation is already complete, command ignored", id);
    c.negotiated = true;
    return reply(json{{"return", json::object()}}, id);
  }
  if (!c.negotiated) return err("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id);
  auto res = handler_(cmd, args);
  if (!res.ok()) {
    bool unknown = res.error().code == ErrorCode::kCommandNotFound;
    return err(unknown ? "CommandNotFound" : "GenericError", res.error().message(), id);
  }
  reply(json{{"return", res.value()}}, id);
}

void QmpServer::read_from(Client& c) {
  char buf[65536];
  ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    c.closing = true;
    return;
  }
  c.in.append(buf, size_t(n));
  secure_wipe(buf, size_t(n));  // requests may carry key material
  if (c.in.size() > kMaxInput) {  // a runaway client
    c.closing = true;
    return;
  }
  for (auto& obj : split_json_objects(c.in)) {
    // Every parser is written not to throw; this is the last line of defence,
    // so that no input can ever take the daemon down.
    try {
      handle(c, obj);
    } catch (const std::exception& e) {
      log_line(std::string("control socket: internal error on a request: ") + e.what());
      queue(c, json{{"error", {{"class", "GenericError"}, {"desc", "internal error"}}}}.dump() + "\r\n");
    }
    secure_wipe(obj.data(), obj.size());
    if (c.closing) return;
  }
}

void QmpServer::run() {
  const std::string greeting = json{{"QMP", {{"version", version_}, {"capabilities", json::array()}}}}.dump() + "\r\n";
  while (!stop_) {
    std::vector<pollfd> pfds;
    pfds.push_back({listen_.get(), short(clients_.size() < kMaxClients ? POLLIN : 0), 0});
    pfds.push_back({wake_.get(), POLLIN, 0});
    for (auto& c : clients_) pfds.push_back({c->fd.get(), short(POLLIN | (c->out.empty() ? 0 : POLLOUT)), 0});
    if (poll(pfds.data(), pfds.size(), -1) < 0 && errno != EINTR) return;
    if (stop_) return;
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
          for (auto& e : evs) queue(*c, e);
    }
    for (size_t i = 2; i < pfds.size(); i++) {
      Client& c = *clients_[i - 2];
      if (pfds[i].revents & (POLLIN | POLLHUP | POLLERR)) read_from(c);
      flush(c);
    }
    std::erase_if(clients_, [](const std::unique_ptr<Client>& c) { return c->closing; });
    if (pfds[0].revents & POLLIN) {
      int fd = accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        auto c = std::make_unique<Client>();
        c->fd = Fd(fd);
        queue(*c, greeting);
        flush(*c);
        clients_.push_back(std::move(c));
      }
    }
  }
}

}  // namespace encmig
