// A QMP-compatible control socket: greeting, qmp_capabilities, then
// {"execute": ..., "arguments": ..., "id": ...} -> {"return": ...} or
// {"error": {"class": ..., "desc": ...}}, and asynchronous {"event": ...}.
#pragma once
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "crypto/result.h"
#include "migration/socket.h"

namespace encmig {

using nlohmann::json;

class QmpServer {
 public:
  // `arguments` is mutable so a handler can wipe secrets it was given.
  using Handler = std::function<Result<json>(const std::string& command, json& arguments)>;

  static Result<std::unique_ptr<QmpServer>> create(const std::string& path, json version, Handler handler);
  // Serves until stop(). One thread; handlers must not block for long.
  void run();
  void stop();
  // Thread-safe: sends {"event": name, "data": data, "timestamp": ...} to
  // every negotiated client.
  void emit(const std::string& name, const json& data);

 private:
  struct Client {
    Fd fd;
    std::string in;
    bool negotiated = false;
  };
  QmpServer() = default;
  void handle(Client& c, std::string& text);
  void send(Client& c, const json& j);

  Fd listen_;
  Fd wake_;  // eventfd
  json version_;
  Handler handler_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::string> pending_events_;
  bool stop_ = false;
};

}  // namespace encmig
