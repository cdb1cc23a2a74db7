// The one parser for a request to arm a migration, whether it arrives as the
// arguments of the QMP command `migration-arm` or as the description of a
// libvirt hand-off secret (common/handoff.h). Nothing here throws: every
// argument is checked for presence, type and range, and an unknown or
// ill-typed argument is refused with an error that names it.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "migration/key_schedule.h"
#include "migration/session.h"

namespace encmig {

// Where the request came from decides which arguments it may carry.
enum class ArmChannel {
  kQmp,      // migration-arm: id, key, nonce and the socket paths are arguments
  kHandoff,  // libvirt: id from the secret's usage, key || nonce from its value,
             // paths fixed under the daemon's run directory
};

// One argument: its name, JSON type and encoding, roles, and channels.
struct ArmArgument {
  const char* name;
  const char* type;     // as documented in encmigd(8) and query-command-arguments
  const char* role;     // "source", "destination" or "both"
  bool qmp, handoff;    // accepted on that channel
  bool required;        // on the channels that accept it, for its role
  const char* meaning;
};
extern const ArmArgument kArmArguments[];
extern const size_t kArmArgumentCount;

// The argument table as JSON (query-command-arguments).
nlohmann::json arm_arguments_json();

// Parses role, streams, peer, who may use the local sockets, and the paths.
// For kQmp the id is args["id"] and each path must be a plain file name in
// `run_dir`; for kHandoff the id is `handoff_id` and the paths are placed in
// `run_dir`/<id>/.
Result<MigrationConfig> parse_arm_request(const nlohmann::json& args, ArmChannel channel, const std::string& run_dir,
                                          const std::string& handoff_id = "");

// kQmp: the key (base64, 32 bytes) and nonce (16 hex digits) from the
// arguments; the caller sets the id. The key's text in `args` is wiped
// whatever the outcome.
Result<MigrationSecrets> parse_arm_secrets(nlohmann::json& args);
// kHandoff: the secret's value, key (32 bytes) || nonce (8 bytes).
Result<MigrationSecrets> secrets_from_value(const uint8_t* value, size_t size, const wire::MigrationId& id);

}  // namespace encmig
