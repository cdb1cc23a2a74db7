// QMP-direct migration: encmig as the trusted third party for two stock QEMU
// processes and their hosts' encmigd daemons, without libvirt.
#pragma once
#include <atomic>
#include <nlohmann/json.hpp>
#include <string>

#include "common/policy.h"

namespace encmig {


struct DirectOptions {
  std::string src_qmp, dst_qmp;          // QEMU monitors
  std::string src_encmigd, dst_encmigd;  // daemon control sockets
  std::string dst_addr;                  // how the source daemon reaches the destination daemon
  std::string run_dir = "/run/encmig";   // where per-migration UNIX sockets go
  std::string plain_listen;              // plain mode: destination QEMU listens here (HOST:PORT)
  std::string plain_connect;             // plain mode: source QEMU connects here (default plain_listen)
  EncryptMode mode = EncryptMode::kOpportunistic;
  int multifd = 0;                       // 0 = single stream
  int timeout_s = 0;                     // 0 = none
  int downtime_limit_ms = 0;             // 0 = QEMU's default
  int bandwidth_mib = 0;                 // max-bandwidth in MiB/s, like virsh --bandwidth; 0 = QEMU's default
  bool postcopy = false;                 // enable postcopy-ram on both QEMUs
  bool postcopy_after_precopy = false;   // switch after the first precopy pass
  int postcopy_bandwidth_mib = 0;        // max-postcopy-bandwidth
  bool postcopy_preempt = false;         // with postcopy: QEMU's preempt channel (one more stream)
  bool json = false;
  bool progress = true;
};

// Runs one migration; prints progress to stderr and returns the summary.
// On failure the summary has "result": "failed" and an "error".
nlohmann::json migrate_direct(const DirectOptions& o, const std::atomic<bool>& interrupted);

}  // namespace encmig
