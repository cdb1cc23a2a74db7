// The handshake over real sockets, for both roles and for the capability
// probe: the one place that turns a connected TCP socket into an
// EncryptedChannel (as QEMU's QIOChannelTLS owns its handshake). The state
// machines themselves (migration/handshake.h) never touch a socket.
//
// The server side is the data port's front door, HandshakeAcceptor: one
// thread runs every handshake up to key confirmation, event-driven, under
// limits, so that an unauthenticated peer costs a few hundred bytes and never
// a thread. Only a connection whose peer proved it holds the migration key
// leaves it; nothing an unauthenticated peer does reaches a migration.
//
// Every handshake runs against one deadline for the whole exchange, not a
// timeout per read, so a peer that drips bytes cannot hold a connection.
#pragma once
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "migration/channel.h"
#include "migration/handshake.h"
#include "migration/log.h"
#include "migration/socket.h"

namespace encmig {

// Client role (source daemon): sends the hello, verifies the server's
// confirmation, sends its own, and returns the channel named `name`, which
// then owns the socket. On failure `tcp` still owns it.
Result<std::unique_ptr<EncryptedChannel>> client_handshake(Fd&& tcp, MigrationSecrets secrets, wire::Kind kind,
                                                           uint32_t index, std::string name, Deadline deadline,
                                                           uint32_t flags = 0);

// Asks a daemon's data port what it can do (docs/protocol.md, section 9).
Result<wire::ProbeReply> probe_daemon(const HostPort& hp, int timeout_ms);

// Limits on unauthenticated connections. When one is reached, the oldest
// unauthenticated connection it counts is dropped to make room: a flood
// cannot lock out a peer whose handshake takes one round trip.
struct AcceptorLimits {
  int handshake_timeout_ms = 10000;  // the whole handshake, from accept to confirmation
  int max_pending = 1024;            // unauthenticated connections in all
  int max_pending_per_address = 256;  // from one source address
  int max_pending_per_migration = 64;  // that sent a valid hello for one armed migration
};

class HandshakeAcceptor {
 public:
  struct Hooks {
    // The secrets of the armed destination migration a ClientHello names, or
    // the error to answer with an Alert (kUnknownMigration, ...).
    std::function<Result<MigrationSecrets>(const wire::Hello&)> secrets_for;
    // A peer completed key confirmation: the channel is theirs to run.
    std::function<void(const wire::Hello&, std::unique_ptr<EncryptedChannel>, const std::string& from)> authenticated;
    // Answer to a probe hello.
    wire::ProbeReply probe_reply;
  };

  // Refusal classes, counted and logged (rate-limited) one line per class.
  enum Refusal { kTimedOut, kMalformedHello, kUnknownMigration, kKeyConfirmation, kEvicted, kPeerClosed,
                 kAcceptFailed, kRefusalCount };
  static const char* refusal_name(Refusal r);

  static Result<std::unique_ptr<HandshakeAcceptor>> create(Fd listener, SocketOptions socket, AcceptorLimits limits,
                                                           Hooks hooks);
  ~HandshakeAcceptor();
  // Runs the accept loop on the calling thread until stop().
  void run();
  void stop();
  // From any thread: the daemon needs descriptors for authenticated work
  // (the destination QEMU's socket) and the process is at its limit. The
  // loop drops the `n` oldest unauthenticated connections and pauses
  // accepting briefly, so the freed descriptors are not taken again at once.
  void make_room(int n);

  uint64_t refused(Refusal r) const { return refused_[r].load(); }
  uint64_t probes() const { return probes_.load(); }
  uint64_t alerts_sent() const { return alerts_.load(); }
  size_t pending() const { return npending_.load(); }

 private:
  struct Conn;
  HandshakeAcceptor() = default;
  void accept_ready();
  void on_readable(uint64_t key);
  // Drops the connection; with an alert first when `alert` is set.
  void refuse(uint64_t key, Refusal why, const std::string& detail, ErrorCode alert = ErrorCode::kOk,
              const std::string& alert_text = "");
  void close_conn(uint64_t key);
  bool evict_oldest(const std::function<bool(const Conn&)>& counts);
  void expire(std::chrono::steady_clock::time_point now);

  Fd listen_, epoll_, wake_;
  SocketOptions socket_;
  AcceptorLimits limits_;
  Hooks hooks_;
  std::map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::deque<uint64_t> order_;  // accept order (oldest first); stale keys are skipped
  std::map<std::string, int> per_address_, per_migration_;
  uint64_t next_key_ = 1;
  std::chrono::steady_clock::time_point accept_paused_until_{};
  std::atomic<bool> stop_{false};
  std::atomic<int> room_wanted_{0};
  std::atomic<uint64_t> refused_[kRefusalCount]{}, probes_{0}, alerts_{0};
  std::atomic<size_t> npending_{0};
  RateLimitedLog log_;
};

}  // namespace encmig
