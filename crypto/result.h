// Result<T>: a value or an Error. No exceptions on the data path.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace encmig {

// Error codes. Values 1..63 are also sent on the wire in ALERT messages and
// ERROR records (docs/protocol.md, "Error codes"); keep them stable.
enum class ErrorCode : uint16_t {
  kOk = 0,
  kBadMagic = 1,
  kBadVersion = 2,
  kBadKind = 3,
  kBadReserved = 4,
  kUnknownMigration = 5,
  kDuplicateStream = 6,
  kKeyConfirmFailed = 7,
  kHelloMismatch = 8,
  kRecordTooLarge = 9,
  kBadRecordType = 10,
  kCounterMismatch = 11,
  kAuthFailed = 12,
  kTruncated = 13,
  kDataAfterFin = 14,
  kBadFin = 15,
  kRecordLimit = 16,
  kPeerAlert = 17,
  kPeerError = 18,
  kCancelled = 19,
  kNotReady = 20,
  kPolicy = 21,
  // Local-only codes (never on the wire).
  kCrypto = 64,
  kIo = 65,
  kInvalidArgument = 66,
  kTimeout = 67,
  kInternal = 68,
};

const char* error_code_name(ErrorCode c);

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string detail;
  std::string message() const {
    std::string m = error_code_name(code);
    if (!detail.empty()) m += ": " + detail;
    return m;
  }
  // The detail alone when there is one: for messages shown to operators.
  std::string text() const { return detail.empty() ? error_code_name(code) : detail; }
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT(implicit)
  Result(Error error) : v_(std::move(error)) {}      // NOLINT(implicit)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() { return std::get<0>(v_); }
  const T& operator*() const { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }

 private:
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
