// `encmig place`: picks a destination for a domain among candidate hosts,
// preferring one where both hosts' encmigd can encrypt, and explains every
// candidate.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/policy.h"

namespace encmig {

struct PlaceOptions {
  std::string connect_uri;
  std::string domain;
  std::vector<std::string> candidates;  // libvirt URIs
  std::optional<EncryptMode> mode;
  int timeout_ms = 3000;
};
nlohmann::json place_domain(const PlaceOptions& o);

}  // namespace encmig
