// encmigd's control plane: the QMP control socket, arming and ending
// migrations, and the statistics. The data plane (migration/data_plane.h)
// carries the streams; the libvirt agent (daemon/libvirt_agent.h) arms
// migrations from hand-off secrets through arm_migration(). tools/encmigd.cc
// is only main() around this.
#pragma once
#include <atomic>
#include <mutex>
#include <memory>
#include <string>

#include "crypto/aead_select.h"
#include "daemon/interceptor.h"
#include "daemon/qmp_server.h"
#include "migration/data_plane.h"
#include "migration/log.h"

namespace encmig {

inline constexpr const char* kSoftware = "encmigd 0.1.0";

struct DaemonOptions {
  std::string control_path = "/run/encmig/encmigd.sock";
  // The data plane: port, socket options, limits on unauthenticated
  // connections, migration timers and limits.
  DataPlaneOptions data = [] {
    DataPlaneOptions d;
    d.socket = {192 << 20, true, 1 << 20, 0};  // buffers for about 10 Gb/s x 150 ms; 1 MiB unsent per stream
    d.software = kSoftware;
    return d;
  }();
  // libvirt hand-off (daemon/libvirt_agent.h): "" disables it.
  std::string libvirt_uri = "qemu:///system";
  std::string run_dir = "/run/encmig";  // per-migration socket directories
  std::string qemu_group;               // group that may use them ("" = libvirt-qemu if it exists)
  // libvirt's migration port range (migration_port_min/max): a transparent
  // hand-off may only name a QEMU listener in it.
  std::string qemu_conf = "/etc/libvirt/qemu.conf";
  // AES-256-GCM engine: nullopt = the fastest that passes its known answers.
  std::optional<AeadEngineId> aead_engine;
  // Prometheus text for node-exporter's textfile collector (daemon/metrics.h); "" = off.
  std::string metrics_file;
  // The transparent mode (daemon/interceptor.h); nullopt = off.
  std::optional<InterceptOptions> intercept;
};

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> create(DaemonOptions opts);
  ~Daemon();
  // Serves the control socket on the calling thread until stop().
  void run();
  // Async-signal-safe: run() returns soon after.
  void request_stop();
  uint16_t data_port() const { return data_->port(); }
  json protocol_versions() const;  // the record protocol versions this daemon speaks
  const DaemonOptions& options() const { return opts_; }
  DataPlane& data() { return *data_; }

  // Arms a migration from parsed parts (QMP command or libvirt hand-off).
  Result<std::shared_ptr<Migration>> arm_migration(MigrationConfig cfg, MigrationSecrets sec);
  // Ends (or cancels) an armed migration and drops it from the table;
  // returns its status. `reason` goes into its outcome line.
  Result<json> end_migration(const std::string& id, bool cancel, const std::string& reason = "");
  // A migration's record as query-migrations shows it (with, on a source, its connections made at arm).
  json status_of(const Migration& m);

 private:
  Daemon() = default;
  Result<json> command(const std::string& cmd, json& args);
  Result<json> arm(json& args);
  json capabilities_json() const;
  json aead_engines_json() const;
  json stats_json();

  DaemonOptions opts_;
  SocketSizing sizing_;
  AeadSelection aead_;
  std::unique_ptr<DataPlane> data_;
  std::unique_ptr<QmpServer> qmp_;
  std::unique_ptr<Interceptor> intercept_;
  std::atomic<uint64_t> armed_total_{0};
  std::mutex ended_mu_;
  json ended_totals_ = json{{"bytes-out", 0}, {"bytes-in", 0}, {"resumes", 0}};
  void write_metrics();
  RateLimitedLog log_;
};

}  // namespace encmig
