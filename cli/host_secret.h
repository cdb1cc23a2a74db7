// encmig's end of the libvirt key hand-off (common/handoff.h): one secret per
// host, defined, watched for the daemon's answer, and undefined on every exit.
#pragma once
#include <chrono>
#include <functional>

#include "common/handoff.h"
#include "common/libvirt.h"
#include "migration/key_schedule.h"

namespace encmig::handoff {

// encmig's end of one hand-off secret on one host. Undefines the secret on
// destruction, so every exit path (success, failure, Ctrl-C) cleans up.
class HostSecret {
 public:
  HostSecret() = default;
  HostSecret(HostSecret&&) = default;
  HostSecret& operator=(HostSecret&&) = default;
  ~HostSecret() { undefine(); }

  // Defines the secret and, for a migration, sets its value to key || nonce.
  static Result<HostSecret> define(virConnectPtr c, const std::string& host, const std::string& usage,
                                   const json& request, const MigrationSecrets* secrets);
  // The daemon's answer so far (the description JSON), re-read from libvirt.
  Result<json> read() const;
  // Waits until the daemon answered ("state" present), or the deadline.
  Result<json> wait_answer(std::chrono::milliseconds timeout, const std::function<bool()>& interrupted) const;
  void undefine();
  const std::string& host() const { return host_; }

 private:
  VirSecret s_;
  std::string host_;
};

// Asks the encmigd on the host behind `c` whether it is there, through
// libvirt; with `peer`, it also probes that data port. Returns its answer.
Result<json> probe_host(virConnectPtr c, const std::string& host, const std::string& peer,
                        std::chrono::milliseconds timeout);

}  // namespace encmig::handoff
