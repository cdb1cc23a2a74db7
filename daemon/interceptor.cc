#include "daemon/interceptor.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "common/host_secret.h"
#include "common/json.h"
#include "common/switchover.h"
#include "daemon/daemon.h"
#include "migration/log.h"

namespace encmig {

namespace {
using Clock = std::chrono::steady_clock;
// <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>, which
// do not mix with <netinet/in.h>.
constexpr int kSoOriginalDst = 80, kIp6tSoOriginalDst = 80;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Result<Fd> listen_loopback(int family, uint16_t port) {
  Fd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return make_error(ErrorCode::kIo, "socket: " + errno_text(errno));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int rc;
  if (family == AF_INET) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  } else {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_port = htons(port);
    a.sin6_addr = in6addr_loopback;
    rc = bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  }
  if (rc != 0 || listen(fd.get(), 256) != 0)
    return make_error(ErrorCode::kIo, std::string("intercept port ") + (family == AF_INET ? "127.0.0.1:" : "[::1]:") +
                                          std::to_string(port) + ": " + errno_text(errno));
  return fd;
}

// Copies one direction until EOF, then passes the EOF on.
void pump(int from, int to) {
  std::vector<char> buf(256 << 10);
  for (;;) {
    ssize_t n = read(from, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!write_all(to, reinterpret_cast<const uint8_t*>(buf.data()), size_t(n))) break;
  }
  shutdown(to, SHUT_WR);
  shutdown(from, SHUT_RD);
}
}  // namespace

// One migration as the interceptor sees it: the connections of one domain
// to one destination address and port.
struct Interceptor::Group {
  std::string key, domain, uuid;
  TcpEndpoint dest;
  EncryptMode mode = kDefaultPolicy;
  bool policy_explicit = false;
  enum class Fate { kDeciding, kEncrypt, kPlain, kRefuse } fate = Fate::kDeciding;
  std::mutex mu;
  std::vector<std::pair<Fd, pid_t>> pending;  // while deciding, in accept order
  std::shared_ptr<Migration> mig;
  int relays = 0;  // plain relays still open
  bool finished = false;
  std::string why;
  Clock::time_point decided{};
  // The hand-off: the destination's libvirt and the secret there, kept until
  // the migration ends (its removal ends the destination's side).
  std::shared_ptr<virConnect> dconn;
  handoff::HostSecret secret;
  std::string context() const {
    return "transparent, domain " + domain + " to " + dest.str() + ", policy " + encrypt_mode_name(mode) +
           (policy_explicit ? "" : " (default)");
  }
};

Result<std::unique_ptr<Interceptor>> Interceptor::create(Daemon& d, InterceptOptions o) {
  std::unique_ptr<Interceptor> i(new Interceptor(d, std::move(o)));
  parse_qemu_conf_ports(slurp(i->o_.qemu_conf), i->rule_.port_min, i->rule_.port_max);
  if (i->o_.port >= 1024)
    return make_error(ErrorCode::kInvalidArgument, "the intercept port must be below 1024 (privileged), not " + std::to_string(i->o_.port));
  if (i->o_.port >= i->rule_.port_min && i->o_.port <= i->rule_.port_max)
    return make_error(ErrorCode::kInvalidArgument, "the intercept port " + std::to_string(i->o_.port) +
                                                       " is inside libvirt's migration port range");
  i->rule_.uids.push_back(0);
  const std::string conf = slurp(i->o_.qemu_conf);
  std::string user = qemu_conf_string(conf, "user");
  if (user.empty()) user = i->o_.qemu_user;
  // "+N" is a numeric uid in qemu.conf.
  uid_t quid = 0;
  if (user.size() > 1 && user[0] == '+' && user.find_first_not_of("0123456789", 1) == std::string::npos && user.size() < 11) {
    quid = uid_t(std::stoul(user.substr(1)));
  } else if (const passwd* p = getpwnam(user.c_str())) {
    quid = p->pw_uid;
  } else {
    // QEMU's own connections (multifd, NBD) would leave unencrypted.
    return make_error(ErrorCode::kInvalidArgument, "QEMU's user '" + user + "' (qemu.conf's user, or --qemu-user) does not exist");
  }
  if (quid != 0) i->rule_.uids.push_back(quid);
  auto l4 = listen_loopback(AF_INET, i->o_.port);
  if (!l4) return l4.error();
  i->listen4_ = std::move(l4.value());
  i->rule_.redirect_port = i->o_.port;
  auto l6 = listen_loopback(AF_INET6, i->o_.port);
  if (l6) {
    i->listen6_ = std::move(l6.value());
  } else if (!slurp("/proc/net/if_inet6").empty()) {
    // The rule redirects IPv6 too: a port we do not hold there would be
    // someone else's to take.
    return make_error(ErrorCode::kIo, l6.error().text() + " (this host has IPv6: its migrations must be intercepted too)");
  }
  return i;
}

