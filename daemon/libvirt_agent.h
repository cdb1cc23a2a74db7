// encmigd's side of the libvirt key hand-off (common/handoff.h): watches the
// local libvirtd for encmig secrets, takes the key out of libvirt before it
// does anything else, checks the request's MAC, arms migrations from them
// (off the polling thread, so a slow probe never holds up another hand-off),
// answers with readiness and state under its own MAC, and ends a migration
// when its secret goes away.
#pragma once
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/handoff.h"
#include "common/libvirt.h"
#include "daemon/daemon.h"

namespace encmig {

class LibvirtAgent {
 public:
  static Result<std::unique_ptr<LibvirtAgent>> create(Daemon& daemon);
  // Polls libvirt on the calling thread until stop(); reconnects as needed.
  void run();
  void stop() { stop_ = true; }

  static constexpr auto kPollInterval = std::chrono::milliseconds(100);
  static constexpr auto kValueWait = std::chrono::seconds(5);          // define -> set-value gap
  static constexpr auto kStaleAfterEnd = std::chrono::seconds(120);    // secret left behind

 private:
  explicit LibvirtAgent(Daemon& d) : d_(d) {}
  // The result of work done off the polling thread (a probe, or arming).
  struct Work {
    std::mutex mu;
    bool ready = false, abandoned = false;
    json reply;
    std::shared_ptr<Migration> mig;
  };
  struct Entry {
    std::string uuid, usage, id;
    bool probe = false, done = false;
    json request, reply;  // reply: our last answer (the whole description)
    uint64_t seq = 0;
    std::optional<Secret> answer_key;  // K_ans, while the migration lives
    std::shared_ptr<Migration> mig;
    std::shared_ptr<Work> work;
    std::chrono::steady_clock::time_point seen = std::chrono::steady_clock::now(), ended{};
  };
  bool poll(virConnectPtr c);
  void handle_new(virConnectPtr c, virSecretPtr s, Entry& e);
  void start_probe(Entry& e);
  void start_arm(virConnectPtr c, Entry& e, MigrationConfig cfg, MigrationSecrets sec);
  void collect(virConnectPtr c, Entry& e);
  void answer(virConnectPtr c, Entry& e, json reply);
  void fail(virConnectPtr c, Entry& e, const std::string& detail);
  void refresh(virConnectPtr c, Entry& e);
  void forget(Entry& e);

  Daemon& d_;
  std::atomic<bool> stop_{false};
  int qemu_gid_ = -1;
  uint16_t port_min_ = 49152, port_max_ = 49215;  // qemu.conf's migration ports
  std::map<std::string, Entry> entries_;  // by secret UUID
};

}  // namespace encmig
