// Reading JSON that someone else wrote (QEMU, a daemon, a libvirt secret's
// description) without exceptions: a missing or ill-typed field reads as the
// fallback. nlohmann's own value() and get<>() throw on a wrong type.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace encmig {

inline std::string json_string(const nlohmann::json& j, const char* key, const std::string& fallback = "") {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

inline int64_t json_int(const nlohmann::json& j, const char* key, int64_t fallback = 0) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_unsigned()) return int64_t(std::min<uint64_t>(it->get<uint64_t>(), uint64_t(INT64_MAX)));
  if (it->is_number_float()) return int64_t(it->get<double>());
  return fallback;
}

inline double json_number(const nlohmann::json& j, const char* key, double fallback = 0) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

inline bool json_bool(const nlohmann::json& j, const char* key, bool fallback = false) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// The member `key` if it is an object, else an empty object.
inline const nlohmann::json& json_object(const nlohmann::json& j, const char* key) {
  static const nlohmann::json empty = nlohmann::json::object();
  if (!j.is_object()) return empty;
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

// The newest protocol version in the array `key` (a daemon's
// "protocol-versions", or a hand-off answer's "protocol"): its last element
// if that is a version (1..65535), else 0.
inline unsigned json_newest_version(const nlohmann::json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array() || it->empty() || !it->back().is_number_unsigned()) return 0;
  uint64_t v = it->back().get<uint64_t>();
  return v >= 1 && v <= 0xffff ? unsigned(v) : 0;
}

}  // namespace encmig