Interceptor::~Interceptor() { stop(); }

Status Interceptor::start() {
  if (auto st = nft_install(rule_, o_.nft); !st) return st.error();
  installed_ = true;
  std::thread(&Interceptor::accept_loop, this, listen4_.get(), AF_INET).detach();
  if (listen6_.valid()) std::thread(&Interceptor::accept_loop, this, listen6_.get(), AF_INET6).detach();
  log_line("transparent mode: " + describe());
  return {};
}

std::string Interceptor::describe() const {
  std::string uids;
  for (uid_t u : rule_.uids) uids += (uids.empty() ? "" : ",") + std::to_string(u);
  return "TCP connections by uid " + uids + " to ports " + std::to_string(rule_.port_min) + "-" +
         std::to_string(rule_.port_max) + " are carried by encmigd (nftables table inet " + kNftTable +
         ", intercept port " + std::to_string(o_.port) + (listen6_.valid() ? ", IPv4 and IPv6" : ", IPv4 only") +
         "); keys go to the destination through " + o_.peer_uri;
}

void Interceptor::stop() {
  if (stop_.exchange(true)) return;
  if (installed_) {
    if (auto st = nft_remove(o_.nft); !st) log_line("transparent mode: cannot remove the nftables table: " + st.error().text());
    else log_line("transparent mode: nftables table removed; migrations are no longer intercepted");
  }
  if (listen4_.valid()) shutdown(listen4_.get(), SHUT_RDWR);
  if (listen6_.valid()) shutdown(listen6_.get(), SHUT_RDWR);
}

json Interceptor::query() const {
  json r{{"rule", describe()}, {"ports", {rule_.port_min, rule_.port_max}}, {"intercept-port", o_.port},
         {"peer-libvirt-uri", o_.peer_uri}, {"counters", stats()}};
  std::lock_guard<std::mutex> l(recent_mu_);
  r["recent"] = recent_;
  return r;
}

json Interceptor::stats() const {
  return json{{"connections", connections_.load()},
              {"refused-not-qemu", not_qemu_.load()},
              {"encrypted", encrypted_.load()},
              {"plain-policy-disabled", plain_disabled_.load()},
              {"plain-no-encmigd", plain_no_daemon_.load()},
              {"refused-policy", refused_.load()},
              {"failed", failed_.load()},
              {"plain-relays", plain_relays_.load()},
              {"refused-over-limit", over_limit_.load()},
              {"plain-relays-open", relays_open_.load()}};
}

