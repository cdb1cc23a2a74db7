// encmigd's side of the libvirt key hand-off (common/handoff.h): watches the
// local libvirtd for encmig secrets, arms migrations from them, answers with
// readiness and state, and ends a migration when its secret goes away.
#pragma once
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>

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
  static constexpr auto kIdleArmed = std::chrono::minutes(10);         // armed, never used

 private:
  explicit LibvirtAgent(Daemon& d) : d_(d) {}
  struct Entry {
    std::string uuid, usage, id;
    json request, reply;
    bool probe = false, done = false;
    std::shared_ptr<Migration> mig;
    std::chrono::steady_clock::time_point seen = std::chrono::steady_clock::now(), ended{};
  };
  bool poll(virConnectPtr c);
  void handle_new(virConnectPtr c, virSecretPtr s, Entry& e);
  void answer_probe(virConnectPtr c, Entry& e, json base);
  Result<std::shared_ptr<Migration>> arm(virSecretPtr s, Entry& e);
  void chown_sockets(const MigrationConfig& cfg);
  void answer(virConnectPtr c, Entry& e, json reply);
  void refresh(virConnectPtr c, Entry& e);
  void forget(Entry& e);
  void prepare_dir(const std::string& id);
  void remove_dir(const std::string& id);

  Daemon& d_;
  std::atomic<bool> stop_{false};
  int qemu_gid_ = -1;
  std::map<std::string, Entry> entries_;  // by secret UUID
};

}  // namespace encmig
