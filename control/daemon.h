// encmigd's state and wiring: the data port, the armed migrations, and the
// QMP command handlers. tools/encmigd.cc is only main() around this.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "control/qmp_server.h"
#include "migration/session.h"

namespace encmig {

struct DaemonOptions {
  std::string control_path = "/run/encmig/encmigd.sock";
  HostPort data_listen{"0.0.0.0", 16520};
  int socket_buffer = 192 << 20;  // about 10 Gb/s x 150 ms
  int notsent_lowat = 1 << 20;    // unsent bytes the kernel may queue per stream
  int handshake_timeout_ms = 10000;
  int order_timeout_ms = 30000;
  // libvirt hand-off (control/libvirt_agent.h): "" disables it.
  std::string libvirt_uri = "qemu:///system";
  std::string run_dir = "/run/encmig";  // per-migration socket directories
  std::string qemu_group;               // group that may use them ("" = libvirt-qemu if it exists)
};

inline constexpr const char* kSoftware = "encmigd 0.1.0";

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> create(DaemonOptions opts);
  // Serves the control socket on the calling thread until stop().
  void run();
  void stop();
  uint16_t data_port() const { return data_port_; }
  const DaemonOptions& options() const { return opts_; }

  // Arms a migration from parsed parts (QMP command or libvirt hand-off).
  Result<std::shared_ptr<Migration>> arm_migration(MigrationConfig cfg, MigrationSecrets sec);
  // Ends (or cancels) an armed migration; returns its final status.
  Result<json> end_migration(const std::string& id, bool cancel);
  std::shared_ptr<Migration> find(const std::string& id);
  void log(const std::string& line);

 private:
  Daemon() = default;
  Result<json> command(const std::string& cmd, json& args);
  Result<json> arm(json& args);
  Result<json> finish(const json& args, bool cancel);
  json stats_json();

  void accept_data_loop();
  void handle_incoming(Fd tcp, std::string from);
  void accept_local_loop(std::shared_ptr<Migration> mig, int listen_fd, wire::Kind kind);
  void handle_outgoing(std::shared_ptr<Migration> mig, std::shared_ptr<Stream> stream);
  void count_failure(ErrorCode code);
  SocketOptions data_socket_options() const { return {opts_.socket_buffer, true, opts_.notsent_lowat}; }

  DaemonOptions opts_;
  std::unique_ptr<QmpServer> qmp_;
  Fd data_listen_;
  uint16_t data_port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Migration>> migrations_;
  std::map<std::string, uint64_t> failures_;
  std::atomic<uint64_t> armed_total_{0}, rejected_connections_{0}, probes_{0};
};

}  // namespace encmig
