#include "control/daemon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "control/base64.h"
#include "migration/relay.h"

namespace encmig {

namespace {

std::string peer_name(const sockaddr_storage& ss) {
  char host[128] = "?";
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

void log_line(const std::string& s) {
  std::fprintf(stderr, "encmigd: %s\n", s.c_str());
  std::fflush(stderr);
}

std::string str_arg(const json& a, const char* k) {
  return a.contains(k) && a[k].is_string() ? a[k].get<std::string>() : std::string();
}
}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::create(DaemonOptions opts) {
  std::unique_ptr<Daemon> d(new Daemon());
  d->opts_ = std::move(opts);
  auto l = tcp_listen(d->opts_.data_listen, d->data_socket_options());
  if (!l) return l.error();
  d->data_listen_ = std::move(l.value());
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(d->data_listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  d->data_port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  json version{{"qemu", {{"major", 0}, {"minor", 1}, {"micro", 0}}}, {"package", kSoftware}};
  Daemon* self = d.get();
  auto q = QmpServer::create(d->opts_.control_path, version,
                             [self](const std::string& c, json& a) { return self->command(c, a); });
  if (!q) return q.error();
  d->qmp_ = std::move(q.value());
  return d;
}

void Daemon::run() {
  std::thread(&Daemon::accept_data_loop, this).detach();
  log_line(std::string(kSoftware) + " listening on " + opts_.data_listen.host + ":" + std::to_string(data_port_) +
           ", control " + opts_.control_path);
  qmp_->run();
}

void Daemon::stop() {
  ::shutdown(data_listen_.get(), SHUT_RDWR);
  qmp_->stop();
}

void Daemon::log(const std::string& line) { log_line(line); }

void Daemon::count_failure(ErrorCode code) {
  std::lock_guard<std::mutex> g(mu_);
  failures_[error_code_name(code)]++;
}

std::shared_ptr<Migration> Daemon::find(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = migrations_.find(id);
  return it == migrations_.end() ? nullptr : it->second;
}

// ---- data port (destination role) ----

void Daemon::accept_data_loop() {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(data_listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      return;  // shut down
    }
    apply_socket_options(fd, data_socket_options());
    std::thread(&Daemon::handle_incoming, this, Fd(fd), peer_name(ss)).detach();
  }
}

void Daemon::handle_incoming(Fd tcp, std::string from) {
  int fd = tcp.get();
  set_recv_timeout(fd, opts_.handshake_timeout_ms);
  auto hs = ServerHandshake::create();
  uint8_t buf[wire::kHelloSize];
  auto reject = [&](ErrorCode code, const std::string& text) {
    hs.reject(code, text);
    (void)write_all(fd, hs.output().data(), hs.output().size());
    rejected_connections_++;
    count_failure(code);
  };
  if (auto st = read_exact(fd, buf, wire::kHelloSize); !st) {
    log_line("connection from " + from + ": no hello: " + st.error().message());
    count_failure(st.error().code);
    return;
  }
  if (auto r = hs.consume(buf, wire::kHelloSize); !r) {
    log_line("connection from " + from + ": malformed hello: " + r.error().message());
    return reject(r.error().code, r.error().message());
  }
  const wire::Hello hello = hs.client_hello();
  if (hello.kind == wire::Kind::kProbe) {
    probes_++;
    wire::ProbeReply pr;
    pr.software = kSoftware;
    hs.answer_probe(pr);
    (void)write_all(fd, hs.output().data(), hs.output().size());
    return;
  }
  std::string id = id_hex(hello.migration_id);
  std::string sname = stream_name(hello.kind, hello.stream_index);
  auto mig = find(id);
  if (!mig || mig->config().role != MigrationRole::kDestination) {
    log_line("connection from " + from + ": migration " + id + " stream " + sname + ": unknown migration id");
    return reject(ErrorCode::kUnknownMigration, "no such migration armed here");
  }
  auto stream = mig->add_stream(hello.kind, hello.stream_index);
  if (!stream) {
    reject(stream.error().code, sname);
    mig->fail(stream.error().code, sname, stream.error().message() + " (from " + from + ")");
    return;
  }
  auto s = stream.value();
  s->peer_fd = fd;
  // From here on every exit passes through stream_closed() before `tcp` or
  // the channel closes the socket.
  auto fail = [&](const Error& e) { mig->fail(e.code, sname, e.message()); };

  auto secrets = mig->secrets();
  if (!secrets) return fail(secrets.error()), mig->stream_closed(s);
  if (auto st = hs.accept(secrets.value()); !st) return fail(st.error()), mig->stream_closed(s);
  secrets.value() = MigrationSecrets{};
  if (auto st = write_all(fd, hs.output().data(), hs.output().size()); !st) return fail(st.error()), mig->stream_closed(s);
  uint8_t confirm[wire::kConfirmSize];
  if (auto st = read_exact(fd, confirm, sizeof confirm); !st) return fail(st.error()), mig->stream_closed(s);
  if (auto r = hs.consume(confirm, sizeof confirm); !r) {
    reject(r.error().code, "key confirmation failed");
    fail(r.error());
    return mig->stream_closed(s);
  }
  auto keys = hs.take_keys();
  if (!keys) return fail(keys.error()), mig->stream_closed(s);
  auto ch = EncryptedChannel::create(std::move(tcp), std::move(keys.value()), sname);
  if (!ch) return fail(ch.error()), mig->stream_closed(s);

  // Hand the stream to QEMU only now, and in the source's order.
  const auto& cfg = mig->config();
  bool ordered = hello.kind == wire::Kind::kMigration;
  if (ordered) {
    if (auto st = mig->wait_turn(hello.kind, hello.stream_index, std::chrono::milliseconds(opts_.order_timeout_ms)); !st)
      return fail(st.error()), mig->stream_closed(s);
  }
  const std::string& path = ordered ? cfg.qemu_path : cfg.qemu_nbd_path;
  auto local = path.empty() ? Result<Fd>(make_error(ErrorCode::kInvalidArgument, "no local socket for " + sname))
                            : unix_connect(path);
  if (ordered) mig->turn_done(hello.kind);
  if (!local) return fail(local.error()), mig->stream_closed(s);
  mig->attach_local(s, std::move(local.value()));
  if (auto st = relay_stream(*ch.value(), *s); !st) fail(st.error());
  mig->stream_closed(s);
}

// ---- local sockets (source role) ----

void Daemon::accept_local_loop(std::shared_ptr<Migration> mig, int listen_fd, wire::Kind kind) {
  for (;;) {
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // the migration ended and shut the listener down
    }
    Fd local(fd);
    // Indexes follow accept order, which is QEMU's connect order.
    uint32_t index = mig->next_source_index(kind);
    auto s = mig->add_stream(kind, index);
    if (!s) continue;  // migration over: `local` closes
    mig->attach_local(s.value(), std::move(local));
    std::thread(&Daemon::handle_outgoing, this, mig, s.value()).detach();
  }
}

void Daemon::handle_outgoing(std::shared_ptr<Migration> mig, std::shared_ptr<Stream> s) {
  auto fail = [&](const Error& e) {
    mig->fail(e.code, s->name, e.message());
    mig->stream_closed(s);
  };
  auto tcp = tcp_connect(mig->config().peer, data_socket_options(), opts_.handshake_timeout_ms);
  if (!tcp) return fail(tcp.error());
  s->peer_fd = tcp->get();
  auto secrets = mig->secrets();
  if (!secrets) return fail(secrets.error());
  auto ch = client_handshake(std::move(tcp.value()), std::move(secrets.value()), s->kind, s->index, s->name,
                             opts_.handshake_timeout_ms);
  if (!ch) return fail(ch.error());
  if (auto st = relay_stream(*ch.value(), *s); !st) mig->fail(st.error().code, s->name, st.error().message());
  mig->stream_closed(s);
}

// ---- control commands ----

Result<json> Daemon::arm(json& args) {
  MigrationConfig cfg;
  auto id = id_from_hex(str_arg(args, "id"));
  if (!id) return id.error();
  cfg.id = id.value();
  std::string role = str_arg(args, "role");
  if (role != "source" && role != "destination")
    return make_error(ErrorCode::kInvalidArgument, "role must be 'source' or 'destination'");
  cfg.role = role == "source" ? MigrationRole::kSource : MigrationRole::kDestination;

  MigrationSecrets sec;
  sec.id = cfg.id;
  std::string key = str_arg(args, "key");
  auto k = base64_to_secret(key);
  secure_wipe(key.data(), key.size());
  if (args.contains("key") && args["key"].is_string()) {
    auto& ks = args["key"].get_ref<std::string&>();
    secure_wipe(ks.data(), ks.size());
  }
  if (!k) return k.error();
  if (k->size() != wire::kKeySize) return make_error(ErrorCode::kInvalidArgument, "key must be 32 bytes");
  sec.key = std::move(k.value());
  std::string nonce = str_arg(args, "nonce");
  if (nonce.size() != 16) return make_error(ErrorCode::kInvalidArgument, "nonce must be 16 hex digits");
  for (size_t i = 0; i < 8; i++) sec.nonce[i] = uint8_t(std::stoul(nonce.substr(2 * i, 2), nullptr, 16));
  cfg.expected_streams = args.value("streams", 0);

  if (cfg.role == MigrationRole::kSource) {
    auto peer = HostPort::parse(str_arg(args, "peer"));
    if (!peer) return peer.error();
    cfg.peer = peer.value();
    cfg.listen_path = str_arg(args, "listen-path");
    cfg.nbd_listen_path = str_arg(args, "nbd-listen-path");
    if (cfg.listen_path.empty() && cfg.nbd_listen_path.empty())
      return make_error(ErrorCode::kInvalidArgument, "source needs 'listen-path' or 'nbd-listen-path'");
  } else {
    cfg.qemu_path = str_arg(args, "qemu-path");
    cfg.qemu_nbd_path = str_arg(args, "qemu-nbd-path");
    if (cfg.qemu_path.empty() && cfg.qemu_nbd_path.empty())
      return make_error(ErrorCode::kInvalidArgument, "destination needs 'qemu-path' or 'qemu-nbd-path'");
  }
  std::string idh = id_hex(cfg.id);
  auto mig = arm_migration(std::move(cfg), std::move(sec));
  if (!mig) return mig.error();
  return json{{"id", idh}, {"state", "armed"}};
}

Result<std::shared_ptr<Migration>> Daemon::arm_migration(MigrationConfig cfg, MigrationSecrets sec) {
  std::string idh = id_hex(cfg.id);
  auto events = [this](const std::string& ev, const std::string& data) { qmp_->emit(ev, json::parse(data)); };
  auto mig = std::make_shared<Migration>(cfg, std::move(sec), events, [this](ErrorCode c) { count_failure(c); });
  {
    std::lock_guard<std::mutex> g(mu_);
    if (migrations_.count(idh)) return make_error(ErrorCode::kDuplicateStream, "migration " + idh + " is already armed");
    migrations_[idh] = mig;
  }
  if (cfg.role == MigrationRole::kSource) {
    for (auto [path, kind] : {std::pair{cfg.listen_path, wire::Kind::kMigration}, std::pair{cfg.nbd_listen_path, wire::Kind::kNbd}}) {
      if (path.empty()) continue;
      auto l = unix_listen(path, 0660);
      if (!l) {
        mig->end(true);
        std::lock_guard<std::mutex> g(mu_);
        migrations_.erase(idh);
        return l.error();
      }
      int lfd = l->get();
      mig->add_listener(std::move(l.value()));
      std::thread(&Daemon::accept_local_loop, this, mig, lfd, kind).detach();
    }
  }
  armed_total_++;
  log_line("migration " + idh + " armed as " + (cfg.role == MigrationRole::kSource ? "source" : "destination"));
  return mig;
}

Result<json> Daemon::finish(const json& args, bool cancel) { return end_migration(str_arg(args, "id"), cancel); }

Result<json> Daemon::end_migration(const std::string& id, bool cancel) {
  std::shared_ptr<Migration> mig;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = migrations_.find(id);
    if (it == migrations_.end()) return make_error(ErrorCode::kUnknownMigration, id);
    mig = it->second;
    migrations_.erase(it);
  }
  mig->end(cancel);
  return json::parse(mig->status_json());
}

