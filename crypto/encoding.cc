#include "crypto/encoding.h"

#include <cstring>

namespace encmig {

namespace {
constexpr char kHexDigits[] = "0123456789abcdef";
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string hex_encode(std::span<const uint8_t> bytes) {
  std::string s;
  s.reserve(2 * bytes.size());
  for (uint8_t b : bytes) {
    s.push_back(kHexDigits[b >> 4]);
    s.push_back(kHexDigits[b & 15]);
  }
  return s;
}

Status hex_decode(std::string_view in, std::span<uint8_t> out) {
  if (in.size() != 2 * out.size())
    return make_error(crypto_error::kInvalidArgument,
                      "expected " + std::to_string(2 * out.size()) + " lower-case hex digits, got " +
                          std::to_string(in.size()) + " characters");
  for (size_t i = 0; i < out.size(); i++) {
    int hi = hex_value(in[2 * i]), lo = hex_value(in[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      std::memset(out.data(), 0, out.size());
      return make_error(crypto_error::kInvalidArgument, "not a lower-case hex digit at position " +
                                                            std::to_string(hi < 0 ? 2 * i : 2 * i + 1));
    }
    out[i] = uint8_t(hi << 4 | lo);
  }
  return {};
}

Result<Secret> base64_to_secret(std::string_view in) {
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  size_t n = in.size() * 6 / 8;
  if (n == 0 || n > Secret::kMaxSize || in.size() % 4 == 1)
    return make_error(crypto_error::kInvalidArgument, "bad base64 key");
  auto s = Secret::create(n);
  if (!s) return s;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (char c : in) {
    int v = base64_value(c);
    if (v < 0) return make_error(crypto_error::kInvalidArgument, "bad base64 key");
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
