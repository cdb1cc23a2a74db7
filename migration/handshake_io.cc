#include "migration/handshake_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "migration/session.h"

namespace encmig {

using Clock = std::chrono::steady_clock;

// ---- client role ----

Result<std::unique_ptr<EncryptedChannel>> client_handshake(Fd&& tcp, MigrationSecrets secrets, wire::Kind kind,
                                                           uint32_t index, std::string name, Deadline deadline,
                                                           uint32_t flags) {
  auto hs = ClientHandshake::create(std::move(secrets), kind, index, nullptr, flags);
  if (!hs) return hs.error();
  if (auto st = write_all(tcp.get(), hs->hello().data(), hs->hello().size()); !st) return st.error();
  uint8_t buf[wire::kServerFlightSize];
  while (hs->state() == ClientHandshake::State::kAwaitServer) {
    size_t want = hs->wanted();
    if (auto st = read_exact(tcp.get(), buf, want, deadline); !st)
      return Error{st.error().code, "handshake: " + st.error().detail};
    auto used = hs->consume(buf, want);
    if (!used) return used.error();
  }
  if (auto st = write_all(tcp.get(), hs->confirm().data(), hs->confirm().size()); !st) return st.error();
  auto keys = hs->take_keys();
  if (!keys) return keys.error();
  return EncryptedChannel::create(std::move(tcp), std::move(keys.value()), std::move(name));
}

Result<wire::ProbeReply> probe_daemon(const HostPort& hp, int timeout_ms) {
  Deadline deadline = deadline_in(timeout_ms);
  auto fd = tcp_connect(hp, SocketOptions{}, timeout_ms);
  if (!fd) return fd.error();
  wire::Hello h;
  h.kind = wire::Kind::kProbe;
  uint8_t raw[wire::kHelloSize];
  wire::encode_hello(h, raw);
  if (auto st = write_all(fd->get(), raw, sizeof raw); !st) return st.error();
  uint8_t reply[wire::kProbeReplySize];
  if (auto st = read_exact(fd->get(), reply, sizeof reply, deadline); !st) return st.error();
  return wire::decode_probe_reply(reply);
}

// ---- server role: the data port's front door ----

namespace {
constexpr uint64_t kListenKey = 0;
constexpr uint64_t kWakeKey = 1;
constexpr uint64_t kFirstConnKey = 16;

std::string address_of(const sockaddr_storage& ss, uint16_t* port) {
  char host[INET6_ADDRSTRLEN] = "?";
  *port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    *port = ntohs(a->sin6_port);
  }
  return host;
}

// Best effort, never blocks: an alert or a 96-byte flight fits an empty
// socket buffer.
bool send_now(int fd, std::span<const uint8_t> b) {
  return ::send(fd, b.data(), b.size(), MSG_DONTWAIT | MSG_NOSIGNAL) == ssize_t(b.size());
}
}  // namespace

struct HandshakeAcceptor::Conn {
  uint64_t key = 0;
  Fd fd;
  std::string address, from;  // "ip", "ip:port"
  ServerHandshake hs = ServerHandshake::create();
  Clock::time_point deadline;
  std::string migration;  // set once a valid hello for an armed migration was answered
};

const char* HandshakeAcceptor::refusal_name(Refusal r) {
  switch (r) {
    case kTimedOut: return "handshake-timeout";
    case kMalformedHello: return "malformed-hello";
    case kUnknownMigration: return "unknown-migration";
    case kKeyConfirmation: return "key-confirmation-failed";
    case kEvicted: return "evicted-over-limit";
    case kPeerClosed: return "closed-before-confirmation";
    case kAcceptFailed: return "accept-failed";
    case kRefusalCount: break;
  }
  return "unknown";
}

