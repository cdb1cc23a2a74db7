// encmigd's counters in the Prometheus text format (version 0.0.4), for a
// fleet's monitoring: written to a file for node-exporter's textfile collector
// (--metrics-file, off unless configured), atomically (a temporary file, then
// rename), every 10 s and at stop. Built from query-stats and
// query-migrations, so both say the same.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace encmig {

// `stats`: query-stats' answer; `migrations`: query-migrations' (those still
// in the table); `ended`: totals of migrations already ended.
std::string prometheus_text(const nlohmann::json& stats, const nlohmann::json& migrations, const nlohmann::json& ended);
// Writes `text` to `path` through `path`.tmp and rename(2).
bool write_file_atomically(const std::string& path, const std::string& text);

}  // namespace encmig
