// Key hand-off through libvirt secrets: the message format both encmig and
// encmigd use. encmig's end is cli/host_secret.h, encmigd's is
// daemon/libvirt_agent.h.
//
// For each migration, encmig defines one ephemeral, non-private secret on each
// host through libvirt's own authenticated connection:
//
//   <secret ephemeral='yes' private='no'>
//     <description>{"encmig":1,"role":"source",...}</description>   request
//     <usage type='tls'><name>encmig/<id: 32 hex></name></usage>
//   </secret>
//   value = key (32 bytes) || nonce (8 bytes)
//
// encmigd on that host finds the secret through its local libvirt
// connection, reads and then overwrites the value (one zero byte), arms the
// migration, and answers by redefining the secret with its state added to the
// description JSON. encmig undefines the secret when the migration ends.
// A probe is the same with usage "encmig-probe/<hex>" and no value.
// docs/libvirt.md describes the fields.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "migration/wire.h"  // ErrorCode

namespace encmig::handoff {

using nlohmann::json;

inline constexpr int kFormat = 1;
inline constexpr const char* kUsagePrefix = "encmig/";
inline constexpr const char* kProbePrefix = "encmig-probe/";
inline constexpr size_t kValueSize = 40;  // key || nonce
inline constexpr size_t kMaxDescription = 4096;

// The secret's XML; `uuid` empty for a new secret.
std::string secret_xml(const std::string& usage, const json& description, const std::string& uuid = "");
// The description JSON of a secret's XML, if it is an encmig object.
Result<json> parse(const std::string& secret_xml);
// Per-migration socket paths under a daemon's run directory.
std::string migrate_path(const std::string& run_dir, const std::string& id);
std::string nbd_path(const std::string& run_dir, const std::string& id);

}  // namespace encmig::handoff
