#include "control/base64.h"

namespace encmig {

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
int value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

Result<Secret> base64_to_secret(std::string_view in) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  size_t n = in.size() * 6 / 8;
  if (n == 0 || n > Secret::kMaxSize || in.size() % 4 == 1) return make_error(ErrorCode::kInvalidArgument, "bad base64 key");
  auto s = Secret::create(n);
  if (!s) return s;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) return make_error(ErrorCode::kInvalidArgument, "bad base64 key");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      s->mutable_data()[o++] = uint8_t(acc >> bits);
    }
  }
  acc = 0;
  return s;
}

std::string base64_encode(const uint8_t* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = uint32_t(p[i]) << 16 | (i + 1 < n ? uint32_t(p[i + 1]) << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out.push_back(kAlphabet[v >> 18 & 63]);
    out.push_back(kAlphabet[v >> 12 & 63]);
    out.push_back(i + 1 < n ? kAlphabet[v >> 6 & 63] : '=');
    out.push_back(i + 2 < n ? kAlphabet[v & 63] : '=');
  }
  return out;
}

}  // namespace encmig
