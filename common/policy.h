// Per-VM encryption policy: Disabled, Opportunistic (default) or Required,
// and the one decision each mode makes,
// kept in the domain's libvirt metadata under encmig's XML namespace:
//
//   <metadata>
//     <encmig:policy xmlns:encmig="https://encmig.dev/xmlns/policy/1" encrypted="required"/>
//   </metadata>
#pragma once
#include <libvirt/libvirt.h>

#include <optional>
#include <string>

#include "migration/wire.h"  // ErrorCode

namespace encmig {

enum class EncryptMode { kDisabled, kOpportunistic, kRequired };
Result<EncryptMode> parse_encrypt_mode(const std::string& s);
const char* encrypt_mode_name(EncryptMode m);

inline constexpr const char* kPolicyNamespace = "https://encmig.dev/xmlns/policy/1";
inline constexpr const char* kPolicyPrefix = "encmig";
inline constexpr EncryptMode kDefaultPolicy = EncryptMode::kOpportunistic;

struct DomainPolicy {
  EncryptMode mode = kDefaultPolicy;
  bool explicit_set = false;  // false: no metadata, the default applies
};

// Reads the policy of a domain (live definition if running, else persistent).
Result<DomainPolicy> get_policy(virDomainPtr dom);
// Writes it to the live and the persistent definition, whichever exist, so it
// travels with the domain on migration and survives restarts.
Status set_policy(virDomainPtr dom, EncryptMode mode);
// `encmig policy`: on the domain behind libvirt `uri`, sets the policy if
// `mode` is given, then reads it back.
Result<DomainPolicy> domain_policy(const std::string& uri, const std::string& domain, std::optional<EncryptMode> mode);

// What the hosts showed, learned over authenticated channels (libvirt's
// connection, or the daemons' root-only control sockets).
enum class Capability {
  kBothCan,   // both encmigd answered and armed
  kNoDaemon,  // a host has no running encmigd: nothing answered at all
  kBroken,    // an encmigd answered, yet the migration cannot be encrypted: a
              // refused or tampered hand-off, an unreachable peer daemon, an
              // insecure management connection, a failed handshake
};

// The one decision every command makes (migrate over libvirt or QMP, place).
// Disabled migrates in plain text. Otherwise: encrypt when both hosts can.
// Only a host without a running encmigd lets Opportunistic fall back to plain
// text (with a warning); anything an attacker could cause on the network or
// in libvirt fails the migration instead, the VM staying where it is, so an
// attack never downgrades a migration to plain text. Required refuses
// whenever it cannot encrypt.
enum class EncryptOutcome { kEncrypt, kPlain, kRefuse, kFail };
EncryptOutcome decide_encryption(EncryptMode mode, Capability hosts);

}  // namespace encmig
