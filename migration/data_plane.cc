#include "migration/data_plane.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "migration/handshake_io.h"
#include "migration/log.h"
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
  return HostPort{host, port}.str();
}

// Closes a registered stream when its handler leaves, on every path. Declared
// after whatever owns the peer socket, so it runs first: stream_closed() must
// forget the socket's number before the socket is closed.
struct StreamClosedOnExit {
  Migration& mig;
  std::shared_ptr<Stream> stream;
  ~StreamClosedOnExit() { mig.stream_closed(stream); }
};

}  // namespace

Result<std::unique_ptr<DataPlane>> DataPlane::create(DataPlaneOptions o) {
  std::unique_ptr<DataPlane> d(new DataPlane());
  d->o_ = std::move(o);
  auto l = tcp_listen(d->o_.listen, d->o_.socket);
  if (!l) return l.error();
  d->listen_ = std::move(l.value());
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(d->listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  d->port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return d;
}

void DataPlane::start() { std::thread(&DataPlane::accept_data_loop, this).detach(); }

void DataPlane::stop() { ::shutdown(listen_.get(), SHUT_RDWR); }

// ---- the migration table ----

Status DataPlane::add(std::shared_ptr<Migration> m) {
  std::lock_guard<std::mutex> g(mu_);
  if (migrations_.count(m->id())) return make_error(ErrorCode::kAlreadyArmed, "migration " + m->id() + " is already armed");
  migrations_[m->id()] = std::move(m);
  return {};
}

std::shared_ptr<Migration> DataPlane::find(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = migrations_.find(id);
  return it == migrations_.end() ? nullptr : it->second;
}

std::shared_ptr<Migration> DataPlane::take(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = migrations_.find(id);
  if (it == migrations_.end()) return nullptr;
  auto m = it->second;
  migrations_.erase(it);
  return m;
}

std::vector<std::shared_ptr<Migration>> DataPlane::list(const std::string& id) {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<std::shared_ptr<Migration>> out;
  for (auto& [k, m] : migrations_)
    if (id.empty() || id == k) out.push_back(m);
  return out;
}

void DataPlane::count_failure(ErrorCode code) {
  std::lock_guard<std::mutex> g(mu_);
  failures_[error_code_name(code)]++;
}

DataPlane::Stats DataPlane::stats() {
  std::lock_guard<std::mutex> g(mu_);
  return Stats{rejected_.load(), probes_.load(), migrations_.size(), failures_};
}

// ---- data port (destination role) ----

void DataPlane::accept_data_loop() {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      return;  // shut down
    }
    apply_socket_options(fd, o_.socket);
    std::thread(&DataPlane::handle_incoming, this, Fd(fd), peer_name(ss)).detach();
  }
}

void DataPlane::handle_incoming(Fd tcp, std::string from) {
  ServerSocketHandshake hs(std::move(tcp), deadline_in(o_.handshake_timeout_ms));
  auto hello = hs.read_hello();
  if (!hello) {
    log_line("connection from " + from + ": " + hello.error().message());
    if (hs.alerted()) rejected_++;
    count_failure(hello.error().code);
    return;
  }
  if (hello->kind == wire::Kind::kProbe) {
    probes_++;
    wire::ProbeReply pr;
    pr.software = o_.software;
    hs.answer_probe(pr);
    return;
  }
  const std::string id = id_hex(hello->migration_id);
  const std::string sname = stream_name(hello->kind, hello->stream_index);
  auto mig = find(id);
  if (!mig || mig->config().role != MigrationRole::kDestination) {
    log_line("connection from " + from + ": migration " + id + " stream " + sname + ": unknown migration id");
    hs.reject(ErrorCode::kUnknownMigration, "no such migration armed here");
    rejected_++;
    count_failure(ErrorCode::kUnknownMigration);
    return;
  }
  auto stream = mig->add_stream(hello->kind, hello->stream_index);
  if (!stream) {
    hs.reject(stream.error().code, sname);
    rejected_++;
    mig->fail(stream.error().code, sname, stream.error().message() + " (from " + from + ")");
    return;
  }
  std::shared_ptr<Stream> s = stream.value();
  s->peer_fd = hs.fd();
  std::unique_ptr<EncryptedChannel> ch;  // owns the socket once the handshake completes
  StreamClosedOnExit closed{*mig, s};
  auto fail = [&](const Error& e) { mig->fail(e.code, sname, e.message()); };

  auto secrets = mig->secrets();
  if (!secrets) return fail(secrets.error());
  auto done = hs.complete(secrets.value(), sname);
  secrets.value() = MigrationSecrets{};
  if (!done) {
    if (hs.alerted()) rejected_++;
    return fail(done.error());
  }
  ch = std::move(done.value());

  // Hand the stream to QEMU only now, and in the source's order.
  const MigrationConfig& cfg = mig->config();
  const bool ordered = hello->kind == wire::Kind::kMigration;
  if (ordered) {
    if (auto st = mig->wait_turn(hello->kind, hello->stream_index, std::chrono::milliseconds(o_.order_timeout_ms)); !st)
      return fail(st.error());
  }
  const std::string& path = ordered ? cfg.qemu_path : cfg.qemu_nbd_path;
  auto local = path.empty() ? Result<Fd>(make_error(ErrorCode::kInvalidArgument, "no local socket for " + sname))
                            : unix_connect(path);
  if (ordered) mig->turn_done(hello->kind);
  if (!local) return fail(local.error());
  mig->attach_local(s, std::move(local.value()));
  if (auto st = relay_stream(*ch, *s); !st) fail(st.error());
}

// ---- local sockets (source role) ----

Status DataPlane::listen_local(const std::shared_ptr<Migration>& mig) {
  const MigrationConfig& cfg = mig->config();
  for (auto [path, kind] : {std::pair{cfg.listen_path, wire::Kind::kMigration}, std::pair{cfg.nbd_listen_path, wire::Kind::kNbd}}) {
    if (path.empty()) continue;
    auto l = unix_listen(path, 0660);
    if (!l) return l.error();
    int lfd = l->get();
    mig->add_listener(std::move(l.value()));
    std::thread(&DataPlane::accept_local_loop, this, mig, lfd, kind).detach();
  }
  return {};
}

void DataPlane::accept_local_loop(std::shared_ptr<Migration> mig, int listen_fd, wire::Kind kind) {
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
    std::thread(&DataPlane::handle_outgoing, this, mig, s.value()).detach();
  }
}

void DataPlane::handle_outgoing(std::shared_ptr<Migration> mig, std::shared_ptr<Stream> s) {
  Fd tcp;                                // owns the socket during the handshake,
  std::unique_ptr<EncryptedChannel> ch;  // then the channel does
  StreamClosedOnExit closed{*mig, s};
  auto fail = [&](const Error& e) { mig->fail(e.code, s->name, e.message()); };

  Deadline deadline = deadline_in(o_.handshake_timeout_ms);
  auto conn = tcp_connect(mig->config().peer, o_.socket, o_.handshake_timeout_ms);
  if (!conn) return fail(conn.error());
  tcp = std::move(conn.value());
  s->peer_fd = tcp.get();
  auto secrets = mig->secrets();
  if (!secrets) return fail(secrets.error());
  auto done = client_handshake(std::move(tcp), std::move(secrets.value()), s->kind, s->index, s->name, deadline);
  if (!done) return fail(done.error());
  ch = std::move(done.value());
  if (auto st = relay_stream(*ch, *s); !st) fail(st.error());
}

}  // namespace encmig
