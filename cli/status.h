// `encmig status`: the migrations in flight on this host, from the local
// encmigd's control socket (root only), and its counters.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "crypto/result.h"

namespace encmig {

// query-migrations and query-stats of the daemon at `control`.
Result<nlohmann::json> daemon_status(const std::string& control);
// One line per migration: id, role, mode, state, streams, bytes, resumes,
// age and context; then the transparent mode's counters.
std::string format_status(const nlohmann::json& status);

}  // namespace encmig
