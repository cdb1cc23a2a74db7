#include "migration/data_plane.h"

#include "migration/tcp_owner.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "migration/log.h"
#include "migration/stream_link.h"

namespace encmig {

namespace {

using Clock = std::chrono::steady_clock;

bool out_of_descriptors(const Error& e) {
  return e.detail.find(errno_text(EMFILE)) != std::string::npos || e.detail.find(errno_text(ENFILE)) != std::string::npos;
}

// A reconnect's TCP connect, at most (the first connect gets the handshake timeout).
constexpr int kReconnectConnectMs = 2000;

// Closes a registered stream when its handler leaves, on every path.
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
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(l->get(), reinterpret_cast<sockaddr*>(&ss), &len);
  d->port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  d->pool_ = std::make_unique<BufferPool>(d->o_.resend_budget ? d->o_.resend_budget : BufferPool::default_budget());
  DataPlane* self = d.get();
  HandshakeAcceptor::Hooks hooks;
  hooks.secrets_for = [self](const wire::Hello& h) { return self->secrets_for(h); };
  hooks.authenticated = [self](const wire::Hello& h, std::unique_ptr<EncryptedChannel> ch, const std::string& from) {
    std::thread(&DataPlane::handle_authenticated, self, h, std::move(ch), from).detach();
  };
  hooks.probe_reply.software = d->o_.software;
  auto a = HandshakeAcceptor::create(std::move(l.value()), d->o_.socket, d->o_.acceptor, std::move(hooks));
  if (!a) return a.error();
  d->acceptor_ = std::move(a.value());
  return d;
}

void DataPlane::start() {
  std::thread([this] { acceptor_->run(); }).detach();
  std::thread(&DataPlane::reaper_loop, this).detach();
}

void DataPlane::stop() {
  stop_ = true;
  acceptor_->stop();
}

// ---- the migration table ----

Status DataPlane::add(std::shared_ptr<Migration> m) {
  std::lock_guard<std::mutex> g(mu_);
  if (migrations_.count(m->id())) return make_error(ErrorCode::kAlreadyArmed, "migration " + m->id() + " is already armed");
  int live = 0;
  for (auto& [k, v] : migrations_) live += !terminal(v->state());
  if (live >= o_.max_migrations)
    return make_error(ErrorCode::kLimit, "too many migrations armed at once (" + std::to_string(live) + ", the limit is " +
                                             std::to_string(o_.max_migrations) + ")");
  // Every stream takes its minimum from the resend budget when it starts:
  // refuse now what could not start, rather than fail it half-way.
  const uint64_t need = uint64_t(std::max(1, m->config().expected_streams)) * BufferPool::kMinChunks * BufferPool::kChunk;
  if (pool_->free_bytes() < need) {
    refused_budget_++;
    log_.log("resend-budget", "migration " + m->id() + " refused: the resend budget has " +
                                  std::to_string(pool_->free_bytes() >> 20) + " MiB free of " +
                                  std::to_string(pool_->budget() >> 20) + " MiB, it needs " + std::to_string(need >> 20) +
                                  " (--resend-budget)");
    return make_error(ErrorCode::kLimit, "the resend budget is spent (" + std::to_string(pool_->free_bytes() >> 20) +
                                             " MiB free of " + std::to_string(pool_->budget() >> 20) + " MiB)");
  }
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

void DataPlane::retire(std::shared_ptr<Migration> m) {
  if (terminal(m->state())) return;
  std::lock_guard<std::mutex> g(mu_);
  retired_.push_back(std::move(m));
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
  Stats s;
  {
    std::lock_guard<std::mutex> g(mu_);
    s.open = migrations_.size();
    s.failures = failures_;
  }
  // Outside the table's lock: a failing migration holds its own lock while
  // it counts the failure here.
  std::vector<std::shared_ptr<Migration>> all = list();
  {
    std::lock_guard<std::mutex> g(mu_);
    all.insert(all.end(), retired_.begin(), retired_.end());
  }
  for (auto& m : all) s.keys_held += m->holds_key();
  s.rejected_connections = acceptor_->alerts_sent();
  s.probes = acceptor_->probes();
  s.pending = acceptor_->pending();
  s.local_refused = local_refused_;
  s.preconnect_used = preconnect_used_;
  s.preconnect_unused = preconnect_unused_;
  s.refused_budget = refused_budget_;
  s.windows_capped = pool_->capped();
  s.buffers_unlocked = LockedRegion::unlocked();
  for (int r = 0; r < HandshakeAcceptor::kRefusalCount; r++)
    s.refused[HandshakeAcceptor::refusal_name(HandshakeAcceptor::Refusal(r))] =
        acceptor_->refused(HandshakeAcceptor::Refusal(r));
  return s;
}

// Expiry, stalls and the end's grace, for every migration; and the table
// forgets migrations that ended long ago and were never collected.
void DataPlane::reaper_loop() {
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    auto now = std::chrono::steady_clock::now();
    std::vector<std::shared_ptr<Migration>> all = list();
    {
      std::lock_guard<std::mutex> g(mu_);
      all.insert(all.end(), retired_.begin(), retired_.end());
    }
    for (auto& m : all) m->tick(now, o_.timeouts);
    std::vector<std::shared_ptr<Migration>> dropped;
    {
      std::lock_guard<std::mutex> g(mu_);
      std::erase_if(retired_, [&](const std::shared_ptr<Migration>& m) {
        if (!terminal(m->state())) return false;
        dropped.push_back(m);
        return true;
      });
      for (auto it = migrations_.begin(); it != migrations_.end();) {
        auto& m = it->second;
        if (terminal(m->state()) && now - m->ended_at() > o_.timeouts.keep_ended) {
          dropped.push_back(m);
          it = migrations_.erase(it);
        } else {
          ++it;
        }
      }
      // Connections made at arm and not used close when their migration
      // ends; the counts stay readable as long as the migration is.
      for (auto it = preconnected_.begin(); it != preconnected_.end();) {
        auto m = it->second.mig.lock();
        if (!m || terminal(m->state())) it->second.conns->close_all();
        if (!m || !migrations_.count(it->first))
          it = preconnected_.erase(it);
        else
          ++it;
      }
    }
  }
}

// ---- the destination role: authenticated streams from the data port ----

Result<MigrationSecrets> DataPlane::secrets_for(const wire::Hello& hello) {
  auto mig = find(id_hex(hello.migration_id));
  if (!mig || mig->config().role != MigrationRole::kDestination)
    return make_error(ErrorCode::kUnknownMigration, "no such migration armed here");
  return mig->secrets();
}

std::shared_ptr<StreamLink> DataPlane::make_link(const std::shared_ptr<Migration>& mig, Stream& s, MigrationRole role) {
  std::weak_ptr<Migration> weak = mig;
  const wire::Kind kind = s.kind;
  const uint32_t index = s.index;
  auto secret = [weak, kind, index](Direction d, const wire::Salt& salt) -> Result<Secret> {
    auto m = weak.lock();
    if (!m) return make_error(ErrorCode::kCancelled, "the migration ended");
    return m->stream_secret(kind, index, d, salt);
  };
  return std::make_shared<StreamLink>(s, role, o_.link, std::move(secret), *pool_);
}

void DataPlane::handle_authenticated(wire::Hello hello, std::unique_ptr<EncryptedChannel> ch, std::string from) {
  const std::string sname = ch->name();
  auto mig = find(id_hex(hello.migration_id));
  if (!mig) {
    ch->send_error(ErrorCode::kUnknownMigration, "migration ended");
    return;
  }
  // Every connection starts with the client's START. The source may have
  // made this one when its migration was armed, before its QEMU connected:
  // nothing happens here until then.
  auto start = await_start(*mig, hello, *ch);
  if (!start) {
    const ErrorCode c = start.error().code;
    if (c == ErrorCode::kResumeRefused || c == ErrorCode::kPeerError || c == ErrorCode::kBadRecordType || c == ErrorCode::kAuthFailed ||
        c == ErrorCode::kCounterMismatch || c == ErrorCode::kBadReserved || c == ErrorCode::kRecordTooLarge) {
      // The peer holds the key and broke the protocol: the migration fails.
      if (ch->send_error(c, sname + ": " + start.error().message())) ch->linger(200);
      mig->fail(c, sname, start.error().message() + " (from " + from + ")");
    }
    return;  // otherwise: closed unused, replaced by a newer connection, or the migration ended
  }
  if (ch->resumed()) {
    // The source resumes a stream after a broken connection: its link takes
    // the new connection; nothing else changes.
    if (auto link = mig->find_link(hello.kind, hello.stream_index)) return link->offer(std::move(ch), start.value());
    // Unless the stream's first connection (made at arm) broke before any
    // record reached us: nothing was delivered either way, and the stream
    // starts here, at position 0, as a new stream.
    if (hello.kind != wire::Kind::kMigration || mig->has_stream(hello.kind, hello.stream_index) ||
        terminal(mig->state()) || start->position != 0) {
      log_.log("resume-refused", "migration " + mig->id() + " stream " + sname + ": resume from " + from +
                                     " refused: no such stream");
      if (ch->send_error(ErrorCode::kResumeRefused, "no stream " + sname + " to resume")) ch->linger(200);
      return;
    }
  } else if (start->position != 0) {
    const std::string why = "a new stream's START says position " + std::to_string(start->position);
    if (ch->send_error(ErrorCode::kResumeRefused, sname + ": " + why)) ch->linger(200);
    return mig->fail(ErrorCode::kResumeRefused, sname, why + " (from " + from + ")");
  }
  // The peer proved it holds the key: what it does wrong now is the migration's failure.
  auto stream = mig->add_stream(hello.kind, hello.stream_index, o_.timeouts);
  if (!stream) {
    if (ch->send_error(stream.error().code, sname + ": " + stream.error().message())) ch->linger(200);
    mig->fail(stream.error().code, sname, stream.error().message() + " (from " + from + ")");
    return;
  }
  std::shared_ptr<Stream> s = stream.value();
  auto link = make_link(mig, *s, MigrationRole::kDestination);
  StreamClosedOnExit closed{*mig, s};
  mig->attach_link(s, link);
  auto fail = [&](const Error& e) { mig->fail(e.code, sname, e.message()); };

  // Hand the stream to QEMU only now, and in the source's order.
  const MigrationConfig& cfg = mig->config();
  const bool ordered = hello.kind == wire::Kind::kMigration;
  if (ordered) {
    if (auto st = mig->wait_turn(hello.kind, hello.stream_index, std::chrono::milliseconds(o_.order_timeout_ms)); !st)
      return fail(st.error());
  }
  const std::string& path = ordered ? cfg.qemu_path : cfg.qemu_nbd_path;
  pid_t qemu = 0;
  auto connect_qemu = [&]() -> Result<Fd> {
    if (cfg.transparent)
      return connect_qemu_listener(cfg.qemu_tcp, cfg.local_peer.libvirt_domain, cfg.local_peer.libvirt_run_dir,
                                   o_.acceptor.handshake_timeout_ms, &qemu);
    if (path.empty()) return make_error(ErrorCode::kInvalidArgument, "no local socket for " + sname);
    return connect_local(path, cfg.local_peer, &qemu);
  };
  auto local = connect_qemu();
  // At the descriptor limit (a flood of unauthenticated connections holds
  // them), authenticated work comes first: make room, and try again.
  for (int tries = 0; !local && out_of_descriptors(local.error()) && tries < 25; tries++) {
    acceptor_->make_room(4);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    local = connect_qemu();
  }
  if (ordered) mig->turn_done(hello.kind);
  if (!local) {
    if (ch->send_error(local.error().code, sname + ": destination QEMU: " + local.error().text())) ch->linger(200);
    return fail(local.error());
  }
  s->qemu = ProcessWatch::of(qemu);
  mig->attach_local(s, std::move(local.value()));
  if (auto st = link->run(std::move(ch), &start.value(), nullptr); !st) fail(st.error());
}

// The client's START: the first record of every connection. A connection
// made at arm may wait for it as long as its migration lasts (the source
// sends it when its QEMU connects); at most one per stream waits: a newer one
// for the same stream (the source gave up on the first, found closed or too
// old) replaces it. Any other connection has the silence timeout.
Result<wire::Start> DataPlane::await_start(const Migration& mig, const wire::Hello& hello, EncryptedChannel& ch) {
  const bool early = hello.kind == wire::Kind::kMigration && !ch.resumed();
  const auto key = std::make_tuple(mig.id(), hello.kind, hello.stream_index);
  uint64_t mine;
  {
    std::lock_guard<std::mutex> g(mu_);
    mine = awaiting_[key] = ++awaiting_gen_;
  }
  auto done = [&] {
    std::lock_guard<std::mutex> g(mu_);
    auto it = awaiting_.find(key);
    if (it != awaiting_.end() && it->second == mine) awaiting_.erase(it);
  };
  const auto deadline = Clock::now() + std::chrono::milliseconds(o_.link.silence_ms);
  EncryptedChannel::Batch b;
  for (;;) {
    auto st = ch.receive(b, nullptr, 250);
    if (st && b.start) {
      done();
      return b.start_info;
    }
    if (!st && st.error().code != ErrorCode::kTimeout) {
      done();
      return st.error();
    }
    if (!st && !early && Clock::now() >= deadline) {
      done();
      return make_error(ErrorCode::kTimeout, "no START within " + std::to_string(o_.link.silence_ms) + " ms");
    }
    if (terminal(mig.state())) {
      done();
      return make_error(ErrorCode::kCancelled, "the migration ended");
    }
    std::lock_guard<std::mutex> g(mu_);
    auto it = awaiting_.find(key);
    if (it == awaiting_.end() || it->second != mine)  // find(): the newer waiter may have erased the entry
      return make_error(ErrorCode::kCancelled, "replaced by a newer connection for the stream");
  }
}

// ---- the source role: QEMU's connections to the local sockets ----

Status DataPlane::listen_local(const std::shared_ptr<Migration>& mig) {
  const MigrationConfig& cfg = mig->config();
  // One version is spoken: a destination the controller says speaks another
  // cannot take this migration. Say so now, not as a failed handshake later.
  if (cfg.peer_protocol != 0 && cfg.peer_protocol != wire::kVersion)
    return make_error(ErrorCode::kBadVersion, "the destination's encmigd speaks protocol version " +
                                                  std::to_string(cfg.peer_protocol) + "; this one speaks version " +
                                                  std::to_string(wire::kVersion) + " only: upgrade both hosts");
  // Connect the migration streams now, while QEMU has not yet: the
  // destination connects to its QEMU only on a stream's START, which we send
  // when our QEMU connects.
  if (!cfg.listen_path.empty()) {
    std::weak_ptr<Migration> weak = mig;
    auto conns = Preconnected::start(uint32_t(std::max(1, cfg.expected_streams)), [this, weak](uint32_t index) {
      auto m = weak.lock();
      if (!m) return Result<std::unique_ptr<EncryptedChannel>>(make_error(ErrorCode::kCancelled, "the migration ended"));
      return connect_stream(m, wire::Kind::kMigration, index, 0, o_.acceptor.handshake_timeout_ms);
    });
    std::lock_guard<std::mutex> g(mu_);
    auto& slot = preconnected_[mig->id()];
    if (slot.conns) slot.conns->close_all();  // an earlier migration's, with the same id
    slot = Early{mig, conns};
  }
  for (auto [path, kind] : {std::pair{cfg.listen_path, wire::Kind::kMigration}, std::pair{cfg.nbd_listen_path, wire::Kind::kNbd}}) {
    if (path.empty()) continue;
    auto l = listen_local_socket(path, 0660, cfg.socket_gid);
    if (!l) return l.error();
    int lfd = l->fd.get();
    mig->add_listener(std::move(l.value()));
    std::thread(&DataPlane::accept_local_loop, this, mig, lfd, kind).detach();
  }
  return {};
}

Preconnected::Counts DataPlane::preconnected(const std::string& id) {
  std::shared_ptr<Preconnected> conns;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = preconnected_.find(id);
    if (it == preconnected_.end()) return {};
    conns = it->second.conns;
  }
  return conns->counts();
}

