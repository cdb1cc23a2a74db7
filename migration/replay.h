// The replay check. TCP delivers records in order, so the only acceptable
// counter is exactly the next one: anything else is a replay, a reorder or a
// drop. Table-tested in tests/replay_test.cc.
#pragma once
#include <cstdint>

#include "crypto/result.h"
#include "migration/wire.h"

namespace encmig {

inline ErrorCode check_counter(uint64_t expected, uint64_t received) {
  if (expected >= wire::kMaxRecordsPerDirection) return ErrorCode::kRecordLimit;
  if (received != expected) return ErrorCode::kCounterMismatch;
  return ErrorCode::kOk;
}

}  // namespace encmig
