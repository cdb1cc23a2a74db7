// Key hand-off through libvirt secrets: the message format both encmig and
// encmigd use. The controller's end (encmig, or encmigd intercepting) is common/host_secret.h; encmigd's is
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
// connection, reads and then overwrites the value (one zero byte) before it
// does anything else, checks the request's MAC, arms the migration, and
// answers by redefining the secret with its state added to the description
// JSON, under a MAC of its own. encmig undefines the secret when the
// migration ends. A probe is the same with usage "encmig-probe/<hex>", no
// value and no MAC (it carries no key and arms nothing).
//
// Authentication. A libvirt client allowed to write secrets, but not to touch
// domains, must not be able to steer a migration. So both sides sign what
// they write, with keys only the holders of the migration key can derive:
//
//   PRK      = HKDF-Extract(salt = "encmig/1 handoff" || nonce || id, IKM = key)
//   K_req    = HKDF-Expand(PRK, "encmig/1 handoff request", 32)
//   K_ans    = HKDF-Expand(PRK, "encmig/1 handoff answer", 32)
//   "mac"    = hex(HMAC-SHA256(K, canonical JSON of the description without "mac"))
//
// The canonical JSON is nlohmann's dump(): keys sorted, no whitespace. An
// answer covers the whole description (the request and every answer field)
// and carries "seq", which only grows, so an older answer cannot be replayed.
// docs/libvirt.md describes the fields.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "crypto/secret.h"
#include "migration/key_schedule.h"

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

inline constexpr std::string_view kLabelSalt = "encmig/1 handoff";
inline constexpr std::string_view kLabelRequest = "encmig/1 handoff request";
inline constexpr std::string_view kLabelAnswer = "encmig/1 handoff answer";

// The two MAC keys of one migration's hand-off.
struct MacKeys {
  Secret request, answer;
  static Result<MacKeys> derive(const MigrationSecrets& m);
};
// Adds "mac" to `description`, over everything else in it.
Status sign(json& description, const Secret& key);
// Checks "mac" in constant time; kAuthFailed when absent or wrong.
Status verify(const json& description, const Secret& key);

}  // namespace encmig::handoff
