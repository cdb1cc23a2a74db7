#include "crypto/result.h"

namespace encmig {

const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::kOk: return "ok";
    case ErrorCode::kBadMagic: return "bad magic";
    case ErrorCode::kBadVersion: return "unsupported protocol version";
    case ErrorCode::kBadKind: return "bad stream kind";
    case ErrorCode::kBadReserved: return "nonzero reserved field";
    case ErrorCode::kUnknownMigration: return "unknown migration id";
    case ErrorCode::kDuplicateStream: return "duplicate stream index";
    case ErrorCode::kKeyConfirmFailed: return "key confirmation failed (wrong key or tampered hello)";
    case ErrorCode::kHelloMismatch: return "server hello does not match client hello";
    case ErrorCode::kRecordTooLarge: return "record length above limit";
    case ErrorCode::kBadRecordType: return "bad record type";
    case ErrorCode::kCounterMismatch: return "record counter mismatch (replay, reorder or drop)";
    case ErrorCode::kAuthFailed: return "record authentication failed (tampered or wrong key)";
    case ErrorCode::kTruncated: return "stream truncated (no authenticated end-of-stream record)";
    case ErrorCode::kDataAfterFin: return "data after end-of-stream record";
    case ErrorCode::kBadFin: return "malformed end-of-stream record";
    case ErrorCode::kRecordLimit: return "record limit reached";
    case ErrorCode::kPeerAlert: return "peer rejected the connection";
    case ErrorCode::kPeerError: return "peer reported an error";
    case ErrorCode::kCancelled: return "migration cancelled";
    case ErrorCode::kNotReady: return "not ready";
    case ErrorCode::kPolicy: return "refused by policy";
    case ErrorCode::kCrypto: return "crypto library error";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kTimeout: return "timed out";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

}  // namespace encmig
