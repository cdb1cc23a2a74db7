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

#include "migration/session.h"
#include "migration/socket.h"

namespace encmig {

struct DataPlaneOptions {
  HostPort listen{"0.0.0.0", 16520};
  SocketOptions socket;            // every data connection, both directions
  int handshake_timeout_ms = 10000;  // one deadline for the whole handshake
  int order_timeout_ms = 30000;      // how long a stream waits for a lower-indexed one
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
  Status add(std::shared_ptr<Migration> m);  // kAlreadyArmed if the id is taken
  std::shared_ptr<Migration> find(const std::string& id);
  std::shared_ptr<Migration> take(const std::string& id);  // removes it
  // Every migration, or the one with this id.
  std::vector<std::shared_ptr<Migration>> list(const std::string& id = "");

  // Source role: listens on the migration's UNIX socket paths and relays
  // every connection QEMU makes there to the peer daemon.
  Status listen_local(const std::shared_ptr<Migration>& m);

  // Counters for query-stats.
  void count_failure(ErrorCode code);
  struct Stats {
    uint64_t rejected_connections = 0, probes = 0;
    size_t open = 0;
    std::map<std::string, uint64_t> failures;  // by error name
  };
  Stats stats();

 private:
  DataPlane() = default;
  void accept_data_loop();
  void handle_incoming(Fd tcp, std::string from);
  void accept_local_loop(std::shared_ptr<Migration> mig, int listen_fd, wire::Kind kind);
  void handle_outgoing(std::shared_ptr<Migration> mig, std::shared_ptr<Stream> stream);

  DataPlaneOptions o_;
  Fd listen_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Migration>> migrations_;
  std::map<std::string, uint64_t> failures_;
  std::atomic<uint64_t> rejected_{0}, probes_{0};
};

}  // namespace encmig