void Interceptor::accept_loop(int lfd, int family) {
  while (!stop_) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      return;
    }
    connections_++;
    Fd conn(fd);
    // As the relay's other sockets: QEMU's small return-path and switch-over
    // messages are not held back by Nagle.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_storage od{}, pd{};
    socklen_t ol = sizeof od, pl = sizeof pd;
    const int level = family == AF_INET ? SOL_IP : SOL_IPV6;
    const int opt = family == AF_INET ? kSoOriginalDst : kIp6tSoOriginalDst;
    if (getsockopt(fd, level, opt, &od, &ol) != 0 || getpeername(fd, reinterpret_cast<sockaddr*>(&pd), &pl) != 0) {
      not_qemu_++;
      log_line("transparent mode: a connection to the intercept port without an original destination (not redirected): closed");
      continue;
    }
    const TcpEndpoint dest = TcpEndpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&od));
    const TcpEndpoint from = TcpEndpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&pd));
    if (in_flight_.load() >= o_.max_pending) {
      over_limit_++;
      log_.log("over-limit", "transparent mode: connection from " + from.str() + " to " + dest.str() +
                                 " refused: " + std::to_string(o_.max_pending) + " connections are being identified already");
      continue;
    }
    Ticket t{dest.str(), 0};
    {
      std::lock_guard<std::mutex> l(mu_);
      t.seq = ++turns_[t.dest].issued;
    }
    in_flight_++;
    try {
      std::thread(&Interceptor::handle, this, std::move(conn), family, dest, from, t).detach();
    } catch (const std::system_error&) {  // out of threads: this connection is refused, nothing else
      in_flight_--;
      over_limit_++;
      turn_done(t);
      log_.log("over-limit", "transparent mode: connection to " + dest.str() + " refused: cannot start a thread");
    }
  }
}

void Interceptor::wait_turn(const Ticket& t) {
  std::unique_lock<std::mutex> l(mu_);
  turn_cv_.wait(l, [&] { return turns_[t.dest].placed + 1 == t.seq; });
}

void Interceptor::turn_done(const Ticket& t) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = turns_.find(t.dest);
  if (it == turns_.end()) return;
  it->second.placed = t.seq;
  if (it->second.placed == it->second.issued) turns_.erase(it);
  turn_cv_.notify_all();
}

Result<Interceptor::DomainInfo> Interceptor::domain_info(const std::string& name) {
  std::lock_guard<std::mutex> g(lv_mu_);
  for (int attempt = 0; attempt < 2; attempt++) {
    if (!lv_ || virConnectIsAlive(lv_.get()) != 1) {
      auto c = libvirt_open(o_.libvirt_uri);
      if (!c) return c.error();
      lv_ = std::move(c.value());
    }
    VirDomain dom(virDomainLookupByName(lv_.get(), name.c_str()));
    if (!dom) {
      std::string e = libvirt_error("no such domain");
      lv_.reset();
      if (attempt == 1) return make_error(ErrorCode::kIo, "domain '" + name + "': " + e);
      continue;
    }
    char uuid[VIR_UUID_STRING_BUFLEN] = {};
    if (virDomainGetUUIDString(dom.get(), uuid) != 0) return make_error(ErrorCode::kIo, "domain '" + name + "': no UUID");
    auto p = get_policy(dom.get());
    if (!p) return p.error();
    return DomainInfo{uuid, p.value()};
  }
  return make_error(ErrorCode::kIo, "domain '" + name + "': libvirt unreachable");
}

