// A QMP-compatible control socket: greeting, qmp_capabilities, then
// {"execute": ..., "arguments": ..., "id": ...} -> {"return": ...} or
// {"error": {"class": ..., "desc": ...}}, and asynchronous {"event": ...}.
//
// One thread, never blocked by a client: sockets are non-blocking, and what a
// client has not read yet waits in its own bounded queue. A client that
// falls more than kMaxQueued bytes behind is dropped, not waited for.
#pragma once
#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "migration/socket.h"

namespace encmig {

using nlohmann::json;

class QmpServer {
 public:
  // `arguments` is mutable so a handler can wipe secrets it was given.
  using Handler = std::function<Result<json>(const std::string& command, json& arguments)>;

  static constexpr size_t kMaxQueued = 4 << 20;    // output a client may leave unread
  static constexpr size_t kMaxInput = 1 << 20;     // an incomplete request
  static constexpr size_t kMaxClients = 64;

  static Result<std::unique_ptr<QmpServer>> create(const std::string& path, json version, Handler handler);
  // Serves until stop(). Handlers must not block for long.
  void run();
  // Async-signal-safe.
  void stop();
  // Thread-safe: queues {"event": name, "data": data, "timestamp": ...} for
  // every negotiated client.
  void emit(const std::string& name, const json& data);
  uint64_t clients_dropped() const { return dropped_.load(); }

 private:
  struct Client {
    Fd fd;
    std::string in;
    std::string out;  // queued output
    bool negotiated = false;
    bool closing = false;
  };
  QmpServer() = default;
  void handle(Client& c, std::string& text);
  void queue(Client& c, const std::string& line);
  void flush(Client& c);
  void read_from(Client& c);

  Fd listen_;
  Fd wake_;  // eventfd
  json version_;
  Handler handler_;
  std::mutex mu_;  // pending_events_
  std::vector<std::string> pending_events_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace encmig
