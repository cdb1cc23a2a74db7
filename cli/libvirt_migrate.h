// `encmig migrate` for libvirt-managed VMs: policy, key hand-off, then
// libvirt's own UNIX-socket migration through the hosts' encmigd daemons.
#pragma once
#include <atomic>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/policy.h"

namespace encmig {

struct LibvirtMigrateOptions {
  std::string connect_uri;   // source libvirt (-c/--connect); "" = libvirt's default
  std::string domain;
  std::string desturi;
  std::string migrateuri;    // only for unencrypted runs, as with virsh
  std::string dname;
  std::string data_addr;     // destination encmigd's data address; default <desturi host>:16520
  std::optional<EncryptMode> mode;  // --encrypted[=MODE]: overrides the domain's policy
  unsigned long flags = 0;   // VIR_MIGRATE_*
  int parallel_connections = 0;
  int timeout_s = 0;         // like virsh: suspend the guest after this many seconds
  unsigned long bandwidth_mib = 0;
  unsigned long postcopy_bandwidth_mib = 0;  // --postcopy-bandwidth
  bool postcopy_after_precopy = false;       // switch to postcopy after the first precopy pass
  int handoff_timeout_ms = 3000;
  bool progress = false;     // progress bar on stderr
  bool allow_insecure_handoff = false;  // hand keys over connections libvirt reports as not secure (labs)
};

// Runs the migration; returns the summary ("result": "completed" | "failed" | "refused").
nlohmann::json migrate_libvirt(const LibvirtMigrateOptions& o, const std::atomic<bool>& interrupted);

// `encmig migrate-postcopy`: switches a running migration of the domain to
// postcopy (virsh migrate-postcopy).
Status start_postcopy(const std::string& connect_uri, const std::string& domain);

// "HOST:PORT" of the destination daemon's data port: --data-addr (with or
// without a port), else DESTURI's host and the default port; "" if unknown.
std::string data_address(const std::string& data_addr, const std::string& desturi);
// The host's name as libvirt reports it, or `fallback`.
std::string libvirt_host_name(virConnectPtr c, const std::string& fallback);

}  // namespace encmig
