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
#include <vector>

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
  LinkOptions link;                  // window, keepalive, outage budget (protocol version 2)
  int max_migrations = 64;           // migrations armed and not yet ended, at once
  uint16_t max_version = wire::kVersion;  // the newest protocol version spoken (1: no resume)
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
  // kAlreadyArmed if the id is taken, kLimit beyond max_migrations.
  Status add(std::shared_ptr<Migration> m);
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

  // Source: the connections made when `id` was armed (none: all zero).
  Preconnected::Counts preconnected(const std::string& id);

  // Counters for query-stats.
  void count_failure(ErrorCode code);
  struct Stats {
    uint64_t rejected_connections = 0, probes = 0, local_refused = 0;
    // Source: streams that used a connection made at arm, and those that
    // could not (it failed, went stale or was closed) and connected late.
    uint64_t preconnect_used = 0, preconnect_unused = 0;
    size_t open = 0, pending = 0;
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
                                                           uint32_t index, uint16_t version, uint32_t flags,
                                                           int connect_ms);
  std::unique_ptr<EncryptedChannel> take_preconnected(const Migration& mig, const Stream& s);
  bool await_first_record(const Migration& mig, const wire::Hello& hello, const EncryptedChannel& ch);
  Status start_at_resume(EncryptedChannel& ch);
  void reaper_loop();

  DataPlaneOptions o_;
  std::unique_ptr<HandshakeAcceptor> acceptor_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Migration>> migrations_;
  std::vector<std::shared_ptr<Migration>> retired_;
  struct Early {
    std::weak_ptr<Migration> mig;
    std::shared_ptr<Preconnected> conns;
  };
  std::map<std::string, Early> preconnected_;  // source: connections made at arm, by migration id
  // Destination: the newest connection waiting for its first record, per
  // migration and stream index (an older one for the same stream is dropped).
  std::map<std::pair<std::string, uint32_t>, uint64_t> awaiting_;
  uint64_t awaiting_gen_ = 0;
  std::map<std::string, uint64_t> failures_;
  std::atomic<uint64_t> local_refused_{0}, preconnect_used_{0}, preconnect_unused_{0};
  std::atomic<bool> stop_{false};
  RateLimitedLog log_;
};

}  // namespace encmig
