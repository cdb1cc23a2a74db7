// Per-VM encryption policy: Disabled, Opportunistic (default) or Required,
// kept in the domain's libvirt metadata under encmig's XML namespace:
//
//   <metadata>
//     <encmig:policy xmlns:encmig="https://encmig.dev/xmlns/policy/1" encrypted="required"/>
//   </metadata>
#pragma once
#include <libvirt/libvirt.h>

#include <string>

#include "crypto/result.h"

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

}  // namespace encmig