std::unique_ptr<EncryptedChannel> DataPlane::take_preconnected(const Migration& mig, const Stream& s) {
  if (s.kind != wire::Kind::kMigration) return nullptr;
  std::shared_ptr<Preconnected> conns;
  {
    std::lock_guard<std::mutex> g(mu_);
    auto it = preconnected_.find(mig.id());
    if (it == preconnected_.end()) return nullptr;
    conns = it->second.conns;
  }
  std::string why;
  auto ch = conns->take(s.index, &why);
  if (ch) {
    preconnect_used_++;
  } else if (!why.empty()) {
    preconnect_unused_++;
    log_line("migration " + mig.id() + " stream " + s.name + ": the connection made at arm is not used (" + why +
             "); connecting now");
  }
  return ch;
}

Result<std::unique_ptr<EncryptedChannel>> DataPlane::connect_stream(const std::shared_ptr<Migration>& mig, wire::Kind kind,
                                                                    uint32_t index, uint32_t flags, int connect_ms) {
  Deadline deadline = deadline_in(o_.acceptor.handshake_timeout_ms);
  auto tcp = tcp_connect(mig->config().peer, o_.socket, std::min(connect_ms, o_.acceptor.handshake_timeout_ms));
  if (!tcp) return tcp.error();
  auto secrets = mig->secrets();
  if (!secrets) return secrets.error();
  return client_handshake(std::move(tcp.value()), std::move(secrets.value()), kind, index, mig->name_of(kind, index),
                          deadline, flags);
}

