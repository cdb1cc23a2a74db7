// QMP framing and a small blocking QMP client, for QEMU's monitor and
// encmigd's control socket.
#pragma once
#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "crypto/result.h"
#include "migration/socket.h"

namespace encmig {

using nlohmann::json;

class QmpClient {
 public:
  static Result<QmpClient> connect(const std::string& path, int timeout_ms = 10000);
  Result<json> execute(const std::string& cmd, const json& args = json::object());
  // Several commands in one write, their replies read in order: QEMU runs
  // them back to back, without waiting for a round trip through us.
  std::vector<Result<json>> execute_all(const std::vector<std::pair<std::string, json>>& cmds);
  // Events seen while waiting for replies.
  std::vector<json> take_events();
  const json& greeting() const { return greeting_; }
  const std::string& path() const { return path_; }
  // The process at the other end (QEMU's pid, for a QEMU monitor), or 0.
  pid_t peer_pid() const;

 private:
  Result<json> read_object();
  Result<json> read_reply(const std::string& cmd);
  Fd fd_;
  std::string path_;
  std::string buf_;
  json greeting_;
  std::vector<json> events_;
};

// Splits complete top-level JSON objects off the front of `buf`.
std::vector<std::string> split_json_objects(std::string& buf);

}  // namespace encmig
