// Reads tests/vectors/*.txt: "field = hex" lines, cases separated by blank
// lines, '#' comments.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "crypto/encoding.h"

namespace encmig::test {

using Case = std::map<std::string, std::string>;

inline std::vector<Case> load_vectors(const std::string& name) {
  std::ifstream in(std::string(ENCMIG_VECTOR_DIR) + "/" + name);
  if (!in) throw std::runtime_error("cannot open vector file " + name);
  std::vector<Case> cases;
  Case cur;
  std::string line;
  auto trim = [](std::string s) {
    size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  while (std::getline(in, line)) {
    line = trim(line);
    if (!line.empty() && line[0] == '#') continue;
    if (line.empty()) {
      if (!cur.empty()) cases.push_back(cur), cur.clear();
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos) throw std::runtime_error("bad vector line: " + line);
    cur[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  if (!cur.empty()) cases.push_back(cur);
  return cases;
}

// Through the project's one hex codec (crypto/encoding.h).
inline std::vector<uint8_t> unhex(const std::string& s) {
  std::vector<uint8_t> v(s.size() / 2);
  if (!hex_decode(s, v).ok()) throw std::runtime_error("bad hex in vector: " + s);
  return v;
}

inline std::string hex(const uint8_t* p, size_t n) { return hex_encode({p, n}); }
template <class C>
std::string hex(const C& c) { return hex(c.data(), c.size()); }

}  // namespace encmig::test