// One intercepted connection: who made it, for which domain, and to which
// migration it belongs.
void Interceptor::handle(Fd conn, int, TcpEndpoint dest, TcpEndpoint from, Ticket ticket) {
  // Whatever happens to this connection, the next one to this destination
  // gets its turn after it.
  struct Turn {
    Interceptor* self;
    const Ticket& t;
    bool taken = false;
    void take() {
      if (!taken) self->wait_turn(t);
      taken = true;
    }
    ~Turn() {
      take();
      self->turn_done(t);
      self->in_flight_--;
    }
  } turn{this, ticket};
  if (dest.port < rule_.port_min || dest.port > rule_.port_max) {
    not_qemu_++;
    log_line("transparent mode: connection from " + from.str() + " to " + dest.str() + " is outside the migration ports: closed");
    return;
  }
  // The QEMU that holds the connecting socket. Under peer-to-peer migration,
  // libvirtd connects and then passes the socket to QEMU: wait for that.
  LibvirtQemu q;
  uint32_t uid = 0;
  const auto deadline = Clock::now() + std::chrono::milliseconds(o_.owner_wait_ms);
  auto unowned_since = Clock::now();
  for (;;) {
    auto e = find_tcp_socket(from, dest);
    uid = e.uid;
    if (e.inode) q = qemu_holding(e.inode, o_.libvirt_run_dir);
    if (q.pid || stop_) break;
    if (!e.inode || Clock::now() >= deadline) break;
    // libvirtd connected for QEMU and will hand the socket over: wait for
    // that. Held by nobody we know (briefly normal: in flight between them),
    // not for long.
    if (libvirtd_holding(e.inode, o_.libvirt_run_dir)) unowned_since = Clock::now();
    else if (Clock::now() - unowned_since > std::chrono::milliseconds(500)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!q.pid) {
    not_qemu_++;
    log_line("transparent mode: connection from " + from.str() + " (uid " + std::to_string(uid) + ") to " + dest.str() +
             " refused: no libvirt domain's QEMU holds it within " + std::to_string(o_.owner_wait_ms) + " ms");
    return;
  }
  auto info = domain_info(q.domain);
  if (!info) {
    failed_++;
    log_line("transparent mode: migration of domain " + q.domain + " to " + dest.str() +
             " refused: cannot read its policy: " + info.error().text());
    return;
  }
  const std::string key = info->uuid + "|" + dest.str();
  for (;;) {
    std::shared_ptr<Group> g;
    bool fresh = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto& slot = groups_[key];
      if (slot && !slot->finished && slot->mode != info->policy.mode) {
        // The policy changed since this group decided (say, disabled to
        // required): what comes now is decided anew, never joined to it.
        std::lock_guard<std::mutex> gl(slot->mu);
        slot->finished = true;
      }
      if (!slot || slot->finished) {
        int of_domain = 0;
        for (auto& [k, other] : groups_)
          of_domain += other && other != slot && other->uuid == info->uuid;
        if (of_domain >= o_.max_groups_per_domain) {
          over_limit_++;
          if (!slot) groups_.erase(key);
          log_.log("over-limit", "transparent mode: connection of domain " + q.domain + " to " + dest.str() +
                                     " refused: it has " + std::to_string(of_domain) + " migrations in flight already");
          return;
        }
        slot = std::make_shared<Group>();
        slot->key = key;
        slot->domain = q.domain;
        slot->uuid = info->uuid;
        slot->dest = dest;
        slot->mode = info->policy.mode;
        slot->policy_explicit = info->policy.explicit_set;
        fresh = true;
      }
      g = slot;
    }
    if (fresh) std::thread(&Interceptor::decide, this, g).detach();
    turn.take();
    std::unique_lock<std::mutex> l(g->mu);
    if (g->finished) continue;  // ended just now: this connection starts the next migration
    if (g->fate == Group::Fate::kDeciding) {  // deciding, or still placing the earlier ones
      g->pending.emplace_back(std::move(conn), q.pid);
      return;
    }
    const int fate = int(g->fate);
    l.unlock();
    return dispatch(g, fate, std::move(conn), q.pid);
  }
}