void DataPlane::accept_local_loop(std::shared_ptr<Migration> mig, int listen_fd, wire::Kind kind) {
  for (;;) {
    int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      return;  // the migration ended and shut the listener down
    }
    Fd local(fd);
    // Only the migrating domain's QEMU (or libvirtd for it) may feed this migration.
    pid_t qemu = 0;
    if (auto st = check_local_peer(fd, mig->config().local_peer, &qemu); !st) {
      local_refused_++;
      log_.log("local-peer-refused", "migration " + mig->id() + ": local connection refused: " + st.error().detail);
      continue;
    }
    adopt_local(mig, std::move(local), kind, qemu);
  }
}

void DataPlane::adopt_local(const std::shared_ptr<Migration>& mig, Fd local, wire::Kind kind, pid_t qemu) {
  // Indexes follow accept order, which is QEMU's connect order.
  uint32_t index = mig->next_source_index(kind);
  auto s = mig->add_stream(kind, index, o_.timeouts);
  if (!s) {
    if (!terminal(mig->state())) mig->fail(s.error().code, mig->name_of(kind, index), s.error().message());
    return;
  }
  s.value()->qemu = ProcessWatch::of(qemu);
  mig->attach_local(s.value(), std::move(local));
  std::thread(&DataPlane::handle_outgoing, this, mig, s.value()).detach();
}

