// Who is behind a local TCP socket: the counterpart of local_peer.h for the
// transparent mode, where QEMU (or libvirtd for it) reaches the migration
// over TCP instead of encmigd's UNIX sockets.
//
// Everything here comes from the kernel (/proc/net/tcp, /proc/PID/fd) and
// from libvirtd's root-written pid files, never from anything a QEMU could
// write about itself (its command line, its comm): a compromised QEMU runs as
// the same user as every other tenant's and can rewrite its own argv.
#pragma once
#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "migration/socket.h"

namespace encmig {

// An IP address and port as the kernel prints them. IPv4 is kept as an
// IPv4-mapped IPv6 address, so a dual-stack socket compares equal.
struct TcpEndpoint {
  std::array<uint8_t, 16> addr{};
  uint16_t port = 0;
  bool operator==(const TcpEndpoint&) const = default;
  bool is_any() const;  // 0.0.0.0 or ::
  std::string str() const;  // "10.0.0.1:49152", "[fe80::1]:49152"
  HostPort host_port() const;
  static TcpEndpoint from_sockaddr(const struct sockaddr* sa);
};

struct TcpSocketEntry {
  TcpEndpoint local, remote;
  int state = 0;  // 1 established, 10 listen, ...
  uid_t uid = 0;
  uint64_t inode = 0;
};
inline constexpr int kTcpEstablished = 1, kTcpListen = 10;

// Parses the text of /proc/net/tcp (v6 = false) or /proc/net/tcp6. Lines that
// do not parse are skipped; nothing throws.
std::vector<TcpSocketEntry> parse_proc_net_tcp(std::string_view text, bool v6);
// Both tables of this network namespace.
std::vector<TcpSocketEntry> read_tcp_table();

// The socket connected from `local` to `remote`, or a zero inode.
TcpSocketEntry find_tcp_socket(const TcpEndpoint& local, const TcpEndpoint& remote);
// The listening socket that accepts connections to `at` (bound to that address
// or to the wildcard), or a zero inode.
TcpSocketEntry find_tcp_listener(const TcpEndpoint& at);

// libvirt's running QEMUs, by domain name, from <run_dir>/qemu/NAME.pid
// (written by libvirtd as root).
struct LibvirtQemu {
  std::string domain;
  pid_t pid = 0;
};
std::vector<LibvirtQemu> libvirt_qemus(const std::string& libvirt_run_dir);
// Whether process `pid` holds a descriptor for the socket with this inode.
bool holds_socket(pid_t pid, uint64_t inode);
// The libvirt domain whose QEMU holds the socket; an empty domain if none does.
LibvirtQemu qemu_holding(uint64_t inode, const std::string& libvirt_run_dir);
// Whether libvirtd (or virtqemud) holds the socket.
bool libvirtd_holding(uint64_t inode, const std::string& libvirt_run_dir);
// Whether `addr` is an address of one of this host's interfaces.
bool is_local_address(const TcpEndpoint& addr);

// Destination, transparent mode: connects to QEMU's incoming TCP listener at
// `at`, a local address, after checking that the listening socket belongs to
// the QEMU of libvirt domain `domain`; then, before a byte goes through,
// that the connection was accepted by that QEMU (and not by another socket
// bound to the same port), so a migration can only be relayed to the domain
// it was handed off for. `qemu` gets its pid.
Result<Fd> connect_qemu_listener(const HostPort& at, const std::string& domain, const std::string& libvirt_run_dir,
                                 int timeout_ms, pid_t* qemu);

}  // namespace encmig