// Places one connection, in its turn: the encrypted stream's index, or the
// plain relay's connection to the destination, follow QEMU's connect order.
void Interceptor::dispatch(const std::shared_ptr<Group>& g, int fate, Fd conn, pid_t qemu) {
  switch (Group::Fate(fate)) {
    case Group::Fate::kEncrypt:
      d_.data().adopt_local(g->mig, std::move(conn), wire::Kind::kMigration, qemu);
      return;
    case Group::Fate::kPlain: {
      if (relays_open_.load() >= o_.max_plain_relays) {
        over_limit_++;
        log_.log("over-limit", "transparent mode: domain " + g->domain + ": plain relay to " + g->dest.str() +
                                   " refused: " + std::to_string(o_.max_plain_relays) + " are open already");
        return;
      }
      SocketOptions so;
      so.nodelay = true;
      so.mark = kEncmigMark;  // past our own rule
      so.user_timeout_ms = 60000;
      auto out = tcp_connect(g->dest.host_port(), so, 10000);
      if (!out) {
        log_line("transparent mode: domain " + g->domain + ": plain relay to " + g->dest.str() + " failed: " + out.error().text());
        return;
      }
      plain_relays_++;
      relays_open_++;
      {
        std::lock_guard<std::mutex> l(g->mu);
        g->relays++;
      }
      try {
        std::thread(&Interceptor::relay_plain, this, g, std::move(conn), std::move(out.value())).detach();
      } catch (const std::system_error&) {
        relays_open_--;
        std::lock_guard<std::mutex> l(g->mu);
        g->relays--;
      }
      return;
    }
    case Group::Fate::kRefuse:
    case Group::Fate::kDeciding:
      return;  // closed: libvirt's migration fails, the VM keeps running here
  }
}

Result<std::shared_ptr<virConnect>> Interceptor::peer_conn(const std::string& uri) {
  {
    std::lock_guard<std::mutex> l(peers_mu_);
    auto it = peers_.find(uri);
    if (it != peers_.end() && virConnectIsAlive(it->second.get()) == 1) return it->second;
    if (it != peers_.end()) peers_.erase(it);
  }
  auto c = libvirt_open(uri);  // outside the lock: one slow destination does not hold up the others
  if (!c) return c.error();
  std::shared_ptr<virConnect> conn(c->release(), [](virConnectPtr p) { virConnectClose(p); });
  std::lock_guard<std::mutex> l(peers_mu_);
  if (peers_.size() < 256) peers_[uri] = conn;
  return conn;
}

Result<json> Interceptor::hand_off(Group& g, MigrationSecrets& sec) {
  HostPort hp = g.dest.host_port();
  const std::string host = hp.host.find(':') != std::string::npos ? "[" + hp.host + "]" : hp.host;
  std::string uri = o_.peer_uri;
  if (auto p = uri.find("%s"); p != std::string::npos) uri.replace(p, 2, host);
  auto c = peer_conn(uri);
  if (!c) return make_error(ErrorCode::kIo, "cannot reach the destination's libvirt at " + uri + ": " + c.error().text());
  g.dconn = c.value();
  json req{{"encmig", handoff::kFormat}, {"role", "destination"}, {"domain", g.domain}, {"domain-uuid", g.uuid},
           {"qemu-address", g.dest.str()}, {"transparent", true}};
  const std::string usage = std::string(handoff::kUsagePrefix) + id_hex(sec.id);
  auto h = handoff::HostSecret::define(g.dconn.get(), hp.host, usage, req, &sec, o_.allow_insecure_handoff);
  if (!h && virConnectIsAlive(g.dconn.get()) != 1) {  // a cached connection that broke unseen: once more, afresh
    {
      std::lock_guard<std::mutex> l(peers_mu_);
      peers_.erase(uri);
    }
    auto again = peer_conn(uri);
    if (!again) return make_error(ErrorCode::kIo, "cannot reach the destination's libvirt at " + uri + ": " + again.error().text());
    g.dconn = again.value();
    h = handoff::HostSecret::define(g.dconn.get(), hp.host, usage, req, &sec, o_.allow_insecure_handoff);
  }
  if (!h) return h.error();
  g.secret = std::move(h.value());
  auto a = g.secret.wait_answer(std::chrono::milliseconds(o_.handoff_timeout_ms), [this] { return stop_.load(); });
  if (!a) return a.error();
  if (json_string(a.value(), "state") != "ready")
    return make_error(ErrorCode::kNotReady, "encmigd on " + hp.host + ": " + json_string(a.value(), "detail", "not ready"));
  return a;
}

