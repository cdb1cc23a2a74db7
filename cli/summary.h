// What encmig prints: the summary of a migration (libvirt or QMP-direct) and
// the explanation of a placement, for people; --json prints the objects as is.
#pragma once
#include <nlohmann/json.hpp>

namespace encmig {

// The summary on stdout, or the failure on stderr.
void print_summary(const nlohmann::json& summary);
// 0 completed, 3 refused, 1 failed.
int summary_exit_code(const nlohmann::json& summary);
// place_domain()'s answer, one line per candidate.
void print_placement(const nlohmann::json& placement);

}  // namespace encmig
