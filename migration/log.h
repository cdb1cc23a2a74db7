// encmigd's log: one line per event on stderr (journald under systemd),
// prefixed "encmigd: ". Never key bytes.
#pragma once
#include <string>

namespace encmig {

void log_line(const std::string& line);

}  // namespace encmig