// The source's side of one stream: its first connection (made at arm, or now),
// then, when one breaks, connections that resume the stream.
void DataPlane::handle_outgoing(std::shared_ptr<Migration> mig, std::shared_ptr<Stream> s) {
  auto link = make_link(mig, *s, MigrationRole::kSource);
  StreamClosedOnExit closed{*mig, s};
  auto fail = [&](const Error& e) { mig->fail(e.code, s->name, e.message()); };
  mig->attach_link(s, link);

  auto connect = [this, mig, s](uint32_t flags, int connect_ms) {
    return connect_stream(mig, s->kind, s->index, flags, connect_ms);
  };
  Result<std::unique_ptr<EncryptedChannel>> first = take_preconnected(*mig, *s);
  if (!first.value()) first = connect(0, o_.acceptor.handshake_timeout_ms);
  if (!first) return fail(first.error());
  // A reconnect's SYN sent into an outage would wait for the kernel's next
  // SYN retransmission (1, 3, 7 s...) after the path heals: give up on it
  // after 2 s and send a fresh one.
  StreamLink::Reconnect reconnect = [connect] { return connect(wire::kHelloFlagResume, kReconnectConnectMs); };
  if (auto st = link->run(std::move(first.value()), nullptr, reconnect); !st) fail(st.error());
}

}  // namespace encmig
