// The transparent mode: every migration libvirt starts on this host is
// carried by encmigd as the domain's policy says, whoever started it (an
// unchanged `virsh migrate`, OpenStack Nova, any libvirt API client).
//
// encmigd's nftables table (daemon/nft_table.h) redirects the TCP connections
// that libvirtd and QEMU make into libvirt's migration port range to a local
// intercept port. For each connection the interceptor:
//   1. reads the real destination (SO_ORIGINAL_DST);
//   2. finds the QEMU that holds the connecting socket, from the kernel's
//      socket table and libvirtd's pid files (migration/tcp_owner.h). With
//      peer-to-peer migration libvirtd connects and hands the socket to QEMU;
//      the interceptor waits until a QEMU holds it. Anything else is refused;
//   3. reads the domain's policy (common/policy.h) from its metadata;
//   4. groups the connections to one destination address and port of one
//      domain (the main stream and its multifd channels; NBD has its own port)
//      into one migration, with its own fresh key, handed to the destination's
//      encmigd as `encmig migrate` does: an ephemeral secret defined over this
//      host's libvirt client connection to the destination (--peer-libvirt-uri);
//   5. encrypts (Opportunistic, Required), relays in plain text (Disabled, or
//      Opportunistic when no encmigd answers on the destination) or closes the
//      connection, failing the libvirt migration (Required, or anything an
//      attacker could cause), by the one decision of common/policy.h.
// The migration ends when every stream opened has closed; the secret goes,
// and the destination's encmigd ends its side.
#pragma once
#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/libvirt.h"
#include "common/policy.h"
#include "daemon/nft_table.h"
#include "migration/key_schedule.h"
#include "migration/log.h"
#include "migration/socket.h"
#include "migration/tcp_owner.h"

namespace encmig {

class Daemon;
using nlohmann::json;

struct InterceptOptions {
  // Local intercept port (on 127.0.0.1 and ::1). Privileged (below 1024), so
  // that no unprivileged process can take it while encmigd restarts.
  uint16_t port = 965;
  // The destination's libvirt, reached with this host's libvirt client
  // credentials; %s is the destination's address.
  std::string peer_uri = "qemu+tls://%s/system";
  std::string qemu_conf = "/etc/libvirt/qemu.conf";  // migration_port_min/max
  std::string libvirt_uri = "qemu:///system";        // domains and their policy
  std::string libvirt_run_dir = "/run/libvirt";
  // QEMU's user, whose connections are caught besides root's: qemu.conf's
  // `user` when set there, else this.
  std::string qemu_user = "libvirt-qemu";
  int handoff_timeout_ms = 3000;  // no answer: the destination runs no encmigd
  int owner_wait_ms = 10000;      // for libvirtd to hand the socket to QEMU
  // Bounds on what local processes can make encmigd hold: connections being
  // identified at once, and migrations (hand-offs) per domain at once.
  int max_pending = 256;
  int max_groups_per_domain = 8;
  int max_plain_relays = 256;
  bool allow_insecure_handoff = false;
  std::string nft = "/usr/sbin/nft";
};

class Interceptor {
 public:
  static Result<std::unique_ptr<Interceptor>> create(Daemon& d, InterceptOptions o);
  ~Interceptor();
  // Installs the table and accepts on the intercept port.
  Status start();
  // Stops accepting and removes the table (a clean stop: migrations go out
  // unencrypted again, as without encmig).
  void stop();
  json stats() const;
  // query-transparent: the rule, the counters, and the last decisions (the
  // plain and refused ones too, which have no migration to query).
  json query() const;
  std::string describe() const;

 private:
  struct Group;
  Interceptor(Daemon& d, InterceptOptions o) : d_(d), o_(std::move(o)) {}
  void accept_loop(int fd, int family);
  // Connections to one destination are placed in their migration in the
  // order they were accepted (QEMU's connect order: the destination QEMU
  // takes its first connection as the main stream), though each finds its
  // owner on its own thread.
  struct Ticket {
    std::string dest;
    uint64_t seq = 0;
  };
  void handle(Fd conn, int family, TcpEndpoint dest, TcpEndpoint from, Ticket t);
  void wait_turn(const Ticket& t);
  void turn_done(const Ticket& t);
  void dispatch(const std::shared_ptr<Group>& g, int fate, Fd conn, pid_t qemu);
  void decide(std::shared_ptr<Group> g);
  Result<json> hand_off(Group& g, MigrationSecrets& sec);
  void watch(std::shared_ptr<Group> g);
  void relay_plain(std::shared_ptr<Group> g, Fd conn, Fd out);
  void finish(const std::shared_ptr<Group>& g);
  struct DomainInfo {
    std::string uuid;
    DomainPolicy policy;
  };
  Result<DomainInfo> domain_info(const std::string& name);
  // The destination's libvirt, opened once per URI and kept while alive: a
  // TLS or SSH handshake is several round trips on a long path.
  Result<std::shared_ptr<virConnect>> peer_conn(const std::string& uri);
  std::mutex peers_mu_;
  std::map<std::string, std::shared_ptr<virConnect>> peers_;

  Daemon& d_;
  InterceptOptions o_;
  RateLimitedLog log_;
  InterceptRule rule_;
  Fd listen4_, listen6_;
  std::atomic<bool> stop_{false};
  bool installed_ = false;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Group>> groups_;  // by domain UUID | destination
  std::condition_variable turn_cv_;
  struct Turns {
    uint64_t issued = 0, placed = 0;
  };
  std::map<std::string, Turns> turns_;  // by destination
  std::mutex lv_mu_;
  VirConn lv_;  // the local libvirt: domains by name, their policy
  // Counters (query-stats, the Prometheus text).
  std::atomic<uint64_t> connections_{0}, not_qemu_{0}, encrypted_{0}, plain_disabled_{0}, plain_no_daemon_{0},
      refused_{0}, failed_{0}, plain_relays_{0}, over_limit_{0};
  std::atomic<int> in_flight_{0};  // connections being identified
  std::atomic<int> relays_open_{0};  // plain relays
  mutable std::mutex recent_mu_;
  std::vector<json> recent_;  // the last kRecent decisions, oldest first
  static constexpr size_t kRecent = 32;
};

}  // namespace encmig
