// A small blocking QMP client, for QEMU's monitor and encmigd's control socket.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "crypto/result.h"
#include "migration/socket.h"
#include "migration/wire.h"

namespace encmig {

using nlohmann::json;

class QmpClient {
 public:
  static Result<QmpClient> connect(const std::string& path, int timeout_ms = 10000);
  Result<json> execute(const std::string& cmd, const json& args = json::object());
  // Events seen while waiting for replies.
  std::vector<json> take_events();
  const json& greeting() const { return greeting_; }
  const std::string& path() const { return path_; }

 private:
  Result<json> read_object();
  Fd fd_;
  std::string path_;
  std::string buf_;
  json greeting_;
  std::vector<json> events_;
};

// Asks a daemon's data port what it can do (docs/protocol.md, "Capability probe").
Result<wire::ProbeReply> probe_daemon(const HostPort& hp, int timeout_ms);

}  // namespace encmig