// The one decision for a new migration, then its streams.
void Interceptor::decide(std::shared_ptr<Group> g) {
  Group::Fate fate = Group::Fate::kRefuse;
  std::string why;
  const auto t0 = Clock::now();
  if (g->mode == EncryptMode::kDisabled) {
    fate = Group::Fate::kPlain;
    why = "plain text: the domain's policy is disabled";
    plain_disabled_++;
  } else {
    auto sec = MigrationSecrets::generate();
    Result<json> answer = sec ? hand_off(*g, sec.value()) : Result<json>(sec.error());
    Capability hosts = answer ? Capability::kBothCan
                       : answer.error().code == ErrorCode::kTimeout ? Capability::kNoDaemon
                                                                     : Capability::kBroken;
    const std::string why_not = answer ? "" : answer.error().text();
    switch (decide_encryption(g->mode, hosts)) {
      case EncryptOutcome::kEncrypt: {
        const HostPort hp = g->dest.host_port();
        MigrationConfig cfg;
        cfg.id = sec->id;
        cfg.role = MigrationRole::kSource;
        cfg.peer = HostPort{hp.host, uint16_t(json_int(answer.value(), "data-port", wire::kDefaultPort))};
        cfg.peer_protocol = uint16_t(json_newest_version(answer.value(), "protocol"));
        cfg.transparent = true;
        cfg.context = g->context();
        auto m = d_.arm_migration(cfg, std::move(sec.value()));
        if (m) {
          g->mig = m.value();
          fate = Group::Fate::kEncrypt;
          why = "encrypted: encmigd on the destination armed with a fresh key";
          encrypted_++;
        } else {
          why = "refused: cannot arm the migration here: " + m.error().text();
          failed_++;
        }
        break;
      }
      case EncryptOutcome::kPlain:
        fate = Group::Fate::kPlain;
        why = "plain text: " + why_not + " (no encmigd answered on the destination; policy opportunistic allows that)";
        plain_no_daemon_++;
        break;
      case EncryptOutcome::kRefuse:
        why = "refused (policy required): " + why_not;
        refused_++;
        break;
      case EncryptOutcome::kFail:
        why = "refused: " + why_not + "; only a destination without encmigd may get plain text, and this is not that case";
        failed_++;
        break;
    }
  }
  const long ms = long(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
  log_line("transparent mode: migration of domain " + g->domain + " to " + g->dest.str() +
           (g->mig ? " (" + g->mig->id() + ")" : "") + ": " + why + " [" + g->context() + ", decided in " +
           std::to_string(ms) + " ms]");
  {
    static const char* const kFate[] = {"deciding", "encrypted", "plain", "refused"};
    json d{{"time", std::time(nullptr)}, {"domain", g->domain}, {"uuid", g->uuid}, {"destination", g->dest.str()},
           {"policy", encrypt_mode_name(g->mode)}, {"policy-explicit", g->policy_explicit},
           {"decision", kFate[int(fate)]}, {"why", why}, {"decided-ms", ms}};
    if (g->mig) d["id"] = g->mig->id();
    std::lock_guard<std::mutex> l(recent_mu_);
    recent_.push_back(d);
    if (recent_.size() > kRecent) recent_.erase(recent_.begin());
  }
  if (fate != Group::Fate::kEncrypt) g->secret.undefine();
  // Place what waited, in order; connections arriving meanwhile queue behind
  // them. The fate is published only once the queue is empty.
  for (;;) {
    std::vector<std::pair<Fd, pid_t>> pending;
    {
      std::lock_guard<std::mutex> l(g->mu);
      if (g->pending.empty()) {
        g->fate = fate;
        g->why = why;
        g->decided = Clock::now();
        break;
      }
      pending.swap(g->pending);
    }
    for (auto& [fd, pid] : pending) dispatch(g, int(fate), std::move(fd), pid);
  }
  if (fate == Group::Fate::kEncrypt) return watch(g);
  if (fate == Group::Fate::kPlain) {
    bool none;
    {
      std::lock_guard<std::mutex> l(g->mu);
      none = g->relays == 0;
    }
    if (none) finish(g);  // every relay failed to connect: nothing will finish it
  }
  // A refused migration is over: QEMU sees its connection closed and libvirt
  // fails the job. A connection that comes later (a retry, or a channel of the
  // failed job) gets a decision of its own.
  if (fate == Group::Fate::kRefuse) finish(g);
}

// An encrypted migration ends when every stream that opened has closed.
// Meanwhile, as `encmig migrate` does (common/switchover.h), QEMU's downtime
// limit is lowered by the time what this daemon still holds takes at QEMU's
// own bandwidth estimate, and given back if the VM is still here at the end.
void Interceptor::watch(std::shared_ptr<Group> g) {
  auto& m = *g->mig;
  VirDomain dom;
  std::optional<SwitchoverLimit> limit;
  {
    std::lock_guard<std::mutex> l(lv_mu_);
    if (lv_) dom.reset(virDomainLookupByUUIDString(lv_.get(), g->uuid.c_str()));
    unsigned long long asked = 0;
    if (dom && virDomainMigrateGetMaxDowntime(dom.get(), &asked, 0) == 0) limit.emplace(int(asked));
    virResetLastError();
  }
  while (!stop_ && !terminal(m.state())) {
    if (m.state() == MigrationState::kActive && m.streams_opened() > 0 && m.streams_open() == 0) break;
    if (m.state() == MigrationState::kArmed && Clock::now() - g->decided > std::chrono::seconds(60)) break;
    if (limit && m.state() == MigrationState::kActive) {
      int type = 0, n = 0;
      virTypedParameterPtr p = nullptr;
      unsigned long long bps = 0;
      if (virDomainGetJobStats(dom.get(), &type, &p, &n, 0) == 0) {
        virTypedParamsGetULLong(p, n, VIR_DOMAIN_JOB_MEMORY_BPS, &bps);
        virTypedParamsFree(p, n);
      }
      virResetLastError();
      if (int want = limit->next(m.link_totals().in_flight, double(bps)); want > 0)
        if (virDomainMigrateSetMaxDowntime(dom.get(), (unsigned long long)want, 0) == 0) limit->applied(want);
      virResetLastError();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (limit && limit->changed() && virDomainIsActive(dom.get()) == 1)  // the VM is still here: give the limit back
    (void)virDomainMigrateSetMaxDowntime(dom.get(), (unsigned long long)limit->asked(), 0);
  virResetLastError();
  {
    std::lock_guard<std::mutex> l(g->mu);
    g->finished = true;  // from here on, a connection of this domain to this port is a new migration
  }
  (void)d_.end_migration(m.id(), false, "no stream of it was ever connected");
  finish(g);
}

void Interceptor::relay_plain(std::shared_ptr<Group> g, Fd conn, Fd out) {
  int a = conn.get(), b = out.get();
  try {
    std::thread back([a, b] { pump(b, a); });
    pump(a, b);
    back.join();
  } catch (const std::system_error&) {
    log_line("transparent mode: domain " + g->domain + ": plain relay to " + g->dest.str() + " failed: cannot start a thread");
  }
  relays_open_--;
  bool last;
  {
    std::lock_guard<std::mutex> l(g->mu);
    last = --g->relays == 0;
    if (last) g->finished = true;
  }
  if (last) finish(g);
}

void Interceptor::finish(const std::shared_ptr<Group>& g) {
  {
    std::lock_guard<std::mutex> l(g->mu);
    g->finished = true;
  }
  g->secret.undefine();
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = groups_.find(g->key);
    if (it != groups_.end() && it->second == g) groups_.erase(it);
  }
}

}  // namespace encmig
