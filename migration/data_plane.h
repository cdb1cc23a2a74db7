// encmigd's data plane: the data port that peer daemons connect to
// (destination role), the UNIX listeners that QEMU connects to (source role),
// one relay per stream, and the table of armed migrations that both sides
// look migrations up in. The control plane (daemon/) arms and ends
// migrations; everything that touches VM data is here.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "migration/buffer_pool.h"
#include "migration/handshake_io.h"
#include "migration/preconnect.h"
#include "migration/stream_link.h"
#include "migration/session.h"
#include "migration/socket.h"

namespace encmig {

struct DataPlaneOptions {
  HostPort listen{"0.0.0.0", wire::kDefaultPort};
  SocketOptions socket;              // every data connection, both directions
  AcceptorLimits acceptor;           // unauthenticated connections on the data port
  int order_timeout_ms = 30000;      // how long a stream waits for a lower-indexed one
  MigrationTimeouts timeouts;        // expiry, stall, end grace
  LinkOptions link;                  // window, keepalive, outage budget
  int max_migrations = 64;           // migrations armed and not yet ended, at once
  uint64_t resend_budget = 0;        // bytes of resend logs, daemon-wide (0: BufferPool::default_budget())
  std::string software;              // in probe replies
};

class DataPlane {
 public:
  static Result<std::unique_ptr<DataPlane>> create(DataPlaneOptions o);
  // Starts the data port's accept thread.
  void start();
  // Stops accepting on the data port.
  void stop();
  uint16_t port() const { return port_; }
  const DataPlaneOptions& options() const { return o_; }

  // ---- the table of armed migrations, by id ----
  // kAlreadyArmed if the id is taken; kLimit beyond max_migrations, or when
  // the resend budget cannot give each of its streams its minimum.
  Status add(std::shared_ptr<Migration> m);
  const BufferPool& pool() const { return *pool_; }
  std::shared_ptr<Migration> find(const std::string& id);
  std::shared_ptr<Migration> take(const std::string& id);  // removes it
  // A migration taken out of the table whose streams are still finishing:
  // the data plane keeps ticking it until it reaches its outcome.
  void retire(std::shared_ptr<Migration> m);
  // Every migration, or the one with this id.
  std::vector<std::shared_ptr<Migration>> list(const std::string& id = "");

  // Source role: listens on the migration's UNIX socket paths and relays
  // every connection QEMU makes there to the peer daemon.
  Status listen_local(const std::shared_ptr<Migration>& m);

  // Source, transparent mode: relays a connection QEMU (or libvirtd for it)
  // made over TCP and encmigd intercepted, as the migration's next stream of
  // `kind`; `qemu` is the QEMU that holds it.
  void adopt_local(const std::shared_ptr<Migration>& m, Fd local, wire::Kind kind, pid_t qemu);

  // Source: the connections made when `id` was armed (none: all zero).
  Preconnected::Counts preconnected(const std::string& id);

  // Counters for query-stats.
  void count_failure(ErrorCode code);
  struct Stats {
    uint64_t rejected_connections = 0, probes = 0, local_refused = 0;
    // Source: streams that used a connection made at arm, and those that
    // could not (it failed, went stale or was closed) and connected late.
    uint64_t preconnect_used = 0, preconnect_unused = 0;
    // Migrations refused at arm because the resend budget was spent; times a
    // stream's window stopped growing at the budget; buffers not locked.
    uint64_t refused_budget = 0, windows_capped = 0, buffers_unlocked = 0;
    size_t open = 0, pending = 0;
    size_t keys_held = 0;  // migrations whose key is not wiped yet (armed or finishing)
    std::map<std::string, uint64_t> failures;  // migrations failed, by error name
    std::map<std::string, uint64_t> refused;   // unauthenticated connections refused, by class
  };
  Stats stats();

 private:
  DataPlane() = default;
  Result<MigrationSecrets> secrets_for(const wire::Hello& hello);
  void handle_authenticated(wire::Hello hello, std::unique_ptr<EncryptedChannel> ch, std::string from);
  void accept_local_loop(std::shared_ptr<Migration> mig, int listen_fd, wire::Kind kind);
  void handle_outgoing(std::shared_ptr<Migration> mig, std::shared_ptr<Stream> stream);
  Result<std::unique_ptr<EncryptedChannel>> connect_stream(const std::shared_ptr<Migration>& mig, wire::Kind kind,
                                                           uint32_t index, uint32_t flags, int connect_ms);
  std::unique_ptr<EncryptedChannel> take_preconnected(const Migration& mig, const Stream& s);
  Result<wire::Start> await_start(const Migration& mig, const wire::Hello& hello, EncryptedChannel& ch);
  std::shared_ptr<StreamLink> make_link(const std::shared_ptr<Migration>& mig, Stream& s, MigrationRole role);
  void reaper_loop();

  DataPlaneOptions o_;
  std::unique_ptr<HandshakeAcceptor> acceptor_;
  std::unique_ptr<BufferPool> pool_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Migration>> migrations_;
  std::vector<std::shared_ptr<Migration>> retired_;
  struct Early {
    std::weak_ptr<Migration> mig;
    std::shared_ptr<Preconnected> conns;
  };
  std::map<std::string, Early> preconnected_;  // source: connections made at arm, by migration id
  // Destination: the newest connection waiting for its START, per migration
  // and stream (kind, index): an older one for the same stream is dropped.
  std::map<std::tuple<std::string, wire::Kind, uint32_t>, uint64_t> awaiting_;
  uint64_t awaiting_gen_ = 0;
  std::map<std::string, uint64_t> failures_;
  std::atomic<uint64_t> local_refused_{0}, preconnect_used_{0}, preconnect_unused_{0}, refused_budget_{0};
  std::atomic<bool> stop_{false};
  RateLimitedLog log_;
};

}  // namespace encmig
