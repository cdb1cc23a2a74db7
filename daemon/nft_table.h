// encmigd's own nftables table for the transparent mode: QEMU's (and
// libvirtd's) outgoing TCP connections into libvirt's migration port range
// are redirected to encmigd's local intercept port.
//
//   table inet encmig {
//     chain output {
//       type nat hook output priority -100; policy accept;
//       meta mark 0x656e636d return            encmigd's own plain relays
//       fib daddr type local return            this host's own QEMUs (encmigd to its destination QEMU)
//       meta skuid { 0, <qemu uid> } tcp dport <min>-<max> redirect to :<intercept port>
//     }
//   }
//
// Installed at start, in one transaction that first drops any table left by
// an earlier run; removed on a clean stop. After a crash the table stays:
// migrations then fail (nothing listens on the intercept port) until systemd
// restarts encmigd, rather than going out in plain text.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "migration/wire.h"  // Result

namespace encmig {

inline constexpr uint32_t kEncmigMark = 0x656e636d;  // "encm"
inline constexpr const char* kNftTable = "encmig";

struct InterceptRule {
  uint16_t port_min = 49152, port_max = 49215;  // libvirt's migration_port_min/max
  std::vector<uid_t> uids;                      // root (libvirtd) and QEMU's user
  uint16_t redirect_port = 0;
};

// The ruleset text (one transaction: create, flush by delete, define).
std::string nft_ruleset(const InterceptRule& r);
// Runs `nft -f -` with the ruleset; the error names nft's own message.
Status nft_install(const InterceptRule& r, const std::string& nft = "/usr/sbin/nft");
// Deletes the table (nothing if absent).
Status nft_remove(const std::string& nft = "/usr/sbin/nft");

// migration_port_min and migration_port_max from qemu.conf's text; absent or
// out-of-range values keep their defaults.
void parse_qemu_conf_ports(const std::string& text, uint16_t& port_min, uint16_t& port_max);
// A string setting of qemu.conf (`user = "libvirt-qemu"`), or "" if unset.
std::string qemu_conf_string(const std::string& text, const std::string& key);

}  // namespace encmig
