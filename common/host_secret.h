// encmig's end of the libvirt key hand-off (common/handoff.h): one secret per
// host, defined, watched for the daemon's answer, and undefined on every exit.
#pragma once
#include <chrono>
#include <functional>
#include <optional>

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

  // Defines the secret and, for a migration, signs the request and sets the
  // value to key || nonce. The key goes only over a connection libvirt
  // reports as secure (encrypted, or a local UNIX socket) unless
  // `allow_insecure` is set (labs only).
  static Result<HostSecret> define(virConnectPtr c, const std::string& host, const std::string& usage,
                                   json request, const MigrationSecrets* secrets, bool allow_insecure = false);
  // The daemon's answer so far (the description JSON), re-read from libvirt.
  // For a migration, an answer must carry the daemon's MAC under this
  // migration's key and a "seq" that never goes back: anything else is an
  // error (kAuthFailed), never an answer.
  Result<json> read() const;
  // Waits until the daemon answered ("state" present). kTimeout means no
  // encmigd runs there: after `timeout`, the key is still in the secret,
  // untouched. A daemon that took the key gets kArmingGrace more; if it still
  // has not answered, that is an error, never "no encmigd".
  Result<json> wait_answer(std::chrono::milliseconds timeout, const std::function<bool()>& interrupted) const;
  static constexpr auto kArmingGrace = std::chrono::seconds(6);
  // Whether encmigd took the key (the value is one zero byte). An error if the
  // secret was redefined as persistent or private, or cannot be read.
  Result<bool> key_taken() const;
  void undefine();
  const std::string& host() const { return host_; }

 private:
  VirSecret s_;
  std::string host_;
  std::optional<Secret> answer_key_;
  mutable int64_t seq_ = 0;
};

// Whether libvirt reports the connection as secure; else an error that names
// the URI and what to use instead.
Status check_secure_connection(virConnectPtr c, const std::string& host);

// Asks the encmigd on the host behind `c` whether it is there, through
// libvirt; with `peer`, it also probes that data port. Returns its answer.
Result<json> probe_host(virConnectPtr c, const std::string& host, const std::string& peer,
                        std::chrono::milliseconds timeout);

}  // namespace encmig::handoff