Result<std::unique_ptr<HandshakeAcceptor>> HandshakeAcceptor::create(Fd listener, SocketOptions socket,
                                                                     AcceptorLimits limits, Hooks hooks) {
  std::unique_ptr<HandshakeAcceptor> a(new HandshakeAcceptor());
  a->listen_ = std::move(listener);
  a->socket_ = socket;
  a->limits_ = limits;
  a->hooks_ = std::move(hooks);
  a->next_key_ = kFirstConnKey;
  fcntl(a->listen_.get(), F_SETFL, fcntl(a->listen_.get(), F_GETFL) | O_NONBLOCK);
  a->epoll_ = Fd(epoll_create1(EPOLL_CLOEXEC));
  a->wake_ = Fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!a->epoll_.valid() || !a->wake_.valid()) return make_error(ErrorCode::kIo, "epoll/eventfd: " + errno_text(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenKey;
  epoll_ctl(a->epoll_.get(), EPOLL_CTL_ADD, a->listen_.get(), &ev);
  ev.data.u64 = kWakeKey;
  epoll_ctl(a->epoll_.get(), EPOLL_CTL_ADD, a->wake_.get(), &ev);
  return a;
}

HandshakeAcceptor::~HandshakeAcceptor() = default;

void HandshakeAcceptor::stop() {
  stop_ = true;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void HandshakeAcceptor::make_room(int n) {
  room_wanted_ += n;
  uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void HandshakeAcceptor::run() {
  epoll_event events[128];
  bool listening = true;
  while (!stop_) {
    auto now = Clock::now();
    // Sleep until the oldest handshake's deadline, or the end of an accept pause.
    Clock::time_point wake = Clock::time_point::max();
    while (!order_.empty() && !conns_.count(order_.front())) order_.pop_front();
    if (!order_.empty()) wake = conns_[order_.front()]->deadline;
    if (!listening) wake = std::min(wake, accept_paused_until_);
    int timeout = wake == Clock::time_point::max()
                      ? -1
                      : int(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1));
    int n = epoll_wait(epoll_.get(), events, 128, timeout);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == kListenKey) accept_ready();
      else if (key == kWakeKey) {
        uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
      } else if (conns_.count(key)) {
        on_readable(key);
      }
    }
    now = Clock::now();
    if (int want = room_wanted_.exchange(0); want > 0) {
      refused_[kAcceptFailed] += static_cast<uint64_t>(want);
      while (want-- > 0 && evict_oldest([](const Conn&) { return true; })) {}
      accept_paused_until_ = now + std::chrono::milliseconds(200);
    }
    expire(now);
    // Listening state follows the accept pause (EMFILE with nothing to evict).
    bool want = now >= accept_paused_until_;
    if (want != listening) {
      epoll_event ev{};
      ev.events = want ? uint32_t(EPOLLIN) : 0u;
      ev.data.u64 = kListenKey;
      epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, listen_.get(), &ev);
      listening = want;
    }
  }
  while (!conns_.empty()) close_conn(conns_.begin()->first);
}

void HandshakeAcceptor::accept_ready() {
  for (int burst = 0; burst < 256; burst++) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = accept4(listen_.get(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        refused_[kAcceptFailed]++;
        log_.log(refusal_name(kAcceptFailed), "data port: accept failed: " + errno_text(errno) +
                                                  "; dropping the oldest unauthenticated connection");
        // Make room rather than spin: free an fd, or pause accepting briefly.
        if (!evict_oldest([](const Conn&) { return true; })) accept_paused_until_ = Clock::now() + std::chrono::milliseconds(50);
        return;
      }
      return;  // the listener was shut down
    }
    uint16_t port = 0;
    auto c = std::make_unique<Conn>();
    c->fd = Fd(fd);
    c->address = address_of(ss, &port);
    c->from = HostPort{c->address, port}.str();
    c->deadline = Clock::now() + std::chrono::milliseconds(limits_.handshake_timeout_ms);
    while (int(conns_.size()) >= limits_.max_pending && evict_oldest([](const Conn&) { return true; })) {}
    const std::string addr = c->address;
    while (per_address_[addr] >= limits_.max_pending_per_address &&
           evict_oldest([&](const Conn& o) { return o.address == addr; })) {}
    apply_socket_options(fd, socket_);
    c->key = next_key_++;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = c->key;
    epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev);
    per_address_[addr]++;
    order_.push_back(c->key);
    conns_[c->key] = std::move(c);
    npending_ = conns_.size();
  }
}

