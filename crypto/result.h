// Result<T> and Status: a value or an Error. No exceptions anywhere: the only
// way to reach a value is a checked access, and checking a Result that holds
// an error is a programming error that stops the process (never a throw).
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace encmig {

// One 16-bit code space for every layer, defined in full with the wire format
// in migration/wire.h: codes 1..63 are the protocol's (sent in Alerts and
// ERROR records), codes from 64 up are local and never sent. The crypto layer
// sits below the protocol and raises only the local codes named here.
enum class ErrorCode : uint16_t;
namespace crypto_error {
inline constexpr ErrorCode kCrypto = ErrorCode(64);           // the crypto library failed
inline constexpr ErrorCode kInvalidArgument = ErrorCode(66);  // a caller's mistake
inline constexpr ErrorCode kInternal = ErrorCode(68);         // a resource (memory) failed
inline constexpr ErrorCode kTagMismatch = ErrorCode(69);      // an AEAD tag did not verify
}  // namespace crypto_error

// Defined in migration/wire.cc, with the codes.
const char* error_code_name(ErrorCode c);

struct Error {
  ErrorCode code = crypto_error::kInternal;
  std::string detail;
  std::string message() const {
    std::string m = error_code_name(code);
    if (!detail.empty()) m += ": " + detail;
    return m;
  }
  // The detail alone when there is one: for messages shown to operators.
  std::string text() const { return detail.empty() ? error_code_name(code) : detail; }
};

[[noreturn]] inline void die_unchecked(const Error& e) {
  std::fprintf(stderr, "encmig: internal error: value of a failed Result (%s)\n", e.message().c_str());
  std::abort();
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(implicit)
  Result(Error error) : v_(std::move(error)) {}      // NOLINT(implicit)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  // Checked: calling these on an error is a bug and aborts.
  T& value() & { return *checked(); }
  T&& value() && { return std::move(*checked()); }
  const T& value() const& { return *checked(); }
  T* operator->() { return checked(); }
  const T* operator->() const { return checked(); }
  T& operator*() { return *checked(); }
  const T& operator*() const { return *checked(); }
  const Error& error() const {
    static const Error none{crypto_error::kInternal, "error() of a successful Result"};
    const Error* e = std::get_if<1>(&v_);
    return e ? *e : none;
  }

 private:
  T* checked() {
    if (T* p = std::get_if<0>(&v_)) return p;
    die_unchecked(*std::get_if<1>(&v_));
  }
  const T* checked() const {
    if (const T* p = std::get_if<0>(&v_)) return p;
    die_unchecked(*std::get_if<1>(&v_));
  }
  std::variant<T, Error> v_;
};

// Result<void>.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error e) : err_(std::move(e)), failed_(true) {}  // NOLINT(implicit)
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool failed_ = false;
};

inline Error make_error(ErrorCode c, std::string detail = {}) { return Error{c, std::move(detail)}; }

}  // namespace encmig