json Daemon::stats_json() {
  std::lock_guard<std::mutex> g(mu_);
  return json{{"migrations-armed", armed_total_.load()},
              {"migrations-open", migrations_.size()},
              {"connections-rejected", rejected_connections_.load()},
              {"probes", probes_.load()},
              {"failures", failures_}};
}

Result<json> Daemon::command(const std::string& cmd, json& args) {
  if (cmd == "query-version")
    return json{{"qemu", {{"major", 0}, {"minor", 1}, {"micro", 0}}}, {"package", kSoftware}};
  if (cmd == "query-encmig-capabilities")
    return json{{"protocol-versions", {wire::kVersion}},
                {"ciphers", {"aes-256-gcm"}},
                {"data-port", data_port_},
                {"max-record", wire::kMaxRecordPayload},
                {"socket-buffer", opts_.socket_buffer}};
  if (cmd == "query-commands") {
    json l = json::array();
    for (auto c : {"qmp_capabilities", "query-version", "query-commands", "query-encmig-capabilities", "migration-arm",
                   "query-migrations", "migration-end", "migration-cancel", "query-stats"})
      l.push_back({{"name", c}});
    return l;
  }
  if (cmd == "migration-arm") return arm(args);
  if (cmd == "migration-end") return finish(args, false);
  if (cmd == "migration-cancel") return finish(args, true);
  if (cmd == "query-stats") return stats_json();
  if (cmd == "query-migrations") {
    std::string id = str_arg(args, "id");
    // Copy the list, then ask each migration without holding mu_: a failing
    // migration holds its own lock while it counts the failure under mu_.
    std::vector<std::shared_ptr<Migration>> list;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (auto& [k, m] : migrations_)
        if (id.empty() || id == k) list.push_back(m);
    }
    json out = json::array();
    for (auto& m : list) out.push_back(json::parse(m->status_json()));
    return out;
  }
  return make_error(ErrorCode::kNotReady, "command not found: " + cmd);
}

}  // namespace encmig