void HandshakeAcceptor::on_readable(uint64_t key) {
  Conn& c = *conns_[key];
  uint8_t buf[wire::kHelloSize];
  size_t want = std::min(c.hs.wanted(), sizeof buf);
  ssize_t r = ::read(c.fd.get(), buf, want);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (r <= 0) return refuse(key, kPeerClosed, r == 0 ? "closed" : errno_text(errno));
  const bool awaiting_hello = c.hs.state() == ServerHandshake::State::kAwaitHello;
  auto used = c.hs.consume(buf, size_t(r));
  if (!used) {
    if (awaiting_hello) return refuse(key, kMalformedHello, "malformed hello: " + used.error().message(), used.error().code, used.error().message());
    return refuse(key, kKeyConfirmation,
                  "migration " + c.migration + ": " + used.error().message() + " (the peer does not hold the key)",
                  used.error().code, "key confirmation failed");
  }
  if (c.hs.state() == ServerHandshake::State::kNeedSecrets) {
    const wire::Hello& hello = c.hs.client_hello();
    if (hello.kind == wire::Kind::kProbe) {
      c.hs.answer_probe(hooks_.probe_reply);
      (void)send_now(c.fd.get(), c.hs.output());
      probes_++;
      return close_conn(key);
    }
    const std::string id = id_hex(hello.migration_id);
    const std::string sname = stream_name(hello.kind, hello.stream_index);
    auto secrets = hooks_.secrets_for(hello);
    if (!secrets)
      return refuse(key, kUnknownMigration, "migration " + id + " stream " + sname + ": " + secrets.error().message(),
                    secrets.error().code, secrets.error().text());
    while (per_migration_[id] >= limits_.max_pending_per_migration &&
           evict_oldest([&](const Conn& o) { return o.migration == id; })) {}
    auto st = c.hs.accept(secrets.value());
    secrets.value() = MigrationSecrets{};
    if (!st) return refuse(key, kUnknownMigration, "migration " + id + ": " + st.error().message());
    if (!send_now(c.fd.get(), c.hs.output())) return refuse(key, kPeerClosed, "cannot send the server hello");
    c.migration = id;
    per_migration_[id]++;
    return;
  }
  if (c.hs.state() != ServerHandshake::State::kDone) return;
  // Key confirmation verified: the peer holds the migration key.
  auto keys = c.hs.take_keys();
  if (!keys) return refuse(key, kKeyConfirmation, keys.error().message());
  const wire::Hello hello = keys->client_hello;
  const std::string from = c.from;
  int fd = c.fd.get();
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  auto ch = EncryptedChannel::create(std::move(c.fd), std::move(keys.value()), stream_name(hello.kind, hello.stream_index));
  close_conn(key);  // the channel owns the socket now (or, on failure, closing is right)
  if (ch) hooks_.authenticated(hello, std::move(ch.value()), from);
}

void HandshakeAcceptor::refuse(uint64_t key, Refusal why, const std::string& detail, ErrorCode alert,
                               const std::string& alert_text) {
  Conn& c = *conns_[key];
  if (alert != ErrorCode::kOk && uint16_t(alert) <= kMaxWireErrorCode) {
    c.hs.reject(alert, alert_text);
    if (send_now(c.fd.get(), c.hs.output())) alerts_++;
  }
  refused_[why]++;
  log_.log(refusal_name(why), "connection from " + c.from + " refused (" + refusal_name(why) + "): " + detail);
  close_conn(key);
}

void HandshakeAcceptor::close_conn(uint64_t key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.fd.valid()) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
  if (--per_address_[c.address] <= 0) per_address_.erase(c.address);
  if (!c.migration.empty() && --per_migration_[c.migration] <= 0) per_migration_.erase(c.migration);
  conns_.erase(it);
  npending_ = conns_.size();
  // Keep the accept-order list from growing without bound under churn.
  if (order_.size() > 4 * conns_.size() + 1024) {
    std::deque<uint64_t> live;
    for (uint64_t k : order_)
      if (conns_.count(k)) live.push_back(k);
    order_.swap(live);
  }
}

bool HandshakeAcceptor::evict_oldest(const std::function<bool(const Conn&)>& counts) {
  uint64_t victim = 0;
  for (uint64_t k : order_) {
    auto it = conns_.find(k);
    if (it != conns_.end() && counts(*it->second)) {
      victim = k;
      break;
    }
  }
  if (!victim) return false;
  refuse(victim, kEvicted, "dropped to make room (" + std::to_string(conns_.size()) + " unauthenticated connections)");
  return true;
}

void HandshakeAcceptor::expire(Clock::time_point now) {
  while (!order_.empty()) {
    auto it = conns_.find(order_.front());
    if (it == conns_.end()) {
      order_.pop_front();
      continue;
    }
    if (it->second->deadline > now) return;
    uint64_t k = order_.front();
    order_.pop_front();
    refuse(k, kTimedOut, "handshake not finished within " + std::to_string(limits_.handshake_timeout_ms) + " ms");
  }
}

}  // namespace encmig
